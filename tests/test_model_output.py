"""A model output that cannot be used (NaN, infinity, probabilities summing to 0) costs the frames
that gave it, BLOCKed with the reason ``model_output``, not the camera: the daemon used to die on
the first such frame (exit 1), and a camera that kept seeing it restarted in a loop."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from helpers import read_jsonl, synthetic_frames, write_nan_when_dark_model

from agent.daemon import MODEL_OUTPUT_DEGRADED
from agent.errors import ModelError, ModelOutputError
from agent.frame import Frame
from agent.model.config import ModelConfig, OutputConfig, PreprocessConfig
from agent.model.factory import load_model
from agent.pipeline import Measurer, ModelResult, infer_isolating
from agent.stats.cpu import CpuStats

# 240 frames of 160 x 96: dark in 40..49 (start-up calibration) and 150..189 (guarding).
SYNTH = "synthetic://custom?faults=dark:40:50,dark:150:190&size=160x96&seed=3&frames=240"


def _runner(bad: set[int], calls: list[list[int]], other: Exception | None = None):  # type: ignore[no-untyped-def]
    """A batch runner that refuses any batch holding a frame of ``bad`` (as a decoder does)."""

    def run(idx: Sequence[int]) -> list[ModelResult]:
        calls.append(list(idx))
        if other is not None:
            raise other
        if bad & set(idx):
            raise ModelOutputError("classifier output contains NaN or infinity")
        return [(None, float(i)) for i in idx]

    return run


def test_only_the_frames_whose_own_output_is_unusable_lose_it() -> None:
    calls: list[list[int]] = []
    results, errors = infer_isolating(_runner({1, 3}, calls), 4)
    assert calls == [[0, 1, 2, 3], [0], [1], [2], [3]]  # the batch, then a frame at a time
    assert [sq for _, sq in results] == [0.0, None, 2.0, None]
    assert errors == [None, "classifier output contains NaN or infinity", None,
                      "classifier output contains NaN or infinity"]
    calls.clear()
    assert infer_isolating(_runner(set(), calls), 3)[1] == [None] * 3 and calls == [[0, 1, 2]]  # one call
    assert infer_isolating(_runner({0}, calls), 1) == ([(None, None)], ["classifier output contains NaN or infinity"])


def test_other_model_errors_still_end_the_run() -> None:
    with pytest.raises(ModelError, match="TensorRT inference failed"):
        infer_isolating(_runner(set(), [], ModelError("TensorRT inference failed")), 2)


def test_measurer_isolates_the_dark_frames_of_a_batch(tmp_path: Path) -> None:
    model = load_model(ModelConfig(
        path=write_nan_when_dark_model(tmp_path / "nan.onnx"), providers=["cpu"],
        preprocess=PreprocessConfig(size=(16, 16), mean=(0.0, 0.0, 0.0)), output=OutputConfig(name="logits"),
    ))
    assert model is not None
    images = synthetic_frames(SYNTH)[36:54]  # 4 clean, 10 dark, 4 clean
    frames = [Frame(im, "cam", i, 0.0, 0.0) for i, im in enumerate(images)]
    measured, bad = Measurer(CpuStats((4, 4)), model).measure(frames)
    assert not bad and len(measured) == 18
    dark = [m.model_error is not None for m in measured]
    assert dark == [False] * 4 + [True] * 10 + [False] * 4
    assert all(m.output is None for m in measured if m.model_error)
    assert all(m.output is not None and np.isfinite(m.output.confidence) for m in measured if not m.model_error)
    assert {m.model_error for m in measured if m.model_error} == {"classifier output contains NaN or infinity"}


def _run(
    tmp_path: Path, threshold: float = 60.0, uri: str = SYNTH, realtime: bool = False
) -> subprocess.CompletedProcess[str]:
    """``edge-guard run`` on ``uri`` with a model that gives NaN below ``threshold`` (mean code value)."""
    cfg = tmp_path / "cam.yaml"
    cfg.write_text(f"""
camera_id: nan1
source: {{uri: "{uri}", realtime: {str(realtime).lower()}}}
stats: {{backend: cpu}}
model:
  path: "{write_nan_when_dark_model(tmp_path / 'nan.onnx', threshold)}"
  providers: [cpu]
  preprocess: {{size: [16, 16], mean: [0.0, 0.0, 0.0]}}
  output: {{name: logits}}
calibration: {{frames: 100}}
file_sink: {{dir: "{tmp_path / 'out'}"}}
""", encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=180, check=False)


def test_a_model_unusable_on_its_warm_up_frame_is_a_config_error(tmp_path: Path) -> None:
    """NaN for the mid-grey warm-up frame: every frame would be BLOCKed, so it stops at start (78)."""
    proc = _run(tmp_path, threshold=200.0)
    assert proc.returncode == 78, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"edge-guard: error: model {tmp_path / 'nan.onnx'}: its output for the warm-up frame (mid-grey) is unusable "
        "(classifier output contains NaN or infinity); check model.preprocess (mean, std, scale), model.output and, "
        "for an FP16 engine, model.trt_fp16: false")


def test_daemon_blocks_the_frames_and_goes_on(tmp_path: Path) -> None:
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]  # was 1: "worker failed: classifier output contains NaN"
    verdicts = read_jsonl(tmp_path / "out" / "verdicts.jsonl")
    unusable = [v for v in verdicts if any(r["code"] == "model_output" for r in v["reasons"])]
    # the dark frames calibration skipped (40..49) delayed guarding by 10 frames: 110 guarded, 150..189 dark
    assert sorted(v["seq"] for v in unusable) == list(range(150, 190))
    for v in unusable:
        assert v["decision"] == "BLOCK" and v["reasons"][0]["code"] == "model_output"
        assert v["reasons"][0]["detail"] == {"error": "classifier output contains NaN or infinity"}
        assert "dark" in {r["code"] for r in v["reasons"]}  # the image tests still ran
    health = read_jsonl(tmp_path / "out" / "health.jsonl")
    assert sum(h["errors"].get("model_output", 0) for h in health) == 50  # 10 calibrating + 40 guarding
    assert "frame 40: the model's output is unusable (1 so far)" in proc.stderr
    assert "profile" in proc.stderr and "guarding from now on" in proc.stderr


def test_a_long_run_of_unusable_outputs_degrades_the_camera_until_it_ends(tmp_path: Path) -> None:
    """300 dark frames in a row, paced at 100 fps (3 s: twelve status ticks, where 25 frames mark it):
    the status says why every frame is BLOCKed, and the camera is online again once outputs are usable."""
    proc = _run(tmp_path, uri="synthetic://custom?faults=dark:120:420&size=160x96&seed=3&frames=640&fps=100",
                realtime=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = [(r["state"], r["reason"]) for r in read_jsonl(tmp_path / "out" / "status.jsonl")]
    degraded = ("degraded", MODEL_OUTPUT_DEGRADED)
    assert degraded in states, states
    after = states[states.index(degraded) + 1:]
    assert after[0] == ("online", "guarding") and after[-1][0] == "offline", states
