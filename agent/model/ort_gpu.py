"""ONNX Runtime on the GPU: execution-provider options and device-buffer I/O binding.

ONNX Runtime GPU (the ``onnxruntime-gpu`` extra, exclusive with ``onnxruntime``) is the
alternative to the native TensorRT runner. Options follow the ONNX Runtime documentation:

- TensorRT EP (https://onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html):
  engine and timing caches under ``model.trt_cache_dir`` (default ``~/.cache/edge-guard/trt``,
  the folder :mod:`agent.model.onnx_runner` already uses; the native runner keeps its engines in
  its ``engines/`` subfolder), ``trt_fp16_enable`` from ``model.trt_fp16``, a workspace limit;
- CUDA EP (https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html):
  device, heuristic cuDNN algorithm search (the exhaustive default costs seconds at start-up on
  a Jetson), copies on the compute stream; both EPs can run on a caller's CUDA stream
  (``user_compute_stream``), e.g. the stream the GPU preprocessing kernel uses.

:class:`DeviceIOBinding` wraps ``InferenceSession.io_binding()`` (https://onnxruntime.ai/docs/
performance/tune-performance/iobinding.html) so inputs are read from, and outputs written to,
device buffers the caller owns: the GPU preprocessing writes the input tensor, ONNX Runtime
reads it in place, and only the small output comes back to the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import ModelError
from agent.model.config import ModelConfig, Provider

__all__ = [
    "DEFAULT_TRT_CACHE",
    "ORT_PROVIDER_NAMES",
    "DeviceIOBinding",
    "cuda_ep_options",
    "gpu_providers",
    "tensorrt_ep_options",
    "trt_cache_root",
]

#: config provider name -> ONNX Runtime execution provider name
ORT_PROVIDER_NAMES: dict[Provider, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}

#: Default TensorRT cache folder (ONNX Runtime's TensorRT EP writes here; native engines in engines/).
DEFAULT_TRT_CACHE = Path("~/.cache/edge-guard/trt")


def trt_cache_root(cfg: ModelConfig) -> Path:
    """``model.trt_cache_dir`` (expanded), default ``~/.cache/edge-guard/trt``."""
    return (cfg.trt_cache_dir or DEFAULT_TRT_CACHE).expanduser()


def _stream_options(stream: int | None) -> dict[str, str]:
    if stream is None:
        return {}
    if stream <= 0:
        raise ValueError(f"stream must be a CUDA stream handle (a positive address), but got {stream}")
    return {"has_user_compute_stream": "1", "user_compute_stream": str(int(stream))}


def tensorrt_ep_options(
    cfg: ModelConfig, *, device_id: int = 0, workspace_mib: int = 1024, stream: int | None = None
) -> dict[str, str]:
    """TensorRT EP options (strings, as ONNX Runtime's Python API takes them); creates the cache folder."""
    cache = trt_cache_root(cfg)
    try:  # building an engine takes minutes on a Jetson: without a cache folder every start pays it
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create TensorRT engine cache folder {cache}: {exc}") from exc
    return {
        "device_id": str(device_id),
        "trt_max_workspace_size": str(workspace_mib << 20),
        "trt_fp16_enable": "True" if cfg.trt_fp16 else "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        **_stream_options(stream),
    }


def cuda_ep_options(*, device_id: int = 0, stream: int | None = None) -> dict[str, str]:
    """CUDA EP options: device, heuristic cuDNN search, copies on the compute stream."""
    return {
        "device_id": str(device_id),
        "cudnn_conv_algo_search": "HEURISTIC",
        "do_copy_in_default_stream": "1",
        **_stream_options(stream),
    }


def gpu_providers(
    cfg: ModelConfig, available: Sequence[str], *, device_id: int = 0, stream: int | None = None
) -> list[str | tuple[str, dict[str, str]]]:
    """Providers with options in ``cfg.providers`` order, skipping those this build lacks; CPU last.

    ``stream``: a CUDA stream handle (e.g. ``Launcher.stream_handle`` of the statistics
    backend) the GPU providers then compute on, instead of a stream of their own.
    """
    entries: list[str | tuple[str, dict[str, str]]] = []
    for p in cfg.providers:
        name = ORT_PROVIDER_NAMES[p]
        # Passing a provider the build lacks makes ORT emit a Python warning; skip it here (the
        # runner reports the fallback itself).
        if name not in available:
            continue
        if p == "tensorrt":
            entries.append((name, tensorrt_ep_options(cfg, device_id=device_id, stream=stream)))
        elif p == "cuda":
            entries.append((name, cuda_ep_options(device_id=device_id, stream=stream)))
        else:
            entries.append(name)
    if "CPUExecutionProvider" not in [e if isinstance(e, str) else e[0] for e in entries]:
        entries.append("CPUExecutionProvider")  # ORT always falls back to CPU; make it explicit
    return entries


class DeviceIOBinding:
    """Input and outputs of a session bound to caller-owned buffers (``device_type`` "cuda" or "cpu").

    >>> io = DeviceIOBinding(session)                 # doctest: +SKIP
    >>> io.bind_input("data_0", in_ptr, (4, 3, 224, 224), np.float32)
    >>> io.bind_output("softmaxout_1", out_ptr, (4, 1000, 1, 1), np.float32)
    >>> io.run()                                      # reads in_ptr, writes out_ptr on the device

    An output bound without a pointer is allocated by ONNX Runtime on the device; read it back
    with :meth:`outputs_to_host`.
    """

    def __init__(self, session: Any, *, device_type: str = "cuda", device_id: int = 0) -> None:
        if device_type not in ("cuda", "cpu"):
            raise ValueError(f"device_type must be 'cuda' or 'cpu', but got {device_type!r}")
        self._session = session
        self._binding = session.io_binding()
        self.device_type = device_type
        self.device_id = device_id

    def bind_input(self, name: str, ptr: int, shape: Sequence[int], dtype: npt.DTypeLike) -> None:
        """Read input ``name`` (``shape``, ``dtype``, C-contiguous) from address ``ptr``."""
        if ptr == 0:
            raise ModelError(f"input {name!r}: buffer pointer is null")
        self._binding.bind_input(
            name, self.device_type, self.device_id, np.dtype(dtype).type, [int(d) for d in shape], int(ptr)
        )

    def bind_output(
        self, name: str, ptr: int | None = None, shape: Sequence[int] | None = None, dtype: npt.DTypeLike | None = None
    ) -> None:
        """Write output ``name`` to ``ptr`` (with its ``shape`` and ``dtype``), or to an ORT-owned device buffer."""
        if ptr is None:
            self._binding.bind_output(name, self.device_type, self.device_id)
            return
        if shape is None or dtype is None:
            raise ModelError(f"output {name!r}: a buffer pointer needs its shape and dtype")
        self._binding.bind_output(
            name, self.device_type, self.device_id, np.dtype(dtype).type, [int(d) for d in shape], int(ptr)
        )

    def run(self) -> None:
        """Run the session on the bound buffers (ONNX Runtime synchronizes its stream before returning)."""
        try:
            self._session.run_with_iobinding(self._binding)
        except Exception as exc:  # map ORT runtime failures at this boundary
            raise ModelError(f"inference with I/O binding failed: {type(exc).__name__}: {exc}") from exc

    def outputs_to_host(self) -> list[npt.NDArray[Any]]:
        """Copy every bound output to host arrays (for outputs ORT allocated)."""
        return [np.asarray(a) for a in self._binding.copy_outputs_to_cpu()]

    def clear(self) -> None:
        """Forget all bindings (before rebinding other buffers)."""
        self._binding.clear_binding_inputs()
        self._binding.clear_binding_outputs()
