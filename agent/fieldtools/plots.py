"""Robustness curves as a PNG drawn with OpenCV only (no plotting dependency on the device).

One panel per corruption: x = severity (0 = clean), y = 0..1. Blue: model performance
(agreement with the clean prediction, or accuracy with labels); orange: share of images
the guard flagged; grey: mean confidence. A red band marks a cliff (performance falls by
more than the threshold between two consecutive severities).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["COLORS", "robustness_png"]

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
