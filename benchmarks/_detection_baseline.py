"""The bar to beat: a robust Mahalanobis distance over a dozen global OpenCV statistics.

The usual quick answer to "is this frame off?" for a fixed camera: compute a handful of
global image statistics with OpenCV, fit a robust location/scatter (MinCovDet-style: the
project's NumPy MCD with half the points, no feature floors, no shrinkage) on clean frames,
and score new frames by their robust Mahalanobis distance, with the pseudo-inverse of the
scatter as scikit-learn's MinCovDet does (a statistic that never varied on the clean frames,
e.g. the dark share of a camera with no dark pixels, is ignored rather than weighted ~1e18).
``benchmarks/bench_detection.py`` runs it side by side with the guard.

Statistics (``BASELINE_STATS``): gray mean and std, B/G/R means, HSV saturation mean,
log Laplacian variance, log mean Sobel magnitude, dark share (gray < 16), clipped share
(gray > 249), gray-histogram entropy (32 bins), log mean |Immerkaer kernel| (noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from agent.scoring.robust import RobustGaussian, fit_robust_gaussian

__all__ = ["BASELINE_STATS", "Baseline", "baseline_stats"]

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

BASELINE_STATS: tuple[str, ...] = (
    "gray_mean", "gray_std", "mean_b", "mean_g", "mean_r", "sat_mean",
    "log_lap_var", "log_sobel", "dark_share", "clip_share", "entropy", "log_noise",
)
_K = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def baseline_stats(image: U8) -> F64:
    """The 12 statistics of one BGR frame (see the module docstring)."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    g32 = gray.astype(np.float32)
    mean, std = cv2.meanStdDev(gray)
    bgr = cv2.mean(image)
    sat = cv2.mean(cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[:, :, 1])[0]
    lap = cv2.Laplacian(g32, cv2.CV_32F)
    gx = cv2.Sobel(g32, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(g32, cv2.CV_32F, 0, 1)
    hist = cv2.calcHist([gray], [0], None, [32], [0, 256]).ravel()
    p = hist / max(float(hist.sum()), 1.0)
    p = p[p > 0]
    noise = float(np.abs(cv2.filter2D(g32, -1, _K)).mean())
    n = float(gray.size)
    return np.array([
        float(mean[0, 0]), float(std[0, 0]), bgr[0], bgr[1], bgr[2], sat,
        math.log1p(float(lap.var())), math.log1p(float(cv2.magnitude(gx, gy).mean())),
        float(np.count_nonzero(gray < 16)) / n, float(np.count_nonzero(gray > 249)) / n,
        float(-(p * np.log(p)).sum()), math.log1p(noise),
    ], dtype=np.float64)


class Baseline:
    """Robust Mahalanobis distance of ``baseline_stats`` to clean frames of one camera."""

    def __init__(self, clean: Sequence[U8]) -> None:
        x = np.stack([baseline_stats(im) for im in clean])  # (n, 12)
        floor = np.maximum(np.abs(x).max(axis=0), 1.0) * 1e-9  # numerical only: no physical floors
        self.model: RobustGaussian = fit_robust_gaussian(x, floor, support=0.5, shrinkage=0.0)
        # As scikit-learn's MinCovDet scores (precision = pinvh(covariance)): directions in which the
        # clean frames did not vary at all (e.g. no dark or clipped pixels in any of them) carry no
        # weight, instead of an infinite one that makes one clipped pixel outscore a blurred frame.
        vals, vecs = np.linalg.eigh(self.model.scatter)
        keep = vals > vals.max() * len(vals) * np.finfo(np.float64).eps
        self._precision: F64 = (vecs[:, keep] / vals[keep]) @ vecs[:, keep].T
        self.ignored = int((~keep).sum())

    def score(self, image: U8) -> float:
        """Robust Mahalanobis distance (higher = more anomalous)."""
        d = baseline_stats(image) - self.model.location
        return math.sqrt(max(float(d @ self._precision @ d), 0.0))
