"""PNG plots drawn with OpenCV only (no plotting dependency on the device).

``timeline_png`` (edge-guard report): per camera, decisions, drift and confidence per time bucket.

``robustness_png`` (edge-guard stress): robustness curves, one panel per corruption: x =
severity (0 = clean), y = 0..1. Blue: model performance (agreement with the clean prediction,
or accuracy with labels); orange: share of images the guard flagged; grey: mean confidence. A
red band marks a cliff (performance falls by more than the threshold between two consecutive
severities).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from agent.fieldtools.healthreport import CameraReport

__all__ = ["COLORS", "robustness_png", "timeline_png"]

U8 = npt.NDArray[np.uint8]

#: BGR colours of the series.
COLORS: dict[str, tuple[int, int, int]] = {
    "performance": (180, 100, 20),
    "guard_detect": (0, 130, 245),
    "confidence": (150, 150, 150),
    "cliff": (70, 70, 235),
}
_PANEL_W, _PANEL_H = 300, 215
_LEFT, _RIGHT, _TOP, _BOTTOM = 38, 12, 26, 30
_HEADER = 64
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK = (40, 40, 40)
_GRID = (225, 225, 225)


def _text(img: U8, text: str, org: tuple[int, int], scale: float = 0.4, color: tuple[int, int, int] = _INK) -> None:
    cv2.putText(img, text, org, _FONT, scale, color, 1, cv2.LINE_AA)


def _panel(img: U8, origin: tuple[int, int], name: str, curve: dict[str, list[Any]],
           cliffs: Sequence[dict[str, Any]]) -> None:
    x0, y0 = origin
    pw, ph = _PANEL_W - _LEFT - _RIGHT, _PANEL_H - _TOP - _BOTTOM
    left, top = x0 + _LEFT, y0 + _TOP
    sev = curve["severity"]
    xmax = max(5, *sev)

    def px(s: float) -> int:
        return left + round(float(pw * s / xmax))

    def py(v: float) -> int:
        return top + round(float(ph * (1.0 - min(1.0, max(0.0, v)))))

    for c in cliffs:  # bands first, lines on top
        cv2.rectangle(img, (px(c["from_severity"]), top), (px(c["to_severity"]), top + ph), (215, 215, 250), -1)
        _text(img, f"-{c['drop']:.2f}", (px(c["from_severity"]) + 2, top + ph - 4), 0.33, COLORS["cliff"])
    for k in range(5):
        v = k / 4
        cv2.line(img, (left, py(v)), (left + pw, py(v)), _GRID, 1)
        _text(img, f"{v:.2g}", (x0 + 4, py(v) + 4), 0.32)
    for s in range(xmax + 1):
        _text(img, "clean" if s == 0 else str(s), (px(s) - (12 if s == 0 else 3), top + ph + 14), 0.32)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (170, 170, 170), 1)
    _text(img, name, (left, y0 + 17), 0.45)
    for series, thick in (("confidence", 1), ("guard_detect", 2), ("performance", 2)):
        pts = [(px(s), py(v)) for s, v in zip(sev, curve.get(series, []), strict=False) if v is not None]
        for a, b in itertools.pairwise(pts):
            cv2.line(img, a, b, COLORS[series], thick, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 3 if thick > 1 else 2, COLORS[series], -1, cv2.LINE_AA)


def robustness_png(
    curves: dict[str, dict[str, list[Any]]],
    cliffs: Sequence[dict[str, Any]],
    path: Path,
    *,
    title: str,
    subtitle: str = "",
    performance_label: str = "agreement with clean",
) -> Path:
    """Draw the robustness curves (see the module docstring) and write them to ``path`` (PNG)."""
    names = list(curves)
    cols = max(1, min(4, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    img = np.full((_HEADER + rows * _PANEL_H, cols * _PANEL_W, 3), 255, dtype=np.uint8)
    _text(img, title, (10, 20), 0.5)
    if subtitle:
        _text(img, subtitle, (10, 38), 0.36)
    x = 10
    for series, label in (("performance", performance_label), ("guard_detect", "guard flagged"),
                          ("confidence", "mean confidence"), ("cliff", "cliff")):
        cv2.line(img, (x, 54), (x + 18, 54), COLORS[series], 2 if series != "confidence" else 1, cv2.LINE_AA)
        _text(img, label, (x + 22, 58), 0.36)
        x += 30 + 7 * len(label)
    for i, name in enumerate(names):
        r, c = divmod(i, cols)
        _panel(img, (c * _PANEL_W, _HEADER + r * _PANEL_H), name, curves[name],
               [cl for cl in cliffs if cl["corruption"] == name])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write PNG {path}")
    return path


#: Line colours of the timeline panels (BGR), in series order.
_SERIES = [(0, 130, 245), (70, 70, 235), (180, 100, 20), (60, 160, 60), (150, 150, 150)]
_TL_W, _TL_H = 380, 200


def _line_panel(img: U8, origin: tuple[int, int], title: str, t: Sequence[float],
                series: dict[str, list[float | None]], *, ymin: float = 0.0) -> None:
    """A time series panel: x = t (epoch s), one line per series (None = gap), legend under the title."""
    x0, y0 = origin
    pw, ph = _TL_W - _LEFT - _RIGHT, _TL_H - _TOP - _BOTTOM - 14
    left, top = x0 + _LEFT, y0 + _TOP + 14
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    ymax = max([ymin + 1e-9, *values]) * 1.05
    t0, t1 = (min(t), max(t)) if t else (0.0, 1.0)
    span = max(t1 - t0, 1e-9)

    def px(x: float) -> int:
        return left + round(pw * (x - t0) / span) if len(t) > 1 else left + pw // 2

    def py(v: float) -> int:
        return top + round(ph * (1.0 - (v - ymin) / (ymax - ymin)))

    for k in range(5):
        v = ymin + (ymax - ymin) * k / 4
        cv2.line(img, (left, py(v)), (left + pw, py(v)), _GRID, 1)
        _text(img, f"{v:.3g}", (x0 + 2, py(v) + 4), 0.3)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (170, 170, 170), 1)
    _text(img, title, (left, y0 + 16), 0.42)
    x = left
    for i, (name, vs) in enumerate(series.items()):
        color = _SERIES[i % len(_SERIES)]
        _text(img, name, (x, y0 + 32), 0.32, color)
        x += 12 + 6 * len(name)
        pts = [(px(tt), py(v)) for tt, v in zip(t, vs, strict=True) if v is not None and math.isfinite(v)]
        for a, b in itertools.pairwise(pts):
            cv2.line(img, a, b, color, 2, cv2.LINE_AA)
        for q in pts:
            cv2.circle(img, q, 2, color, -1, cv2.LINE_AA)
    if t:
        for tt, anchor in ((t0, left), (t1, left + pw - 70)):
            _text(img, datetime.fromtimestamp(tt, UTC).strftime("%m-%d %H:%M"), (anchor, top + ph + 14), 0.3)


def timeline_png(reports: Sequence[CameraReport], path: Path) -> Path:
    """One row per camera: FLAG/BLOCK rates, the drift scores that
    are highest in the last bucket, and the median model confidence, per bucket (edge-guard report)."""
    rows = max(1, len(reports))
    img = np.full((_HEADER // 2 + rows * _TL_H, 3 * _TL_W, 3), 255, dtype=np.uint8)
    _text(img, "edge-guard report: per bucket, since calibration (UTC)", (10, 20), 0.5)
    for r, rep in enumerate(reports):
        y = _HEADER // 2 + r * _TL_H
        g = rep.guarded
        t = [b.start for b in g]
        rates = {f"{d} %": [None if (v := b.rate(d)) is None else 100 * v for b in g] for d in ("FLAG", "BLOCK")}
        _line_panel(img, (0, y), f"{rep.camera_id}: decisions", t, rates)
        top = [k for k, _ in g[-1].top_psi(3)] if g else []
        _line_panel(img, (_TL_W, y), f"{rep.camera_id}: drift (PSI)", t,
                    {k[4:]: [b.drift.get(k) for b in g] for k in top})
        _line_panel(img, (2 * _TL_W, y), f"{rep.camera_id}: model confidence (median)", t,
                    {"p50": [b.confidence_p50 for b in g]})
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write PNG {path}")
    return path
