"""Detector outputs as signals: summaries, the ood_detections test, detection drift, real YOLOX on vtest."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from helpers import person_boxes, synthetic_stats

from agent.frame import Frame
from agent.model.config import ModelConfig, PreprocessConfig
from agent.model.onnx_runner import OnnxRunner
from agent.model.types import ModelOutput
from agent.scoring.calibrate import Calibrator
from agent.scoring.config import CalibrationConfig, DriftConfig, PolicyConfig
from agent.scoring.detector_outputs import DETECTION_GRID, detection_vector, summarize_detections
from agent.scoring.policy import Guard
from agent.stats.types import FrameStats

F32 = npt.NDArray[np.float32]
W, H = 160, 90


@pytest.mark.parametrize(
    ("boxes", "count", "cells"),
    [
        ([], 0, (0,) * 9),
        ([[0, 0, 10, 10, 0.9, 0]], 1, (1, 0, 0, 0, 0, 0, 0, 0, 0)),  # top-left
        ([[150, 80, 160, 90, 0.5, 0], [70, 40, 90, 50, 0.7, 2]], 2, (0, 0, 0, 0, 1, 0, 0, 0, 1)),  # centre + corner
    ],
)
def test_summarize_detections(boxes: list[list[float]], count: int, cells: tuple[int, ...]) -> None:
    s = summarize_detections(np.asarray(boxes, np.float32).reshape(-1, 6), W, H)
    assert s.count == count and s.cells == cells and len(s.cells) == DETECTION_GRID[0] * DETECTION_GRID[1]
    v = detection_vector(s)
    assert v[0] == pytest.approx(np.log1p(count))
    assert np.isnan(v[1]) == (count == 0)


def detections(rng: np.random.Generator, n: int, corner: bool = False) -> ModelOutput:
    return person_boxes(rng, n, (W, H), corner=corner)


@pytest.fixture(scope="module")
def stats() -> list[FrameStats]:
    return synthetic_stats(f"synthetic://clean?size={W}x{H}&seed=5&frames=400")


@pytest.fixture(scope="module")
def guard(stats: list[FrameStats]) -> Guard:
    rng = np.random.default_rng(0)
    cal = Calibrator(CalibrationConfig(frames=200), (4, 4))
    for s in stats[:200]:
        cal.update(s, detections(rng, int(rng.integers(3, 9))))
    profile = cal.build(model_sha256="d" * 64)
    assert {"ood_model", "ood_detections"} <= set(profile.test_names())
    assert profile.model is not None and profile.model.detection_cells is not None
    assert sum(profile.model.detection_cells) > 0 and "detections" in profile.drift_bins
    return Guard(profile, PolicyConfig(drift=DriftConfig(window=100)))


def run(guard: Guard, stats: list[FrameStats], outputs: list[ModelOutput]) -> list[set[str]]:
    guard.reset()
    image = np.zeros((H, W, 3), np.uint8)
    return [set(guard.update(Frame(image, "cam", i, 0.0, 0.0), s, o).reason_codes)
            for i, (s, o) in enumerate(zip(stats, outputs, strict=True))]


def test_empty_or_crowded_frames_are_ood(guard: Guard, stats: list[FrameStats]) -> None:
    rng = np.random.default_rng(1)
    normal = run(guard, stats[200:300], [detections(rng, int(rng.integers(3, 9))) for _ in range(100)])
    assert sum("ood_model" in r for r in normal) <= 2
    empty = run(guard, stats[300:320], [detections(rng, 0) for _ in range(20)])
    crowded = run(guard, stats[320:340], [detections(rng, 60) for _ in range(20)])
    assert all("ood_model" in r for r in empty) and all("ood_model" in r for r in crowded)


def test_detections_in_one_corner_show_as_spatial_drift(guard: Guard, stats: list[FrameStats]) -> None:
    """Per frame a few boxes in a corner are plausible; over a window the grid shows the change."""
    rng = np.random.default_rng(2)
    run(guard, stats[200:300], [detections(rng, int(rng.integers(3, 9))) for _ in range(100)])
    normal = guard.drift_snapshot().scores["psi.detection_cells"]
    run(guard, stats[300:400], [detections(rng, int(rng.integers(3, 9)), corner=True) for _ in range(100)])
    corner = guard.drift_snapshot().scores["psi.detection_cells"]
    assert normal < 0.1 and corner > 1.0


def test_yolox_on_vtest_gives_detection_signals(test_data: Path) -> None:
    runner = OnnxRunner(ModelConfig(
        path=test_data / "models" / "yolox_nano_coco.onnx", kind="detector", providers=["cpu"],
        preprocess=PreprocessConfig(size=(416, 416), resize="letterbox", pad_value=114),
    ))
    cap = cv2.VideoCapture(str(test_data / "videos" / "opencv_vtest.avi"))
    frames: list[npt.NDArray[np.uint8]] = []
    try:
        while len(frames) < 8:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(np.asarray(frame, np.uint8))
    finally:
        cap.release()
    assert len(frames) == 8
    h, w = frames[0].shape[:2]
    for out in runner.infer(frames):
        assert out.detections is not None
        s = summarize_detections(out.detections, w, h)
        assert s.count >= 3 and 0.3 < s.mean_score <= 1.0
        assert -9.0 < s.log_area < -3.0  # persons cover 0.01 %..5 % of the frame each
        assert sum(s.cells) == s.count
