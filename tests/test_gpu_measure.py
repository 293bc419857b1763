"""The measuring-path choice, the zero-copy GPU measurer, the shared labels check, the launcher stream.

Everywhere: `choose_measuring_path` (every branch and its log text), `plan_measuring` /
`build_measurer` on real CPU objects, the frame check and the record assembly of the GPU
measurer against the host `Measurer` and `FeatureSqueezer` on real frames and a real ONNX
Runtime model, the labels helper, and ``stream_handle`` on both launcher classes (inspected,
no device opened).

On a GPU (marked gpu; skipped with the reason elsewhere): `GpuMeasurer` statistics equal the
host path's CPU statistics on opencv_vtest.avi (the CPU backend's parity tolerance), and, where
TensorRT is importable, its model outputs equal ONNX Runtime CPU top-1 on shared photos.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.errors import FrameError, ModelError
from agent.frame import Frame
from agent.gpu.cuda_python import CudaPythonLauncher
from agent.gpu.launcher import Launcher
from agent.gpu.pycuda_launcher import PycudaLauncher
from agent.gpu.squeeze import parse_squeezers, split_by_variant, squeezed_canvases
from agent.gpu_measure import (
    MeasuringPath,
    assemble,
    build_measurer,
    choose_measuring_path,
    model_results,
    plan_measuring,
    split_frames,
)
from agent.model.config import ModelConfig, PreprocessConfig
from agent.model.factory import effective_preprocess, load_model
from agent.model.labels import check_label_count, read_labels, resolve_labels
from agent.model.tensorrt_runner import SqueezedOutputs
from agent.model.types import ModelRunner
from agent.pipeline import Measurer
from agent.scoring.adversarial import FeatureSqueezer
from agent.stats import cuda as cuda_stats
from agent.stats.config import StatsConfig
from agent.stats.cpu import CpuStats
from agent.stats.factory import cuda_unavailable_reason
from agent.stats.types import SCALAR_FIELDS, FrameStats

U8 = npt.NDArray[np.uint8]
PHOTOS = ("ortex_goldfish.jpg", "opencv_squirrel_cls.jpg", "ortex_wolves.jpg", "opencv_butterfly.jpg")
SQUEEZENET_PRE = PreprocessConfig(size=(224, 224), mean=(104.0, 117.0, 123.0))


def _video_frames(test_data: Path, n: int) -> list[U8]:
    cap = cv2.VideoCapture(str(test_data / "videos" / "opencv_vtest.avi"))
    frames: list[U8] = []
    while len(frames) < n:
        ok, img = cap.read()
        assert ok, "opencv_vtest.avi ended early"
        frames.append(np.asarray(img, dtype=np.uint8))
    cap.release()
    return frames


def _frames(images: list[U8], cameras: tuple[str, ...] = ("cam",)) -> list[Frame]:
    return [Frame(img, cameras[i % len(cameras)], i, 0.0, 0.0) for i, img in enumerate(images)]


# --------------------------------------------------------------------------- path selection
ZERO = "cuda stats + TensorRT on one stream"


@pytest.mark.parametrize(
    ("facts", "zero_copy", "text"),
    [
        # CPU statistics: configured, or CUDA unusable (the probe's reason is repeated)
        ({"stats_backend": "cpu", "stats_note": "configured"}, False, "host path (stats backend cpu: configured)"),
        (
            {"stats_backend": "cpu", "stats_note": "no NVIDIA driver (libcuda.so.1 not found)"},
            False,
            "host path (stats backend cpu: no NVIDIA driver (libcuda.so.1 not found))",
        ),
        ({"stats_backend": "cpu", "stats_note": None}, False, "host path (stats backend cpu)"),
        # CUDA statistics, but no model / another runtime / another launcher / CPU preprocessing
        ({"model_runtime": None}, False, "host path (model disabled: the statistics kernel alone needs no shared"),
        ({"model_runtime": "onnxruntime"}, False, "host path (model runtime onnxruntime: the zero-copy path needs"),
        ({"shares_launcher": False}, False, "host path (TensorRT runner and cuda stats run on different CUDA"),
        (
            {"preprocess_reason": "GPU preprocessing implements interpolation 'linear' only"},
            False,
            "host path (no GPU preprocessing: GPU preprocessing implements interpolation 'linear' only)",
        ),
        # everything lines up
        ({}, True, f"zero-copy GPU path ({ZERO})"),
    ],
)
def test_choose_measuring_path(facts: dict[str, Any], zero_copy: bool, text: str) -> None:
    path = _choose(**facts)
    assert path.zero_copy is zero_copy
    assert path.describe().startswith(f"measuring: {text}")


def _choose(
    stats_backend: str = "cuda",
    stats_note: str | None = None,
    model_runtime: str | None = "tensorrt",
    shares_launcher: bool = True,
    preprocess_reason: str | None = None,
) -> MeasuringPath:
    """The zero-copy facts, with some changed by the caller."""
    return choose_measuring_path(
        stats_backend=stats_backend,
        stats_note=stats_note,
        model_runtime=model_runtime,
        shares_launcher=shares_launcher,
        preprocess_reason=preprocess_reason,
    )


def test_describe_is_one_line() -> None:
    assert MeasuringPath(True, ZERO).describe() == f"measuring: zero-copy GPU path ({ZERO})"


@pytest.fixture(scope="module")
def reference_model() -> Iterator[ModelRunner]:
    model = load_model(ModelConfig(providers=["cpu"]))
    assert model is not None
    yield model


def test_plan_and_build_on_the_host(reference_model: ModelRunner, caplog: pytest.LogCaptureFixture) -> None:
    stats = CpuStats((4, 4))
    cfg = ModelConfig(providers=["cpu"])
    assert plan_measuring(stats, reference_model, StatsConfig(backend="cpu"), cfg) == MeasuringPath(
        False, "stats backend cpu: configured"
    )
    # auto without a usable GPU: the reason is the CUDA probe's
    reason = cuda_unavailable_reason()
    if reason is not None:
        assert plan_measuring(stats, reference_model, StatsConfig(), cfg).reason == f"stats backend cpu: {reason}"
    with caplog.at_level(logging.INFO, logger="agent.gpu_measure"):
        measurer = build_measurer(stats, reference_model, None, StatsConfig(backend="cpu"), cfg)
    assert type(measurer) is Measurer
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.gpu_measure"]
    assert lines == ["measuring: host path (stats backend cpu: configured)"]  # said once
    assert build_measurer(stats, None, None, StatsConfig(backend="cpu"), cfg.model_copy(update={"enabled": False}))


# --------------------------------------------------------------------------- GPU measurer parts (no GPU)
def test_split_frames_rejects_like_the_statistics_backends(test_data: Path) -> None:
    images = _video_frames(test_data, 3)
    frames = _frames(images)
    # A frame's image is validated when the Frame is made; one changed afterwards must still be
    # rejected, with the message the host path (CpuStats -> validate_bgr) gives.
    broken = Frame(images[0], "cam", 9, 0.0, 0.0)
    object.__setattr__(broken, "image", images[0][:, :, 0])
    # wider than the CUDA kernel takes: the message of agent.stats.cuda
    wide = Frame(np.zeros((1, cuda_stats.MAX_SIDE + 1, 3), np.uint8), "cam", 10, 0.0, 0.0)
    batch = [frames[0], broken, frames[1], wide, frames[2]]
    ok, bad = split_frames(batch)
    assert ok == frames
    assert [f for f, _ in bad] == [broken, wide]
    _, host_bad = Measurer(CpuStats(), None).measure([broken])
    assert str(bad[0][1]) == str(host_bad[0][1]) and "shape (H, W, 3)" in str(bad[0][1])
    with pytest.raises(FrameError) as want:
        cuda_stats._check_size(cuda_stats.MAX_SIDE + 1, 1)
    assert str(bad[1][1]) == str(want.value)


def test_assemble_scores_squeezing_like_feature_squeezer(test_data: Path, reference_model: ModelRunner) -> None:
    images = _video_frames(test_data, 3)
    frames = _frames(images)
    pre = effective_preprocess(ModelConfig())
    squeezers = parse_squeezers("bits:5,median:3")
    # what infer_device returns: plain and squeezed outputs of one batched call
    outs = reference_model.infer([*images, *squeezed_canvases(images, pre, squeezers)])
    plain, squeezed = split_by_variant(outs, len(images), squeezers)
    stats = [CpuStats().compute(img) for img in images]
    results = model_results(SqueezedOutputs(plain, squeezed), squeezing=True)
    measured = assemble(frames, stats, [1.0, 2.0, 3.0], results, 4.0)
    want = FeatureSqueezer(reference_model, pre, "bits:5,median:3").infer(images)
    assert [m.squeeze for m in measured] == want.scores  # same function, same numbers
    assert all(m.squeeze is not None and math.isfinite(m.squeeze) for m in measured)
    assert [m.output.top1 for m in measured if m.output] == [o.top1 for o in want.outputs]
    assert [m.latency_ms for m in measured] == [{"stats": s, "model": 4.0} for s in (1.0, 2.0, 3.0)]
    assert [m.frame for m in measured] == frames and [m.stats for m in measured] == stats
    assert all(m.model_error is None for m in measured)
    # without squeezing, or without a model
    unsqueezed = assemble(frames, stats, [0.0] * 3, model_results(SqueezedOutputs(plain, {}), squeezing=False), 0.0)
    assert all(m.squeeze is None and m.output is not None for m in unsqueezed)
    bare = assemble(frames, stats, [0.0] * 3, None, 0.0)
    assert all(m.output is None and m.squeeze is None for m in bare)
    # a frame whose own output was unusable (infer_isolating) carries the reason instead of an output
    isolated = assemble(frames, stats, [0.0] * 3, [results[0], (None, None), results[2]], 0.0,
                        errors=[None, "classifier output contains NaN or infinity", None])
    assert [m.output is None for m in isolated] == [False, True, False]
    assert [m.model_error for m in isolated] == [None, "classifier output contains NaN or infinity", None]
    with pytest.raises(ValueError, match="one model output per frame"):
        assemble(frames, stats, [0.0] * 3, results[:2], 0.0)
    with pytest.raises(ValueError, match="one FrameStats and one time per frame"):
        assemble(frames, stats[:2], [0.0] * 3, None, 0.0)


# --------------------------------------------------------------------------- launcher stream handle
@pytest.mark.parametrize("cls", [CudaPythonLauncher, PycudaLauncher])
def test_launchers_expose_their_stream_handle(cls: type) -> None:
    assert isinstance(inspect.getattr_static(Launcher, "stream_handle"), property)
    prop = inspect.getattr_static(cls, "stream_handle")
    assert isinstance(prop, property) and prop.fget is not None
    assert inspect.signature(prop.fget).return_annotation in (int, "int")
    # the TensorRT runner enqueues on it: no private stream of its own any more
    from agent.model import tensorrt_runner  # noqa: PLC0415

    assert "stream_handle" in inspect.getsource(tensorrt_runner.TensorRTRunner._execute)
    assert not hasattr(tensorrt_runner, "_Stream")


# --------------------------------------------------------------------------- labels
def test_labels_helper(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\n")
    assert read_labels(labels) == ("cat", "dog")
    assert resolve_labels(labels, None, 2, "m.onnx") == ("cat", "dog")
    assert resolve_labels(labels, ["a", "b", "c"], 3, "m.onnx") == ("a", "b", "c")  # given wins
    assert resolve_labels(None, None, 1000, "m.onnx") == ()
    assert resolve_labels(labels, None, None, "m.onnx") == ("cat", "dog")  # class count unknown
    with pytest.raises(ModelError) as err:
        resolve_labels(labels, None, 1000, "m.onnx")
    msg = str(err.value)
    assert f"labels file {labels} has 2 names but model m.onnx outputs 1000 classes" in msg
    assert "set model.labels to the labels file of this model (1000 class names" in msg
    with pytest.raises(ModelError, match="labels list has 3 names"):
        check_label_count(["a", "b", "c"], 2, source="labels list", model="m.onnx")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ModelError, match="is empty"):
        read_labels(tmp_path / "empty.txt")
    with pytest.raises(ModelError, match="cannot read labels file"):
        read_labels(tmp_path / "missing.txt")


# --------------------------------------------------------------------------- on a GPU
def _cuda_or_skip() -> cuda_stats.CudaStats:
    reason = cuda_stats.probe()
    if reason is not None:
        pytest.skip(f"CUDA backend unavailable: {reason}")
    return cuda_stats.CudaStats((4, 4))


def _assert_stats_match(a: FrameStats, b: FrameStats, what: str) -> None:
    """The CPU backend's parity tolerance: histogram exact, every float within 1e-6 relative."""
    assert (a.width, a.height) == (b.width, b.height), what
    assert np.array_equal(a.hist, b.hist), what
    for name in SCALAR_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-6, abs=0), f"{what}: {name}"
    np.testing.assert_allclose(a.tiles, b.tiles, rtol=1e-6, atol=0, equal_nan=True, err_msg=what)


@pytest.mark.gpu
def test_gpu_measurer_statistics_equal_cpu_on_video(test_data: Path) -> None:
    from agent.gpu_measure import GpuMeasurer  # noqa: PLC0415

    cuda = _cuda_or_skip()
    try:
        gpu = GpuMeasurer(cuda, None)
        host = Measurer(CpuStats((4, 4)), None)
        frames = _frames(_video_frames(test_data, 12), cameras=("a", "b"))  # two keys: diff_prev per camera
        for start in range(0, len(frames), 4):
            batch = frames[start : start + 4]
            got, got_bad = gpu.measure(batch)
            want, want_bad = host.measure(batch)
            assert got_bad == want_bad == []
            assert [m.frame for m in got] == batch
            for g, w in zip(got, want, strict=True):
                _assert_stats_match(g.stats, w.stats, f"frame {g.frame.seq}")
                assert g.output is None and set(g.latency_ms) == {"stats", "model"}
        gpu.close()
    finally:
        cuda.close()


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed")
def test_gpu_measurer_model_matches_onnxruntime_cpu(test_data: Path, tmp_path: Path) -> None:
    from agent.errors import BackendUnavailable  # noqa: PLC0415
    from agent.gpu_measure import GpuMeasurer  # noqa: PLC0415
    from agent.model.onnx_runner import OnnxRunner  # noqa: PLC0415
    from agent.model.tensorrt_runner import TensorRTRunner  # noqa: PLC0415

    cfg = ModelConfig(
        runtime="tensorrt",
        path=test_data / "models" / "squeezenet1.0_fp32_upcast.onnx",
        labels=test_data / "models" / "imagenet_classes_ILSVRC2012.txt",
        preprocess=SQUEEZENET_PRE,
        trt_cache_dir=tmp_path,
    )
    cuda = _cuda_or_skip()
    try:
        try:
            trt = TensorRTRunner(cfg, launcher=cuda.launcher)
        except BackendUnavailable as exc:
            pytest.skip(f"TensorRT runner unavailable here: {exc}")
        try:
            assert plan_measuring(cuda, trt, StatsConfig(backend="cuda"), cfg).zero_copy
            squeezer = FeatureSqueezer(trt, cfg.preprocess, "bits:5,median:3")
            measurer = build_measurer(cuda, trt, squeezer, StatsConfig(backend="cuda"), cfg)
            assert isinstance(measurer, GpuMeasurer)
            images = [np.asarray(cv2.imread(str(test_data / "images" / "photos" / p)), np.uint8) for p in PHOTOS]
            measured, bad = measurer.measure(_frames(images))
            assert bad == []
            cpu = OnnxRunner(cfg.model_copy(update={"runtime": "onnxruntime", "providers": ["cpu"]}))
            ref = FeatureSqueezer(cpu, cfg.preprocess, "bits:5,median:3").infer(images)
            for m, r, s in zip(measured, ref.outputs, ref.scores, strict=True):
                assert m.output is not None and m.output.top1 == r.top1 and m.output.label == r.label
                assert m.squeeze is not None and abs(m.squeeze - s) <= 2e-2
            measurer.close()
        finally:
            trt.close()
    finally:
        cuda.close()
