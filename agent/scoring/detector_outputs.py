"""Detector outputs as signals: count, confidence, box size and where the boxes fall.

A detector's ``ModelOutput.detections`` (K, 6) rows [x1, y1, x2, y2, score, class] in frame
pixels are reduced per frame to a ``DetectionSummary``:

| field | definition |
|---|---|
| ``count`` | K, the number of kept detections |
| ``mean_score`` | mean detection score (NaN when K = 0) |
| ``log_area`` | median over boxes of log(box area / frame area) (NaN when K = 0) |
| ``cells`` | counts of box centres on a coarse ``rows x cols`` grid of the frame (row-major) |

``detection_vector`` turns a summary into the per-frame feature vector the ``ood_detections``
test scores (robust distance, conformal p-value): log(1 + K), the mean score and the median
log area (the last two imputed at their calibrated location when K = 0, so an empty frame is
judged by its count alone). The spatial cells are too sparse per frame to judge one frame;
they are compared over windows by drift.py (a detector that suddenly sees objects only in
one corner is a classic failure sign).

>>> import numpy as np
>>> det = np.array([[0, 0, 10, 10, 0.9, 0], [80, 80, 100, 100, 0.5, 0]], np.float32)
>>> s = summarize_detections(det, 100, 100, (2, 2))
>>> s.count, round(s.mean_score, 2), s.cells
(2, 0.7, (1, 0, 0, 1))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["DETECTION_FEATURES", "DETECTION_GRID", "DetectionSummary", "detection_vector", "summarize_detections"]

FloatArray = npt.NDArray[np.float64]

#: Coarse grid (rows, cols) of box-centre counts.
DETECTION_GRID: tuple[int, int] = (3, 3)
DETECTION_FEATURES: tuple[str, ...] = ("log_count", "mean_score", "log_area")


@dataclass(frozen=True, slots=True)
class DetectionSummary:
    """Per-frame summary of a detector's output (see the module docstring)."""

    count: int
    mean_score: float
    log_area: float
    cells: tuple[int, ...]


def summarize_detections(
    detections: npt.NDArray[np.floating], width: int, height: int, grid: tuple[int, int] = DETECTION_GRID
) -> DetectionSummary:
    """Summarise (K, 6) detections of a ``width`` x ``height`` frame."""
    rows, cols = grid
    det = np.asarray(detections, dtype=np.float64).reshape(-1, 6) if np.size(detections) else np.zeros((0, 6))
    k = int(det.shape[0])
    cells = np.zeros(rows * cols, dtype=np.int64)
    if k == 0:
        return DetectionSummary(count=0, mean_score=math.nan, log_area=math.nan, cells=tuple(int(c) for c in cells))
    w = np.clip(det[:, 2] - det[:, 0], 1.0, None)  # (K,) at least one pixel
    h = np.clip(det[:, 3] - det[:, 1], 1.0, None)
    area = w * h / max(1.0, float(width) * float(height))
    cx = np.clip((det[:, 0] + det[:, 2]) * 0.5 / max(width, 1), 0.0, 1.0 - 1e-9)
    cy = np.clip((det[:, 1] + det[:, 3]) * 0.5 / max(height, 1), 0.0, 1.0 - 1e-9)
    idx = (cy * rows).astype(np.int64) * cols + (cx * cols).astype(np.int64)
    np.add.at(cells, idx, 1)
    return DetectionSummary(
        count=k,
        mean_score=float(det[:, 4].mean()),
        log_area=float(np.median(np.log(area))),
        cells=tuple(int(c) for c in cells),
    )


def detection_vector(summary: DetectionSummary) -> FloatArray:
    """(log(1 + count), mean_score, log_area); NaN entries when there are no detections."""
    return np.array((math.log1p(summary.count), summary.mean_score, summary.log_area), dtype=np.float64)
