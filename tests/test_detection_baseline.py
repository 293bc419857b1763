"""The benchmark's baseline (robust Mahalanobis over 12 OpenCV statistics) scores like scikit-learn's MinCovDet."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from helpers import synthetic_frames

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _detection_baseline import BASELINE_STATS, Baseline, baseline_stats


def test_a_statistic_that_never_varied_carries_no_weight() -> None:
    """The synthetic street has no dark or clipped pixels: one clipped speck must not outscore a blurred frame.

    With a numerical floor alone, the zero-variance direction got a weight of ~1e18 (clean frames with
    a few clipped pixels scored 1e4-1e5); like pinvh in MinCovDet, it is ignored instead.
    """
    frames = synthetic_frames("synthetic://clean?size=320x180&seed=4&frames=120")
    dark = BASELINE_STATS.index("dark_share")
    assert all(baseline_stats(im)[dark] == 0.0 for im in frames[:100])
    base = Baseline(frames[:100])
    assert base.ignored >= 1
    speck = frames[100].copy()
    speck[:2, :2] = 0  # 4 black pixels: dark_share > 0, nothing else changes
    blurred = np.asarray(cv2.GaussianBlur(frames[100], (0, 0), 3.0), np.uint8)
    assert base.score(speck) < 2 * base.score(frames[100]) + 1.0
    assert base.score(blurred) > 10 * base.score(speck)


def test_without_degenerate_directions_it_is_the_robust_distance(test_data: Path) -> None:
    """On opencv_vtest.avi every direction varied: the scores are the plain robust distances."""
    cap = cv2.VideoCapture(str(test_data / "videos" / "opencv_vtest.avi"))
    frames: list[np.ndarray] = []
    while len(frames) < 130:
        ok, frame = cap.read()
        assert ok
        frames.append(np.asarray(frame, np.uint8))
    cap.release()
    base = Baseline(frames[:120])
    assert base.ignored == 0
    for im in frames[120:]:
        assert np.isclose(base.score(im), base.model.distance(baseline_stats(im)), rtol=1e-6)
