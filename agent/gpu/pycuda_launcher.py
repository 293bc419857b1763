"""Optional launcher through pycuda, for boxes that already have a built pycuda.

pycuda is source-only and builds only where a CUDA toolkit and driver are installed
(../shared/ENVIRONMENT.md), so it is never a dependency: this module is imported only when
``stats.launcher: pycuda`` is configured. It follows pycuda's documented driver API
(``Device.retain_primary_context``, ``module_from_buffer``, ``Function.prepare`` /
``prepared_async_call``, ``memcpy_*_async``, ``Memcpy2D``, ``Event``).

Not yet run against a real pycuda: neither the development machines nor the GPU test
machines have one (docs/cuda.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import BackendUnavailable
from agent.gpu.launcher import DeviceInfo, KernelArg

__all__ = ["PycudaLauncher", "open_device"]

_ARG_CODES = {"ptr": "P", "i32": "i", "u32": "I", "i64": "q", "u64": "Q"}
_NP_TYPES: dict[str, Any] = {"ptr": np.uintp, "i32": np.int32, "u32": np.uint32, "i64": np.int64, "u64": np.uint64}


def _pycuda_driver() -> Any:
    try:
        import pycuda.driver as cuda  # noqa: PLC0415 (optional, chosen by config)
    except ImportError as exc:
        raise BackendUnavailable(
            "launcher 'pycuda' chosen but pycuda is not importable "
            f"({exc}); install it with pip install 'edge-guard[pycuda]' on a machine with the CUDA "
            "toolkit and driver, or set stats.launcher to 'cuda-python'"
        ) from exc
    return cuda


class PycudaLauncher:
    """Launcher on one device through pycuda (see :class:`agent.gpu.launcher.Launcher`)."""

    name = "pycuda"

    def __init__(self, ordinal: int = 0) -> None:
        cuda = _pycuda_driver()
        self._cuda = cuda
        try:
            cuda.init()
            count = cuda.Device.count()
            if not 0 <= ordinal < count:
                raise BackendUnavailable(f"CUDA device {ordinal} requested, but {count} device(s) visible")
            dev = cuda.Device(ordinal)
            self._ctx = dev.retain_primary_context()
            self._ctx.push()
            attr = cuda.device_attribute
            major, minor = dev.compute_capability()
            self.device = DeviceInfo(
                ordinal=ordinal,
                name=str(dev.name()),
                major=int(major),
                minor=int(minor),
                sm_count=int(dev.get_attribute(attr.MULTIPROCESSOR_COUNT)),
                l2_bytes=int(dev.get_attribute(attr.L2_CACHE_SIZE)),
            )
            self._stream = cuda.Stream()
        except cuda.Error as exc:
            raise BackendUnavailable(f"pycuda could not open CUDA device {ordinal}: {exc}") from exc
        self._allocs: dict[int, Any] = {}
        self._host: dict[int, Any] = {}
        self._prepared: dict[tuple[int, str], Any] = {}
        self._modules: list[Any] = []

    @property
    def stream_handle(self) -> int:
        """The stream's ``CUstream`` address (``pycuda.driver.Stream.handle``)."""
        return int(self._stream.handle)

    def make_current(self) -> None:
        """pycuda keeps a per-thread context stack: push ours when another is current."""
        if self._cuda.Context.get_current() != self._ctx:
            self._ctx.push()

    def load_module(self, image: bytes) -> object:
        """Load a cubin or PTX image."""
        module = self._cuda.module_from_buffer(image)
        self._modules.append(module)
        return module

    def get_function(self, module: object, name: str) -> object:
        """The kernel ``name`` in ``module``."""
        return module.get_function(name)  # type: ignore[attr-defined]

    def function_registers(self, function: object) -> int:
        """Registers per thread of ``function``."""
        return int(function.num_regs)  # type: ignore[attr-defined]

    def launch(self, function: object, grid: int, block: int, args: Sequence[KernelArg], shared_bytes: int = 0) -> None:
        """Launch ``function`` on the stream."""
        sig = "".join(_ARG_CODES[k] for k, _ in args)
        key = (id(function), sig)
        if key not in self._prepared:
            self._prepared[key] = function.prepare(sig)  # type: ignore[attr-defined]
        prepared = self._prepared[key]
        values = [_NP_TYPES[k](v) for k, v in args]
        prepared.prepared_async_call((grid, 1), (block, 1, 1), self._stream, *values, shared_size=shared_bytes)

    def alloc(self, nbytes: int) -> int:
        """Device memory; returns its address."""
        allocation = self._cuda.mem_alloc(max(int(nbytes), 1))
        ptr = int(allocation)
        self._allocs[ptr] = allocation
        return ptr

    def free(self, ptr: int) -> None:
        """Free device memory."""
        allocation = self._allocs.pop(ptr, None)
        if allocation is not None:
            allocation.free()

    def alloc_host(self, nbytes: int) -> npt.NDArray[np.uint8]:
        """Pinned host memory."""
        array: npt.NDArray[np.uint8] = self._cuda.pagelocked_empty(max(int(nbytes), 1), np.uint8)
        self._host[id(array)] = array
        return array

    def free_host(self, array: npt.NDArray[np.uint8]) -> None:
        """Drop pinned memory (pycuda frees it with the array's base)."""
        self._host.pop(id(array), None)

    def copy_htod(self, dst: int, src: npt.NDArray[np.generic]) -> None:
        """Host array -> device."""
        self._cuda.memcpy_htod_async(dst, src, self._stream)

    def copy_htod_2d(self, dst: int, dst_pitch: int, src: npt.NDArray[np.generic], row_bytes: int, rows: int) -> None:
        """Pitched host rows -> pitched device rows."""
        m = self._cuda.Memcpy2D()
        m.set_src_host(src)
        m.src_pitch = int(src.strides[0])
        m.set_dst_device(dst)
        m.dst_pitch = dst_pitch
        m.width_in_bytes = row_bytes
        m.height = rows
        m(self._stream)

    def copy_dtoh(self, dst: npt.NDArray[np.generic], src: int) -> None:
        """Device -> host array."""
        self._cuda.memcpy_dtoh_async(dst, src, self._stream)

    def copy_dtod(self, dst: int, src: int, nbytes: int) -> None:
        """Device -> device."""
        self._cuda.memcpy_dtod_async(dst, src, nbytes, self._stream)

    def memset(self, dst: int, value: int, nbytes: int) -> None:
        """Byte fill on the device."""
        self._cuda.memset_d8_async(dst, value, nbytes, self._stream)

    def record_event(self) -> object:
        """A new event recorded on the stream."""
        event = self._cuda.Event()
        event.record(self._stream)
        return event

    def elapsed_ms(self, start: object, end: object) -> float:
        """Milliseconds from ``start`` to ``end``."""
        end.synchronize()  # type: ignore[attr-defined]
        return float(start.time_till(end))  # type: ignore[attr-defined]

    def synchronize(self) -> None:
        """Wait for the stream."""
        self._stream.synchronize()

    def close(self) -> None:
        """Free allocations and pop the context."""
        self._stream.synchronize()
        for allocation in self._allocs.values():
            allocation.free()
        self._allocs.clear()
        self._host.clear()
        self._prepared.clear()
        self._modules.clear()
        self._ctx.pop()


def open_device(ordinal: int = 0) -> PycudaLauncher:
    """The launcher module entry point used by :func:`agent.gpu.launcher.open_launcher`."""
    return PycudaLauncher(ordinal)
