"""ROC curves and per-severity bars for bench_detection, drawn with OpenCV (no matplotlib needed).

``roc(clean, bad)`` gives the curve of a score (higher = more anomalous); ``auroc`` and
``tpr_at_fpr`` the numbers the benchmark reports. ``draw_report`` writes one PNG: ROC panels
(guard vs baseline) and grouped bars of TPR at 1 % FPR per corruption severity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["auroc", "draw_report", "roc", "tpr_at_fpr"]

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK = (40, 40, 40)
_GRID = (225, 225, 225)
SERIES = {"guard": (0, 130, 245), "baseline": (150, 110, 40)}  # BGR


def auroc(clean: Sequence[float], bad: Sequence[float]) -> float:
    """P(score of a bad frame > score of a clean one), ties counting one half."""
    c = np.sort(np.asarray(clean, np.float64))
    b = np.asarray(bad, np.float64)
    if c.size == 0 or b.size == 0:
        return float("nan")
    less = np.searchsorted(c, b, side="left")
    leq = np.searchsorted(c, b, side="right")
    return float((less + 0.5 * (leq - less)).sum() / (c.size * b.size))


def tpr_at_fpr(clean: Sequence[float], bad: Sequence[float], fpr: float) -> float:
    """Share of bad frames scoring above the clean frames' (1 - fpr) quantile (strictly)."""
    c = np.asarray(clean, np.float64)
    b = np.asarray(bad, np.float64)
    if c.size == 0 or b.size == 0:
        return float("nan")
    k = int(np.floor(fpr * c.size))  # clean frames allowed above the threshold
    thr = float(np.sort(c)[::-1][k]) if k < c.size else -np.inf
    return float((b > thr).mean())


def roc(clean: Sequence[float], bad: Sequence[float]) -> tuple[F64, F64]:
    """(fpr, tpr) at every threshold, from (0, 0) to (1, 1)."""
    c = np.asarray(clean, np.float64)
    b = np.asarray(bad, np.float64)
    thresholds = np.unique(np.concatenate([c, b]))[::-1]
    fpr = np.array([0.0, *[(c >= t).mean() for t in thresholds], 1.0])
    tpr = np.array([0.0, *[(b >= t).mean() for t in thresholds], 1.0])
    return fpr, tpr


def _text(img: U8, text: str, org: tuple[int, int], scale: float = 0.42, color: tuple[int, int, int] = _INK) -> None:
    cv2.putText(img, text, org, _FONT, scale, color, 1, cv2.LINE_AA)


def _axes(img: U8, box: tuple[int, int, int, int], *, title: str, xlabel: str, ylabel: str) -> None:
    x0, y0, w, h = box
    cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), _INK, 1)
    for f in (0.25, 0.5, 0.75):
        cv2.line(img, (x0, y0 + int(h * (1 - f))), (x0 + w, y0 + int(h * (1 - f))), _GRID, 1)
    _text(img, title, (x0, y0 - 8), 0.45)
    _text(img, xlabel, (x0 + w // 2 - 40, y0 + h + 28), 0.38)
    _text(img, ylabel, (x0 - 34, y0 + h // 4 + 4), 0.38)  # at 0.75: clear of the tick labels
    for f in (0.0, 0.5, 1.0):
        _text(img, f"{f:g}", (x0 - 22, y0 + h - int(h * f) + 4), 0.35)


def _roc_panel(img: U8, corner: tuple[int, int], size: int, title: str, curves: Mapping[str, tuple[F64, F64]]) -> None:
    x0, y0 = corner
    _axes(img, (x0, y0, size, size), title=title, xlabel="false-positive rate (log)", ylabel="TPR")
    lo = 1e-3  # log x axis from 0.1 % to 100 %
    for name, (fpr, tpr) in curves.items():
        fx = np.log10(np.clip(fpr, lo, 1.0))
        xs = x0 + ((fx - np.log10(lo)) / -np.log10(lo) * size).astype(int)
        ys = y0 + size - (tpr * size).astype(int)
        pts = np.stack([xs, ys], axis=1).astype(np.int32)
        cv2.polylines(img, [pts], False, SERIES.get(name, _INK), 2, cv2.LINE_AA)
    for k, f in enumerate((0.01, 0.05)):
        x = x0 + int((np.log10(f) - np.log10(lo)) / -np.log10(lo) * size)
        cv2.line(img, (x, y0), (x, y0 + size), (200, 200, 255), 1)
        _text(img, f"{f:.0%}", (x + 2, y0 + 12 + 12 * k), 0.33)


def _bars(img: U8, box: tuple[int, int, int, int], values: Mapping[str, Sequence[float]]) -> None:
    x0, y0, w, h = box
    _axes(img, box, title="corruptions: mean TPR at 1% FPR per severity", xlabel="severity", ylabel="TPR")
    n_sev = max(len(v) for v in values.values())
    group = w / n_sev
    bar = group / (len(values) + 1)
    for s in range(n_sev):
        _text(img, str(s + 1), (x0 + int(group * (s + 0.45)), y0 + h + 14), 0.4)
        for k, (name, vals) in enumerate(values.items()):
            v = float(vals[s]) if s < len(vals) else 0.0
            left = x0 + int(group * s + bar * (k + 0.5))
            cv2.rectangle(img, (left, y0 + h - int(v * h)), (left + int(bar) - 2, y0 + h), SERIES.get(name, _INK), -1)


def draw_report(
    path: Path, rocs: Mapping[str, Mapping[str, tuple[F64, F64]]], severity_tpr: Mapping[str, Sequence[float]]
) -> Path:
    """One PNG: a ROC panel per entry of ``rocs`` ({panel: {series: (fpr, tpr)}}) and the severity bars."""
    size, pad = 260, 70
    panels = list(rocs.items())
    width = pad + (size + pad) * (len(panels) + 1) + 120
    img = np.full((size + 2 * pad, width, 3), 255, np.uint8)
    for i, (title, curves) in enumerate(panels):
        _roc_panel(img, (pad + i * (size + pad), pad), size, title, curves)
    _bars(img, (pad + len(panels) * (size + pad), pad, size + 120, size), severity_tpr)
    for k, (name, color) in enumerate(SERIES.items()):
        cv2.rectangle(img, (width - 110, 12 + 16 * k), (width - 98, 22 + 16 * k), color, -1)
        _text(img, name, (width - 92, 22 + 16 * k), 0.4)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")
    return path
