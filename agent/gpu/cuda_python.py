"""The default launcher: NVIDIA's cuda-python driver bindings (``cuda.bindings.driver``).

Imported only when a GPU stage is built. Every driver call goes through :func:`_ok`, which
turns a CUresult other than CUDA_SUCCESS into BackendUnavailable naming the call and the
error, so a broken device stops the CUDA backend with a readable message.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import BackendUnavailable
from agent.gpu.launcher import DeviceInfo, KernelArg

__all__ = ["CudaPythonLauncher", "driver_module", "open_device"]

_CTYPES: dict[str, type] = {
    "ptr": ctypes.c_void_p,
    "i32": ctypes.c_int32,
    "u32": ctypes.c_uint32,
    "i64": ctypes.c_int64,
    "u64": ctypes.c_uint64,
}


def driver_module() -> Any:
    """``cuda.bindings.driver``, or BackendUnavailable when cuda-python is missing."""
    try:
        from cuda.bindings import driver  # noqa: PLC0415 (optional dependency)
    except ImportError as exc:
        raise BackendUnavailable("cuda-python not installed (pip install 'edge-guard[gpu]')") from exc
    return driver


def _ok(result: Any, what: str) -> Any:
    """Unpack a cuda-python result tuple (err, *values); raise on err != CUDA_SUCCESS."""
    driver = driver_module()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(err)
        _, text = driver.cuGetErrorString(err)
        raise BackendUnavailable(
            f"{what} failed: {name.decode() if name else err} ({text.decode() if text else 'no description'})"
        )
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _init_driver(driver: Any) -> None:
    try:
        (err,) = driver.cuInit(0)
    except RuntimeError as exc:  # cuda.pathfinder: libcuda.so.1 is not on this machine
        raise BackendUnavailable("no NVIDIA driver (libcuda.so.1 not found)") from exc
    _ok((err,), "cuInit")


class CudaPythonLauncher:
    """Launcher on one device through cuda-python (see :class:`agent.gpu.launcher.Launcher`)."""

    name = "cuda-python"

    def __init__(self, ordinal: int = 0) -> None:
        driver = driver_module()
        self._drv = driver
        _init_driver(driver)
        count = _ok(driver.cuDeviceGetCount(), "cuDeviceGetCount")
        if not 0 <= ordinal < int(count):
            raise BackendUnavailable(f"CUDA device {ordinal} requested, but {count} device(s) visible")
        self._dev = _ok(driver.cuDeviceGet(ordinal), "cuDeviceGet")
        self._ctx = _ok(driver.cuDevicePrimaryCtxRetain(self._dev), "cuDevicePrimaryCtxRetain")
        self._lock = threading.Lock()
        self._allocs: set[int] = set()
        self._host: dict[int, int] = {}  # id(array) -> pinned address
        self._modules: list[Any] = []
        self._events: list[Any] = []
        self._closed = False
        self.make_current()
        attr = driver.CUdevice_attribute

        def get(a: Any) -> int:
            return int(_ok(driver.cuDeviceGetAttribute(a, self._dev), "cuDeviceGetAttribute"))

        raw_name = _ok(driver.cuDeviceGetName(256, self._dev), "cuDeviceGetName")
        self.device = DeviceInfo(
            ordinal=ordinal,
            name=raw_name.split(b"\0", 1)[0].decode(errors="replace"),
            major=get(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            minor=get(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
            sm_count=get(attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
            l2_bytes=get(attr.CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE),
        )
        self._stream = _ok(driver.cuStreamCreate(driver.CUstream_flags.CU_STREAM_NON_BLOCKING), "cuStreamCreate")

    @property
    def stream_handle(self) -> int:
        """The stream's ``CUstream`` address (what TensorRT and ONNX Runtime take as a stream)."""
        return int(self._stream)

    def make_current(self) -> None:
        """Bind the primary context to the calling thread."""
        _ok(self._drv.cuCtxSetCurrent(self._ctx), "cuCtxSetCurrent")

    def load_module(self, image: bytes) -> object:
        """Load a cubin or PTX image."""
        module = _ok(self._drv.cuModuleLoadData(image), "cuModuleLoadData")
        self._modules.append(module)
        return module

    def get_function(self, module: object, name: str) -> object:
        """The kernel ``name`` in ``module``."""
        return _ok(self._drv.cuModuleGetFunction(module, name.encode()), f"cuModuleGetFunction({name})")

    def function_registers(self, function: object) -> int:
        """Registers per thread of ``function``."""
        attr = self._drv.CUfunction_attribute.CU_FUNC_ATTRIBUTE_NUM_REGS
        return int(_ok(self._drv.cuFuncGetAttribute(attr, function), "cuFuncGetAttribute"))

    def launch(self, function: object, grid: int, block: int, args: Sequence[KernelArg], shared_bytes: int = 0) -> None:
        """Launch ``function`` on the stream."""
        values = tuple(v for _, v in args)
        types = tuple(_CTYPES[k] for k, _ in args)
        _ok(
            self._drv.cuLaunchKernel(function, grid, 1, 1, block, 1, 1, shared_bytes, self._stream, (values, types), 0),
            "cuLaunchKernel",
        )

    def alloc(self, nbytes: int) -> int:
        """Device memory; returns its address."""
        ptr = int(_ok(self._drv.cuMemAlloc(max(int(nbytes), 1)), f"cuMemAlloc({nbytes})"))
        self._allocs.add(ptr)
        return ptr

    def free(self, ptr: int) -> None:
        """Free device memory."""
        if ptr in self._allocs:
            self._allocs.discard(ptr)
            _ok(self._drv.cuMemFree(ptr), "cuMemFree")

    def alloc_host(self, nbytes: int) -> npt.NDArray[np.uint8]:
        """Pinned host memory as a uint8 array."""
        n = max(int(nbytes), 1)
        addr = int(_ok(self._drv.cuMemHostAlloc(n, 0), f"cuMemHostAlloc({n})"))
        array = np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(addr))
        self._host[id(array)] = addr
        return array

    def free_host(self, array: npt.NDArray[np.uint8]) -> None:
        """Free pinned host memory."""
        addr = self._host.pop(id(array), None)
        if addr is not None:
            _ok(self._drv.cuMemFreeHost(addr), "cuMemFreeHost")

    def copy_htod(self, dst: int, src: npt.NDArray[np.generic]) -> None:
        """Host array -> device."""
        _ok(self._drv.cuMemcpyHtoDAsync(dst, src.ctypes.data, src.nbytes, self._stream), "cuMemcpyHtoDAsync")

    def copy_htod_2d(self, dst: int, dst_pitch: int, src: npt.NDArray[np.generic], row_bytes: int, rows: int) -> None:
        """Pitched host rows -> pitched device rows."""
        drv = self._drv
        p = drv.CUDA_MEMCPY2D()
        p.srcMemoryType = drv.CUmemorytype.CU_MEMORYTYPE_HOST
        p.srcHost = src.ctypes.data
        p.srcPitch = int(src.strides[0])
        p.dstMemoryType = drv.CUmemorytype.CU_MEMORYTYPE_DEVICE
        p.dstDevice = dst
        p.dstPitch = dst_pitch
        p.WidthInBytes = row_bytes
        p.Height = rows
        _ok(drv.cuMemcpy2DAsync(p, self._stream), "cuMemcpy2DAsync")

    def copy_dtoh(self, dst: npt.NDArray[np.generic], src: int) -> None:
        """Device -> host array."""
        _ok(self._drv.cuMemcpyDtoHAsync(dst.ctypes.data, src, dst.nbytes, self._stream), "cuMemcpyDtoHAsync")

    def copy_dtod(self, dst: int, src: int, nbytes: int) -> None:
        """Device -> device."""
        _ok(self._drv.cuMemcpyDtoDAsync(dst, src, nbytes, self._stream), "cuMemcpyDtoDAsync")

    def memset(self, dst: int, value: int, nbytes: int) -> None:
        """Byte fill on the device."""
        _ok(self._drv.cuMemsetD8Async(dst, value, nbytes, self._stream), "cuMemsetD8Async")

    def record_event(self) -> object:
        """A new event recorded on the stream."""
        event = _ok(self._drv.cuEventCreate(0), "cuEventCreate")
        self._events.append(event)
        _ok(self._drv.cuEventRecord(event, self._stream), "cuEventRecord")
        return event

    def elapsed_ms(self, start: object, end: object) -> float:
        """Milliseconds from ``start`` to ``end``."""
        _ok(self._drv.cuEventSynchronize(end), "cuEventSynchronize")
        ms = float(_ok(self._drv.cuEventElapsedTime(start, end), "cuEventElapsedTime"))
        for ev in (start, end):
            if ev in self._events:
                self._events.remove(ev)
                self._drv.cuEventDestroy(ev)
        return ms

    def synchronize(self) -> None:
        """Wait for the stream."""
        _ok(self._drv.cuStreamSynchronize(self._stream), "cuStreamSynchronize")

    def close(self) -> None:
        """Release everything (errors while tearing down are ignored: the process may be exiting)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        drv = self._drv
        drv.cuCtxSetCurrent(self._ctx)
        drv.cuStreamSynchronize(self._stream)
        for ev in self._events:
            drv.cuEventDestroy(ev)
        for ptr in self._allocs:
            drv.cuMemFree(ptr)
        for addr in self._host.values():
            drv.cuMemFreeHost(addr)
        for module in self._modules:
            drv.cuModuleUnload(module)
        drv.cuStreamDestroy(self._stream)
        drv.cuDevicePrimaryCtxRelease(self._dev)
        self._events, self._allocs, self._host, self._modules = [], set(), {}, []


def open_device(ordinal: int = 0) -> CudaPythonLauncher:
    """The launcher module entry point used by :func:`agent.gpu.launcher.open_launcher`."""
    return CudaPythonLauncher(ordinal)
