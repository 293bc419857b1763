"""The small launcher interface every GPU stage uses, and the choice between its two builds.

A launcher owns one CUDA device's primary context and one stream, and offers only what the
kernels here need: load a compiled module, get a function, launch it, allocate device and
pinned host memory, asynchronous copies and memsets on its stream, events, synchronize, and
the raw stream handle (``stream_handle``) for libraries that enqueue on it too (TensorRT's
``execute_async_v3``, ONNX Runtime's ``user_compute_stream``), so every stage of a frame is
ordered on one stream without extra synchronizations.

- ``cuda-python`` (default, :mod:`agent.gpu.cuda_python`): NVIDIA's official bindings;
  wheels that install everywhere, NVRTC included.
- ``pycuda`` (optional, :mod:`agent.gpu.pycuda_launcher`): for boxes that already have a
  built pycuda; imported only when chosen.

Both use the device's *primary* context, the one the CUDA runtime (CuPy, PyTorch,
TensorRT, ONNX Runtime) also uses, so device pointers can be shared between them.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from agent.errors import BackendUnavailable

__all__ = [
    "LAUNCHERS",
    "ArgKind",
    "DeviceInfo",
    "KernelArg",
    "Launcher",
    "LauncherName",
    "open_launcher",
]

LauncherName = Literal["cuda-python", "pycuda"]
#: Launcher name -> module providing ``open(device: int) -> Launcher``.
LAUNCHERS: dict[str, str] = {
    "cuda-python": "agent.gpu.cuda_python",
    "pycuda": "agent.gpu.pycuda_launcher",
}

ArgKind = Literal["ptr", "i32", "u32", "i64", "u64"]
#: One kernel argument: its C type and its value (device pointers as int).
KernelArg = tuple[ArgKind, int]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the kernels need to know about the device."""

    ordinal: int
    name: str
    major: int
    minor: int
    sm_count: int
    l2_bytes: int

    @property
    def arch(self) -> int:
        """Compute capability as one number, e.g. 90 for an H100/H200, 87 for Jetson Orin."""
        return self.major * 10 + self.minor


class Launcher(Protocol):
    """One device, its primary context, one stream. Methods that copy or launch are async on the stream."""

    name: str
    device: DeviceInfo

    @property
    def stream_handle(self) -> int:
        """The launcher's stream as a raw ``CUstream`` address (an int), for TensorRT and ONNX Runtime."""
        ...

    def make_current(self) -> None:
        """Bind the context to the calling thread (cheap; call at the top of each public entry)."""
        ...

    def load_module(self, image: bytes) -> object:
        """Load a cubin or NUL-terminated PTX image; returns an opaque module handle."""
        ...

    def get_function(self, module: object, name: str) -> object:
        """The ``extern "C"`` kernel ``name`` of ``module``."""
        ...

    def function_registers(self, function: object) -> int:
        """Registers per thread the loaded function uses (for logs and benchmarks)."""
        ...

    def launch(self, function: object, grid: int, block: int, args: Sequence[KernelArg], shared_bytes: int = 0) -> None:
        """Launch a 1-D grid of 1-D blocks on the stream."""
        ...

    def alloc(self, nbytes: int) -> int:
        """Device memory (cuMemAlloc: 256-byte aligned); returns the device address."""
        ...

    def free(self, ptr: int) -> None:
        """Free device memory from :meth:`alloc`."""
        ...

    def alloc_host(self, nbytes: int) -> npt.NDArray[np.uint8]:
        """Pinned (page-locked) host memory as a uint8 array, for fast async copies."""
        ...

    def free_host(self, array: npt.NDArray[np.uint8]) -> None:
        """Free memory from :meth:`alloc_host` (the array must not be used afterwards)."""
        ...

    def copy_htod(self, dst: int, src: npt.NDArray[np.generic]) -> None:
        """Copy a C-contiguous host array to device address ``dst``."""
        ...

    def copy_htod_2d(self, dst: int, dst_pitch: int, src: npt.NDArray[np.generic], row_bytes: int, rows: int) -> None:
        """Copy ``rows`` rows of ``row_bytes`` from a host array with row stride ``src.strides[0]``."""
        ...

    def copy_dtoh(self, dst: npt.NDArray[np.generic], src: int) -> None:
        """Copy ``dst.nbytes`` from device address ``src`` into a C-contiguous host array."""
        ...

    def copy_dtod(self, dst: int, src: int, nbytes: int) -> None:
        """Device-to-device copy."""
        ...

    def memset(self, dst: int, value: int, nbytes: int) -> None:
        """Set ``nbytes`` bytes at ``dst`` to ``value``."""
        ...

    def record_event(self) -> object:
        """Record a new event on the stream (for timing)."""
        ...

    def elapsed_ms(self, start: object, end: object) -> float:
        """Milliseconds between two recorded events (waits for ``end``)."""
        ...

    def synchronize(self) -> None:
        """Wait for everything queued on the stream."""
        ...

    def close(self) -> None:
        """Free the stream, modules and every allocation this launcher made."""
        ...


def open_launcher(name: str = "cuda-python", device: int = 0) -> Launcher:
    """Open launcher ``name`` on device ``device``; BackendUnavailable (with the reason) if it cannot."""
    module_name = LAUNCHERS.get(name)
    if module_name is None:
        raise BackendUnavailable(f"launcher must be one of {sorted(LAUNCHERS)}, but got {name!r}")
    module = importlib.import_module(module_name)
    launcher: Launcher = module.open_device(device)
    return launcher
