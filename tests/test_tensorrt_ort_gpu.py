"""ONNX Runtime GPU options and the device-buffer I/O binding helper (agent.model.ort_gpu).

Everywhere: the provider options (cache folder, FP16, stream) and the I/O binding control flow,
run for real with ONNX Runtime's CPU provider on buffers addressed by pointer (the same calls
the CUDA provider takes with device pointers).
On a GPU with onnxruntime-gpu (marked gpu): CUDA-provider outputs match the CPU provider on
photos (top-1 equal, probabilities within FP16 tolerance).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.errors import ModelError
from agent.model.config import ModelConfig, PreprocessConfig
from agent.model.onnx_runner import import_onnxruntime
from agent.model.ort_gpu import DeviceIOBinding, cuda_ep_options, gpu_providers, tensorrt_ep_options, trt_cache_root
from agent.model.preprocess import preprocess

SQUEEZENET_PRE = PreprocessConfig(size=(224, 224), mean=(104.0, 117.0, 123.0))
PHOTOS = ("ortex_goldfish.jpg", "opencv_squirrel_cls.jpg", "ortex_wolves.jpg", "opencv_butterfly.jpg")


def test_tensorrt_ep_options(tmp_path: Path) -> None:
    cfg = ModelConfig(trt_cache_dir=tmp_path / "trt", trt_fp16=True)
    opts = tensorrt_ep_options(cfg, device_id=1, workspace_mib=256, stream=0x7F00)
    assert (tmp_path / "trt").is_dir()
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert opts["trt_timing_cache_path"] == str(tmp_path / "trt") and opts["trt_fp16_enable"] == "True"
    assert opts["device_id"] == "1" and opts["trt_max_workspace_size"] == str(256 << 20)
    assert opts["has_user_compute_stream"] == "1" and opts["user_compute_stream"] == str(0x7F00)
    assert all(isinstance(v, str) for v in opts.values())
    assert tensorrt_ep_options(ModelConfig(trt_cache_dir=tmp_path))["trt_fp16_enable"] == "False"
    assert trt_cache_root(ModelConfig()) == Path("~/.cache/edge-guard/trt").expanduser()


def test_tensorrt_ep_options_unwritable_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ModelError, match="cannot create TensorRT engine cache folder"):
        tensorrt_ep_options(ModelConfig(trt_cache_dir=blocker / "trt"))


def test_cuda_ep_options_and_provider_list(tmp_path: Path) -> None:
    assert cuda_ep_options() == {
        "device_id": "0",
        "cudnn_conv_algo_search": "HEURISTIC",
        "do_copy_in_default_stream": "1",
    }
    assert cuda_ep_options(stream=12345)["user_compute_stream"] == "12345"
    with pytest.raises(ValueError, match="CUDA stream handle"):
        cuda_ep_options(stream=0)
    cfg = ModelConfig(trt_cache_dir=tmp_path)
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    entries = gpu_providers(cfg, gpu_build)
    assert [e[0] if isinstance(e, tuple) else e for e in entries] == gpu_build
    assert isinstance(entries[1], tuple) and entries[1][1]["cudnn_conv_algo_search"] == "HEURISTIC"
    assert gpu_providers(cfg, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]  # CPU-only build


@pytest.fixture(scope="module")
def squeezenet(test_data: Path) -> Path:
    return test_data / "models" / "squeezenet1.0_fp32_upcast.onnx"


@pytest.fixture(scope="module")
def photos(test_data: Path) -> list[np.ndarray]:
    return [np.asarray(cv2.imread(str(test_data / "images" / "photos" / p)), dtype=np.uint8) for p in PHOTOS]


def test_io_binding_on_caller_buffers_matches_run(squeezenet: Path, photos: list[np.ndarray]) -> None:
    ort = import_onnxruntime()
    session = ort.InferenceSession(str(squeezenet), providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(preprocess(photos[:1], SQUEEZENET_PRE))  # (1, 3, 224, 224) float32
    expected = session.run(["softmaxout_1"], {"data_0": x})[0]
    out = np.zeros((1, 1000, 1, 1), dtype=np.float32)
    io = DeviceIOBinding(session, device_type="cpu")
    io.bind_input("data_0", x.ctypes.data, x.shape, np.float32)
    io.bind_output("softmaxout_1", out.ctypes.data, out.shape, np.float32)
    io.run()
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)  # written in place, by pointer
    io.clear()
    io.bind_input("data_0", x.ctypes.data, x.shape, np.float32)
    io.bind_output("softmaxout_1")  # ORT-allocated output
    io.run()
    np.testing.assert_allclose(io.outputs_to_host()[0], expected, rtol=1e-6, atol=1e-7)


def test_io_binding_errors(squeezenet: Path) -> None:
    ort = import_onnxruntime()
    session = ort.InferenceSession(str(squeezenet), providers=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="'cuda' or 'cpu'"):
        DeviceIOBinding(session, device_type="dml")
    io = DeviceIOBinding(session, device_type="cpu")
    with pytest.raises(ModelError, match="null"):
        io.bind_input("data_0", 0, (1, 3, 224, 224), np.float32)
    with pytest.raises(ModelError, match="needs its shape and dtype"):
        io.bind_output("softmaxout_1", 0x1000)
    wrong = np.zeros((1, 3, 100, 100), dtype=np.float32)
    io.bind_input("data_0", wrong.ctypes.data, wrong.shape, np.float32)
    io.bind_output("softmaxout_1")
    with pytest.raises(ModelError, match="inference with I/O binding failed"):
        io.run()


@pytest.mark.gpu
def test_ort_cuda_matches_cpu(squeezenet: Path, photos: list[np.ndarray], tmp_path: Path) -> None:
    ort = import_onnxruntime()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (CPU-only onnxruntime build)")
    cfg = ModelConfig(path=squeezenet, providers=["cuda", "cpu"], trt_cache_dir=tmp_path, preprocess=SQUEEZENET_PRE)
    session = ort.InferenceSession(str(squeezenet), providers=gpu_providers(cfg, ort.get_available_providers()))
    if session.get_providers()[0] != "CUDAExecutionProvider":
        pytest.skip(f"the CUDA provider did not initialise here (got {session.get_providers()})")
    cpu = ort.InferenceSession(str(squeezenet), providers=["CPUExecutionProvider"])
    for img in photos:
        x = preprocess([img], SQUEEZENET_PRE)
        p_gpu = session.run(None, {"data_0": x})[0].reshape(-1)
        p_cpu = cpu.run(None, {"data_0": x})[0].reshape(-1)
        assert int(p_gpu.argmax()) == int(p_cpu.argmax())
        assert float(np.abs(p_gpu - p_cpu).max()) <= 2e-2
