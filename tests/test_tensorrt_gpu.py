"""The native TensorRT runner on a real GPU (marked gpu; skipped without TensorRT or a GPU).

Against ONNX Runtime on the CPU, on ../shared/data photos and video:
- squeezenet1.0_fp32_upcast.onnx: top-1 equal, probabilities within FP16 tolerance (FP16 and
  FP32/TF32 engines);
- yolox_nano_coco.onnx: every confident CPU detection found by the engine (same class, IoU >= 0.85);
- the engine cache is reused on the second start (no rebuild);
- squeezed companion slots (GPU preprocessing + squeeze) agree with the CPU squeezed canvases.

These have NOT run yet: TensorRT cannot be installed on the development, CI or GPU test machines.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.errors import BackendUnavailable
from agent.gpu.squeeze import parse_squeezers, squeezed_canvases
from agent.model.config import ModelConfig, OutputConfig, PreprocessConfig
from agent.model.onnx_runner import OnnxRunner
from agent.model.tensorrt_runner import TensorRTRunner

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed"),
]

U8 = npt.NDArray[np.uint8]
PHOTOS = ("ortex_goldfish.jpg", "opencv_squirrel_cls.jpg", "ortex_wolves.jpg", "opencv_butterfly.jpg")
PROB_TOL = 2e-2  # FP16 engine vs FP32 CPU, on probabilities


def _runner(cfg: ModelConfig) -> TensorRTRunner:
    try:
        return TensorRTRunner(cfg)
    except BackendUnavailable as exc:
        pytest.skip(f"TensorRT runner unavailable here: {exc}")


@pytest.fixture(scope="module")
def photos(test_data: Path) -> list[U8]:
    return [np.asarray(cv2.imread(str(test_data / "images" / "photos" / p)), dtype=np.uint8) for p in PHOTOS]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trt-cache")


def _squeezenet_cfg(test_data: Path, cache: Path, fp16: bool) -> ModelConfig:
    return ModelConfig(
        runtime="tensorrt",
        path=test_data / "models" / "squeezenet1.0_fp32_upcast.onnx",
        labels=test_data / "models" / "imagenet_classes_ILSVRC2012.txt",
        preprocess=PreprocessConfig(size=(224, 224), mean=(104.0, 117.0, 123.0)),
        trt_cache_dir=cache,
        trt_fp16=fp16,
    )


@pytest.fixture(scope="module", params=[True, False], ids=["fp16", "fp32"])
def squeezenet(
    request: pytest.FixtureRequest, test_data: Path, cache: Path
) -> Iterator[tuple[TensorRTRunner, ModelConfig]]:
    cfg = _squeezenet_cfg(test_data, cache, request.param)
    runner = _runner(cfg)
    yield runner, cfg
    runner.close()


def test_squeezenet_matches_onnxruntime_cpu(squeezenet: tuple[TensorRTRunner, ModelConfig], photos: list[U8]) -> None:
    runner, cfg = squeezenet
    cpu = OnnxRunner(cfg.model_copy(update={"runtime": "onnxruntime", "providers": ["cpu"]}))
    got = runner.infer(photos)
    ref = cpu.infer(photos)
    for g, r in zip(got, ref, strict=True):
        assert g.top1 == r.top1 and g.label == r.label
        assert g.probs is not None and r.probs is not None
        assert float(np.abs(g.probs - r.probs).max()) <= PROB_TOL


def test_engine_cache_reused_on_second_start(squeezenet: tuple[TensorRTRunner, ModelConfig]) -> None:
    first, cfg = squeezenet
    second = _runner(cfg)  # the "next start": same model, GPU, TensorRT, options
    try:
        assert "cached" in second.provider, second.provider
        assert first.info.sha256 == second.info.sha256
    finally:
        second.close()
    assert cfg.trt_cache_dir is not None
    assert list((cfg.trt_cache_dir / "engines").glob("*.engine"))


def test_squeezed_slots_match_cpu(squeezenet: tuple[TensorRTRunner, ModelConfig], photos: list[U8]) -> None:
    runner, cfg = squeezenet
    squeezers = parse_squeezers("bits:5,median:3")
    out = runner.infer_squeezed(photos, squeezers)
    cpu = OnnxRunner(cfg.model_copy(update={"runtime": "onnxruntime", "providers": ["cpu"]}))
    ref = cpu.infer(squeezed_canvases(photos, cfg.preprocess, squeezers))
    n = len(photos)
    for k, sq in enumerate(squeezers):
        for g, r in zip(out.squeezed[sq.name], ref[k * n : (k + 1) * n], strict=True):
            assert g.top1 == r.top1
            assert g.probs is not None and r.probs is not None
            assert float(np.abs(g.probs - r.probs).max()) <= PROB_TOL


def _iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def test_yolox_detections_match_onnxruntime_cpu(test_data: Path, cache: Path) -> None:
    cap = cv2.VideoCapture(str(test_data / "videos" / "opencv_vtest.avi"))
    frames: list[U8] = []
    while len(frames) < 4:
        ok, frame = cap.read()
        assert ok
        frames.append(np.asarray(frame, dtype=np.uint8))
    cap.release()
    cfg = ModelConfig(
        runtime="tensorrt",
        kind="detector",
        path=test_data / "models" / "yolox_nano_coco.onnx",
        labels=test_data / "models" / "coco80.names",
        preprocess=PreprocessConfig(size=(416, 416), resize="letterbox", pad_value=114),
        output=OutputConfig(score_threshold=0.3),
        trt_cache_dir=cache,
        trt_fp16=True,
    )
    runner = _runner(cfg)
    try:
        got = runner.infer(frames)
    finally:
        runner.close()
    ref = OnnxRunner(cfg.model_copy(update={"runtime": "onnxruntime", "providers": ["cpu"]})).infer(frames)
    for g, r in zip(got, ref, strict=True):
        assert g.detections is not None and r.detections is not None
        confident = r.detections[r.detections[:, 4] >= 0.5]
        assert len(confident) >= 1  # ~7 persons per vtest.avi frame
        for det in confident:
            same = g.detections[g.detections[:, 5] == det[5]]
            assert any(_iou(det, d) >= 0.85 for d in same), f"CPU detection {det} not found by TensorRT"
