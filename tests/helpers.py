"""Small helpers shared by the tests: wait for a condition, read a JSON-lines output file, find nvcc,
a folder nobody can write in, render a synthetic clip, write a damaged one."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.model.types import ModelOutput
from agent.scoring.base import TEST_REGISTRY
from agent.scoring.profile import Profile
from agent.sources.synthetic import SyntheticCamera, SyntheticScene, parse_synthetic_uri
from agent.stats.cpu import CpuStats
from agent.stats.types import FrameStats

__all__ = [
    "clip_frame_index", "damaged_clip", "exact_tolerances", "find_nvcc", "flapping", "read_jsonl", "scene_folder",
    "synthetic_frames", "synthetic_stats", "unwritable_folder", "wait_until", "write_nan_when_dark_model",
    "write_squeezenet_config",
]


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0, what: str = "the condition") -> None:
    """Poll ``predicate`` until it is true; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    if predicate():
        return
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def unwritable_folder() -> Path:
    """/proc: an existing folder where nobody, root included, can create a file (os.access still
    says yes to root there); skips the test where it is not so (not Linux)."""
    folder = Path("/proc")
    try:
        (folder / "edge-guard-test").touch()
    except OSError:
        return folder
    (folder / "edge-guard-test").unlink()
    pytest.skip(f"{folder} is writable here: no folder to test an unwritable output with")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, one per complete non-blank line ([] when it does not exist yet).

    A running agent may be half-way through writing its last line (large health records are not
    written atomically): a final line without its newline is not complete yet and is left out.
    """
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    return [json.loads(ln) for ln in complete.splitlines() if ln.strip()]


def find_nvcc() -> str | None:
    """nvcc on PATH, else the CUDA 13.0 default location, else None (the compile tests skip)."""
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda-13.0/bin/nvcc")
    return str(default) if default.is_file() else None


def write_squeezenet_config(test_data: Path, tmp_path: Path, camera_id: str, extra: str = "") -> Path:
    """``tmp_path/cfg.yaml``: SqueezeNet (Caffe preprocessing) on the test video, CPU only, plus ``extra`` YAML."""
    models = test_data / "models"
    path = tmp_path / "cfg.yaml"
    path.write_text(f"""
camera_id: {camera_id}
source: {{uri: "{test_data / 'videos' / 'opencv_vtest.avi'}"}}
stats: {{backend: cpu}}
model:
  path: "{models / 'squeezenet1.0_fp32_upcast.onnx'}"
  labels: "{models / 'imagenet_classes_ILSVRC2012.txt'}"
  providers: [cpu]
  preprocess: {{size: [224, 224], mean: [104.0, 117.0, 123.0]}}
file_sink: {{dir: "{tmp_path / 'sink'}"}}
{extra}
""", encoding="utf-8")
    return path


def write_nan_when_dark_model(path: Path, threshold: float = 60.0) -> Path:
    """A real 4-class ONNX classifier whose logits are NaN for dark frames, as an fp16 engine's can
    be on extreme ones: logits = sqrt(mean pixel - ``threshold``) x [1, 0.5, -0.5, -1] on a 16 x 16
    input (0..255, no normalisation), so a frame whose mean code value is below ``threshold`` gives NaN."""
    import onnx  # noqa: PLC0415 (dev extra)
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Flatten", ["mean"], ["flat"], axis=1),
        helper.make_node("Sub", ["flat", "threshold"], ["above"]),
        helper.make_node("Sqrt", ["above"], ["root"]),  # NaN below the threshold
        helper.make_node("MatMul", ["root", "weights"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "nan_when_dark",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array([threshold], np.float32), "threshold"),
         numpy_helper.from_array(np.array([[1.0, 0.5, -0.5, -1.0]], np.float32), "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def synthetic_frames(uri: str) -> list[npt.NDArray[np.uint8]]:
    """Every frame of a finite synthetic camera URI (``synthetic://clean?...&frames=N``), rendered."""
    spec = parse_synthetic_uri(uri)
    total = spec.schedule.total_frames
    if total is None:
        raise ValueError(f"{uri} has no frame count: add frames=N")
    camera = SyntheticCamera(SyntheticScene(spec.seed, spec.size_wh, style=spec.style), spec.schedule)
    return [camera.render(i)[0] for i in range(total)]


def scene_folder(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    """``folder`` (created) with frame i of the synthetic street (seed 3) at ``sizes[i]`` as ``{i:04d}.png``."""
    folder.mkdir(parents=True)
    for i, size in enumerate(sizes):
        assert cv2.imwrite(str(folder / f"{i:04d}.png"), SyntheticScene(3, size).render(i)[0])
    return folder


def flapping(n: int) -> list[tuple[int, int]]:
    """``n`` frame sizes alternating 128x96 (even frames) and 96x64 (odd): a stream flapping between two."""
    return [(96, 64) if i % 2 else (128, 96) for i in range(n)]


def synthetic_stats(uri: str, grid: tuple[int, int] = (4, 4)) -> list[FrameStats]:
    """The CPU statistics of every frame of ``synthetic_frames(uri)``."""
    backend = CpuStats(grid)
    return [backend.compute(image) for image in synthetic_frames(uri)]


def damaged_clip(path: Path, n: int, damage: tuple[float, float] = (0.45, 0.55), fourcc: str = "mp4v") -> Path:
    """A clip of ``n`` frames (container from the suffix) with the bytes between the two fractions
    of its length zeroed (a bad sector, a broken copy). Frame i shows i in binary as 7 big
    black/white blocks, which survive compression: ``clip_frame_index`` reads it back."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), 25, (7 * 16, 32))
    for i in range(n):
        image = np.zeros((32, 7 * 16, 3), np.uint8)
        for bit in range(7):
            if i >> bit & 1:
                image[:16, bit * 16 : (bit + 1) * 16] = 255
        image[16:] = 40 + (2 * i) % 160  # the lower half changes too, so every frame carries data
        writer.write(image)
    writer.release()
    data = bytearray(path.read_bytes())
    start, end = int(len(data) * damage[0]), int(len(data) * damage[1])
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    return path


def clip_frame_index(image: npt.NDArray[np.uint8]) -> int:
    return sum(1 << bit for bit in range(7) if image[4:12, bit * 16 + 4 : bit * 16 + 12].mean() > 128)


def exact_tolerances(profile: Profile) -> dict[str, float]:
    """What a calibration that resolves alpha should record: 0 for every test, except the tamper
    tests' defaults (Test.keeps_tolerance). Compare with ``{t.name: t.tolerance for t in profile.tests}``."""
    out = {}
    for t in profile.tests:
        test = TEST_REGISTRY[t.name]
        out[t.name] = test.default_tolerance if test.keeps_tolerance else 0.0
    return out


def person_boxes(rng: np.random.Generator, n: int, size: tuple[int, int], corner: bool = False) -> ModelOutput:
    """A detector's output: n person boxes of plausible size in a ``size`` (w, h) frame,
    anywhere (or only in the top-left ninth)."""
    w, h = size
    xmax, ymax = (w / 3 - 12, h / 3 - 20) if corner else (w - 12, h - 20)
    x = rng.uniform(0, xmax, n)
    y = rng.uniform(0, ymax, n)
    det = np.column_stack([x, y, x + 10, y + 18, rng.uniform(0.5, 0.9, n), np.zeros(n)]).astype(np.float32)
    best = float(det[:, 4].max()) if n else 0.0
    return ModelOutput(top1=0 if n else -1, confidence=best, detections=det.reshape(-1, 6))
