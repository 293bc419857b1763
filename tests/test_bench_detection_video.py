"""bench_detection on your own footage: big frames shrunk on request, a video too big for memory
refused, and a run without the shared test material measuring what it can and saying what it left out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.sources.synthetic_scene import SyntheticScene

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_detection import read_video

ROOT = Path(__file__).resolve().parents[1]


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


def test_own_footage_without_the_test_material_runs_what_it_can(tmp_path: Path) -> None:
    """A field engineer's camera and nothing else: --data points at an empty folder."""
    video = tmp_path / "street.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 25, (256, 144))
    scene = SyntheticScene(seed=3, size_wh=(256, 144))
    for t in range(0, 3300, 10):  # 330 frames, 0.4 s of scene time apart
        writer.write(scene.render(t)[0])
    writer.release()
    empty, out = tmp_path / "no-data", tmp_path / "out"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_detection.py"), "--quick", "--data", str(empty),
         "--video", str(video), "--cal", "100", "--skip", "controls", "drift", "cost", "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert f"not found: {empty / 'models' / 'squeezenet1.0_fp32_upcast.onnx'}" in text
    assert f"not found: {empty / 'videos' / 'opencv_tree.avi'} (the hand-over-lens event)" in text
    assert "[SKIP] PGD 4/255: TPR@5%FPR >= 0.90: not measured: SqueezeNet or photos not found" in text
    assert "[SKIP] no drift alarm on clean footage: not measured: --skip" in text

    report = json.loads((out / "detection.json").read_text())
    assert report["skipped"] == {
        "controls": "--skip", "drift": "--skip", "cost": "--skip",
        "adversarial": f"SqueezeNet or photos not found under {empty}",
    }
    for key in ("stationary_control", "sequential_control", "adversarial", "drift", "cost_ms"):
        assert key not in report
    # What needs only the video was measured: every corruption cell, the camera bump and the sticker,
    # the clean split.
    assert len(report["corruptions"]["cells"]) == 15
    assert all(len(row) == 5 for row in report["corruptions"]["cells"].values())
    assert list(report["events"]) == ["camera_bump", "sticker_5pct"]
    assert report["events"]["camera_bump"]["event_frames"] == report["events"]["sticker_5pct"]["event_frames"] == 100
    assert report["clean"]["held_out_frames"] == 230
    # the calibrated guard's limits, in the statistics' units (limits.py), printed and in the JSON
    dark = next(t for t in report["clean"]["limits"]["limits"] if t["test"] == "dark")
    assert dark["quantity"] == "mean luma" and dark["side"] == "below" and dark["value"] < dark["low"]
    assert f"    dark            mean luma below {dark['value']:.3g} (calibration" in text
    verdicts = {t["target"].strip(): t["pass"] for t in report["targets"]}
    assert len(verdicts) == 11
    skipped = [t for t, ok in verdicts.items() if ok is None]
    assert len(skipped) == 6 and all(("PGD" in t) or ("control" in t) or ("drift" in t) or ("ms per" in t)
                                     for t in skipped)
    assert isinstance(verdicts["scene change / moved alarmed within 25 frames"], bool)
    assert (out / "detection.png").stat().st_size > 0
