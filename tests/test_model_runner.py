"""ONNX Runtime runner on real models: SqueezeNet top-1 on photos, YOLOX-nano on real video, errors."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.errors import BackendUnavailable, ModelError
from agent.model.config import ModelConfig, PreprocessConfig
from agent.model.factory import load_model, runner_factory
from agent.model.onnx_runner import OnnxRunner, file_sha256
from agent.model.ort_gpu import gpu_providers

pytest.importorskip("onnxruntime")

CAFFE = PreprocessConfig(size=(224, 224), mean=(104.0, 117.0, 123.0))  # BGR, 0..255, no std


def _arr(x: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32]:
    """The array of an optional ModelOutput field, failing the test when it is missing."""
    assert x is not None
    return x


def _squeezenet_cfg(data: Path, **kw: object) -> ModelConfig:
    fields: dict[str, object] = {
        "path": data / "models" / "squeezenet1.0_fp32_upcast.onnx",
        "labels": data / "models" / "imagenet_classes_ILSVRC2012.txt",
        "providers": ["cpu"],
        "preprocess": CAFFE,
    }
    return ModelConfig.model_validate(fields | kw)


@pytest.fixture(scope="module")
def squeezenet(test_data: Path) -> OnnxRunner:
    return OnnxRunner(_squeezenet_cfg(test_data, batch_size=4))


def _photo(data: Path, name: str) -> npt.NDArray[np.uint8]:
    img = cv2.imread(str(data / "images" / "photos" / name), cv2.IMREAD_COLOR)
    assert img is not None, name
    return np.asarray(img, dtype=np.uint8)


@pytest.mark.parametrize(
    ("photo", "label"),
    [
        ("ortex_goldfish.jpg", "goldfish, Carassius auratus"),
        ("opencv_squirrel_cls.jpg", "fox squirrel, eastern fox squirrel, Sciurus niger"),
        ("ortex_wolves.jpg", "white wolf, Arctic wolf, Canis lupus tundrarum"),
        ("opencv_butterfly.jpg", "monarch, monarch butterfly, milkweed butterfly, Danaus plexippus"),
    ],
)
def test_squeezenet_top1_on_photos(squeezenet: OnnxRunner, test_data: Path, photo: str, label: str) -> None:
    out = squeezenet.infer([_photo(test_data, photo)])[0]
    assert out.label == label
    assert squeezenet.info.labels[out.top1] == label
    # the model outputs probabilities already: no second softmax, no logits
    assert out.logits is None
    assert out.probs is not None and out.probs.shape == (1000,)
    assert float(out.probs.sum()) == pytest.approx(1.0, abs=1e-5)
    assert out.confidence == pytest.approx(float(out.probs.max()))


def test_squeezenet_info(squeezenet: OnnxRunner, test_data: Path) -> None:
    info = squeezenet.info
    assert info.input_name == "data_0" and info.input_size_wh == (224, 224)
    assert info.num_classes == 1000 and len(info.labels) == 1000
    assert info.provider == "CPUExecutionProvider"
    assert info.sha256 == file_sha256(test_data / "models" / "squeezenet1.0_fp32_upcast.onnx")


def test_batch_of_three_equals_three_singles(squeezenet: OnnxRunner, test_data: Path) -> None:
    # the model has a fixed batch of 1: the runner loops; results must equal single calls
    frames = [_photo(test_data, n) for n in ("ortex_goldfish.jpg", "ortex_wolves.jpg", "opencv_fruits.jpg")]
    batch = squeezenet.infer(frames)
    singles = [squeezenet.infer([f])[0] for f in frames]
    assert len(batch) == 3
    for b, s in zip(batch, singles, strict=True):
        assert b.top1 == s.top1
        np.testing.assert_allclose(_arr(b.probs), _arr(s.probs), rtol=1e-5, atol=1e-7)


def test_fp16_model_agrees(test_data: Path) -> None:
    cfg = _squeezenet_cfg(test_data).model_copy(
        update={
            "path": test_data / "models" / "squeezenet1.0_fp16_winml.onnx",
            "preprocess": CAFFE.model_copy(update={"dtype": "float16"}),
        }
    )
    out = OnnxRunner(cfg).infer([_photo(test_data, "ortex_goldfish.jpg")])[0]
    assert out.label == "goldfish, Carassius auratus" and out.logits is None


def test_yolox_finds_persons_in_vtest(test_data: Path) -> None:
    cfg = ModelConfig(
        path=test_data / "models" / "yolox_nano_coco.onnx",
        kind="detector",
        labels=test_data / "models" / "coco80.names",
        providers=["cpu"],
        preprocess=PreprocessConfig(size=(416, 416), resize="letterbox", pad_value=114),
    )
    runner = OnnxRunner(cfg)
    assert runner.info.num_classes == 80
    cap = cv2.VideoCapture(str(test_data / "videos" / "opencv_vtest.avi"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 40)
    ok, frame = cap.read()
    cap.release()
    assert ok
    out = runner.infer([np.asarray(frame, dtype=np.uint8)])[0]
    det = out.detections
    assert det is not None and det.shape[1] == 6
    persons = det[det[:, 5] == 0]
    assert len(persons) >= 4
    h, w = frame.shape[:2]
    assert np.all(det[:, 0] >= 0) and np.all(det[:, 2] <= w) and np.all(det[:, 1] >= 0) and np.all(det[:, 3] <= h)
    assert np.all(det[:, 2] > det[:, 0]) and np.all(det[:, 3] > det[:, 1])
    # people in this camera are taller than wide
    assert np.median((persons[:, 3] - persons[:, 1]) / (persons[:, 2] - persons[:, 0])) > 1.5
    assert out.top1 == int(det[0, 5]) and out.confidence == pytest.approx(float(det[:, 4].max()))
    assert np.all(np.diff(det[:, 4]) <= 0)


def test_fallback_logged_once(test_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a provider order no other test uses, so this process has not logged this choice yet
    cfg = _squeezenet_cfg(test_data, providers=["cuda", "tensorrt", "cpu"], threads=2)
    with caplog.at_level(logging.INFO, logger="agent.model.onnx_runner"):
        first = OnnxRunner(cfg)
        second = OnnxRunner(cfg)
    assert first.provider == second.provider == first.info.provider
    msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model provider")]
    assert len(msgs) == 1  # once, not once per runner
    if first.provider == "CPUExecutionProvider":  # CPU-only onnxruntime build (the usual case here)
        assert msgs[0] == (
            "model provider: CPUExecutionProvider (cuda, tensorrt requested; not available in this onnxruntime build)"
        )


def test_missing_model_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError, match=str(missing)):
        OnnxRunner(ModelConfig(path=missing, providers=["cpu"]))


def test_not_an_onnx_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf\x00\xff" * 10)
    with pytest.raises(ModelError, match=r"cannot load ONNX model .*bad\.onnx"):
        OnnxRunner(ModelConfig(path=bad, providers=["cpu"]))


def test_size_mismatch_names_both_sizes(test_data: Path) -> None:
    cfg = _squeezenet_cfg(test_data).model_copy(update={"preprocess": PreprocessConfig(size=(96, 96))})
    with pytest.raises(
        ModelError, match=re.escape("model input 'data_0' expects 224x224 but preprocess.size is 96x96")
    ):
        OnnxRunner(cfg)


def test_layout_and_dtype_mismatch(test_data: Path) -> None:
    nhwc = _squeezenet_cfg(test_data).model_copy(update={"preprocess": CAFFE.model_copy(update={"layout": "nhwc"})})
    with pytest.raises(ModelError, match="wrong layout"):
        OnnxRunner(nhwc)
    fp16 = _squeezenet_cfg(test_data).model_copy(update={"preprocess": CAFFE.model_copy(update={"dtype": "float16"})})
    with pytest.raises(ModelError, match=re.escape("is float32 but preprocess.dtype is float16")):
        OnnxRunner(fp16)


def test_labels_count_mismatch(test_data: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(ModelError, match=r"2 names but model .* outputs 1000 classes"):
        OnnxRunner(_squeezenet_cfg(test_data).model_copy(update={"labels": labels}))


def test_unknown_output_name(test_data: Path) -> None:
    cfg = _squeezenet_cfg(test_data)
    cfg.output.name = "prob"
    with pytest.raises(ModelError, match=r"no output 'prob'.*softmaxout_1"):
        OnnxRunner(cfg)


def test_tensorrt_runtime_is_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        load_model(ModelConfig(runtime="tensorrt"))
    with pytest.raises(BackendUnavailable):
        runner_factory("tensorrt")(ModelConfig(), None)


def test_disabled_model_is_none() -> None:
    assert load_model(ModelConfig(enabled=False)) is None


def test_provider_mapping_with_a_gpu_build(tmp_path: Path) -> None:
    # what a onnxruntime-gpu build lists: TensorRT gets its engine cache options, order is kept
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    cache = tmp_path / "trt"
    entries = gpu_providers(ModelConfig(trt_cache_dir=cache, trt_fp16=True), gpu_build)
    assert [e if isinstance(e, str) else e[0] for e in entries] == gpu_build
    assert isinstance(entries[0], tuple)
    name, options = entries[0]
    assert name == "TensorrtExecutionProvider"
    assert options["trt_engine_cache_enable"] == "True" and options["trt_engine_cache_path"] == str(cache)
    assert options["trt_fp16_enable"] == "True"
    assert "user_compute_stream" not in options  # no shared launcher: the provider's own stream
    assert cache.is_dir()
    # a shared launcher's stream goes to both GPU providers
    shared = gpu_providers(ModelConfig(trt_cache_dir=cache), gpu_build, device_id=1, stream=0x5000)
    for entry in shared[:2]:
        assert isinstance(entry, tuple)
        assert entry[1]["user_compute_stream"] == str(0x5000) and entry[1]["device_id"] == "1"
    # a CPU-only build: unavailable providers are skipped (no ORT warning), CPU always last
    assert gpu_providers(ModelConfig(providers=["cuda"]), ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    cpu_first = gpu_providers(ModelConfig(providers=["cpu", "cuda"]), gpu_build)
    assert [e if isinstance(e, str) else e[0] for e in cpu_first] == ["CPUExecutionProvider", "CUDAExecutionProvider"]


def test_a_model_without_declared_preprocessing_is_warned_about(
    test_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SqueezeNet needs the Caffe mean: given only its path it runs, on the defaults, quietly wrong."""
    path = test_data / "models" / "squeezenet1.0_fp32_upcast.onnx"
    with caplog.at_level(logging.WARNING, logger="agent.model.factory"):
        load_model(ModelConfig(path=path, providers=["cpu"]))
    assert f"model {path} has no model.preprocess in the config: it gets the defaults (224x224, stretch, BGR" in (
        caplog.text)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agent.model.factory"):
        load_model(_squeezenet_cfg(test_data))  # declared: no warning
        load_model(ModelConfig(providers=["cpu"]))  # the reference model brings its own (sidecar)
    assert "has no model.preprocess" not in caplog.text
