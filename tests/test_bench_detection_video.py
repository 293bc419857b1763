"""bench_detection reads the footage: big frames shrunk on request, a video too big for memory refused."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_detection import read_video


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 frames of 960 x 540 (MJPG), a stand-in for a high-resolution camera."""
    path = tmp_path_factory.mktemp("video") / "wide.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, (960, 540))
    rng = np.random.default_rng(0)
    for _ in range(12):
        writer.write(rng.integers(0, 255, (540, 960, 3), dtype=np.uint8))
    writer.release()
    return path


def test_max_side_shrinks_keeping_the_aspect(video: Path) -> None:
    frames = read_video(video, max_side=480)
    assert len(frames) == 12 and {f.shape for f in frames} == {(270, 480, 3)}
    assert read_video(video, max_frames=3, max_side=2000)[0].shape == (540, 960, 3)  # never enlarged


def test_a_video_over_the_memory_budget_is_refused_before_it_is_read(video: Path) -> None:
    # 12 frames x 960 x 540 x 3 bytes = 17.8 MiB: counted from the container's frame count, not --max-frames
    assert len(read_video(video, max_frames=1000, budget_gb=0.02)) == 12
    with pytest.raises(SystemExit, match=r"12 frames of 960x540 would take 0\.0174 GiB.*--memory-gb 0\.01.*--max-side"):
        read_video(video, max_frames=1000, budget_gb=0.01)
    assert len(read_video(video, max_side=480, budget_gb=0.01)) == 12  # shrunk first: 4.5 MiB fits
