"""CUDA statistics backend: one fused kernel launch per batch of frames (kernels/frame_stats.cu).

The kernel reduces every frame of a batch to the per-tile raw integer sums and the luma
histogram of docs/stats.md; :func:`agent.stats.finish.finish` does the float part, exactly
as for the CPU backends, so parity is equality of integers.

Resources are made once: the kernel is compiled per GPU architecture with NVRTC at
construction (cached on disk, :mod:`agent.gpu.nvrtc`), device buffers are allocated at the
first frame and only grow, the small descriptor and result buffers live in pinned host
memory, and everything runs on the launcher's one stream. The previous frame's luma stays
on the device per key, updated in place by the kernel, for ``diff_prev``.

Frames come from wherever they are: host BGR arrays (:meth:`CudaStats.compute`,
:meth:`CudaStats.compute_batch`), host NV12 buffers (:meth:`CudaStats.compute_nv12`), or a
frame already on the GPU (:meth:`CudaStats.compute_device`, for a decoder or TensorRT
preprocessing that shares the buffer).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import numpy.typing as npt

from agent.errors import BackendUnavailable, FrameError
from agent.frame import validate_bgr
from agent.gpu.launcher import Launcher, open_launcher
from agent.gpu.nv12 import split_nv12
from agent.gpu.statsabi import (
    BH_MAX,
    DESC_DTYPE,
    HIST_BINS,
    KERNEL_NAME,
    NFIELDS,
    THREADS,
    PixelFormat,
    VideoRange,
    fill_desc,
    plan_frame,
)
from agent.stats.finish import finish
from agent.stats.types import FrameStats

__all__ = ["KERNEL_FILE", "MAX_SIDE", "CudaStats", "check_frame", "probe"]

logger = logging.getLogger(__name__)

#: The kernel source, in the kernel folder (agent.gpu.nvrtc.kernel_dir()).
KERNEL_FILE = "frame_stats.cu"
#: Largest frame side accepted (keeps every in-kernel index in 32 bits).
MAX_SIDE = 1 << 15
_ALIGN = 256  # device row pitch: 16-byte vector loads need 16, 256 keeps rows on L2 sector groups


def _align(n: int, a: int = _ALIGN) -> int:
    return (n + a - 1) // a * a


def probe(device: int = 0) -> str | None:
    """None when the CUDA backend can run here, else a human-readable reason. Never raises."""
    try:
        return _probe(device)
    except Exception as exc:  # the contract is "never raises": any surprise is a reason
        return f"CUDA probe failed: {type(exc).__name__}: {exc}"


def _probe(device: int) -> str | None:
    from agent.gpu import cuda_python  # noqa: PLC0415 (keeps cuda-python out of import time)
    from agent.gpu.nvrtc import kernel_dir, nvrtc_version  # noqa: PLC0415

    try:
        driver = cuda_python.driver_module()
        cuda_python._init_driver(driver)
        count = int(cuda_python._ok(driver.cuDeviceGetCount(), "cuDeviceGetCount"))
        if count == 0:
            return "no CUDA device visible (check the driver and CUDA_VISIBLE_DEVICES)"
        if not 0 <= device < count:
            return f"CUDA device {device} requested, but {count} device(s) visible"
        nvrtc_version()
    except BackendUnavailable as exc:
        return str(exc)
    source = kernel_dir() / KERNEL_FILE
    if not source.is_file():
        return f"CUDA kernel source {source} not found (set EDGE_GUARD_KERNEL_DIR to the kernels/ folder)"
    return None


@dataclass
class _DeviceBuffer:
    """Device memory that only grows."""

    ptr: int = 0
    nbytes: int = 0

    def ensure(self, gpu: Launcher, nbytes: int) -> int:
        if nbytes > self.nbytes:
            if self.ptr:
                gpu.free(self.ptr)
            self.ptr, self.nbytes = gpu.alloc(nbytes), nbytes
        return self.ptr


@dataclass
class _LumaState:
    """Previous frame's luma of one key, on the device (pitch bytes per row)."""

    buf: _DeviceBuffer
    width: int = 0
    height: int = 0
    valid: bool = False


@dataclass(frozen=True)
class _Job:
    """One frame of a launch: where its pixels are (device), and how to get them there (host)."""

    key: str
    width: int
    height: int
    fmt: PixelFormat
    video_range: VideoRange
    src: int = 0  # device address; 0 = upload ``host`` into the batch slot
    pitch: int = 0
    chroma: int = 0
    chroma_pitch: int = 0
    host: npt.NDArray[np.uint8] | None = None  # BGR (H, W, 3) or NV12 (H*3/2, W)


def _check_size(width: int, height: int) -> None:
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise FrameError(f"frame sides must be in 1..{MAX_SIDE}, but got {width}x{height}")


def check_frame(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The BGR uint8 frame the kernel takes (``validate_bgr`` and sides up to MAX_SIDE), or FrameError."""
    img = validate_bgr(image)
    _check_size(img.shape[1], img.shape[0])
    return img


class CudaStats:
    """FrameStats on an NVIDIA GPU; implements :class:`agent.stats.types.StatsBackend`.

    ``grid`` is (rows, cols) of the tile grid, ``launcher`` "cuda-python" (default),
    "pycuda", or an opened :class:`agent.gpu.launcher.Launcher` (the backend takes it
    over and closes it). ``max_block_rows`` (1..64) trades block count against per-block work; the
    default suits batches, smaller values help a lone small frame fill a big GPU.
    ``kernel_image`` is a prebuilt cubin of kernels/frame_stats.cu for this device (no
    NVRTC needed); by default the kernel is compiled with NVRTC (cached).
    Not thread-safe per instance beyond a lock that serializes calls.
    """

    name = "cuda"

    def __init__(
        self,
        grid: tuple[int, int] = (4, 4),
        launcher: str | Launcher = "cuda-python",
        *,
        device: int = 0,
        max_block_rows: int = BH_MAX,
        kernel_image: bytes | None = None,
    ) -> None:
        rows, cols = grid
        if not (1 <= rows <= 16 and 1 <= cols <= 16):
            raise ValueError(f"grid must be (rows, cols) with each in 1..16, but got {grid}")
        if not 1 <= max_block_rows <= BH_MAX:
            raise ValueError(f"max_block_rows must be in 1..{BH_MAX}, but got {max_block_rows}")
        self.grid: tuple[int, int] = (int(rows), int(cols))
        self._max_block_rows = max_block_rows
        from agent.gpu.kernels import load_kernel  # noqa: PLC0415 (imports NVRTC bindings)

        self._gpu = open_launcher(launcher, device) if isinstance(launcher, str) else launcher
        try:
            self.kernel = load_kernel(self._gpu, KERNEL_FILE, KERNEL_NAME, image=kernel_image)
        except BaseException:
            self._gpu.close()
            raise
        self._lock = threading.Lock()
        self._slots: list[_DeviceBuffer] = []
        self._luma: dict[str, _LumaState] = {}
        self._capacity = 0
        self._descs_dev = _DeviceBuffer()
        self._out_dev = _DeviceBuffer()
        self._descs_host: npt.NDArray[np.void] = np.zeros(0, dtype=DESC_DTYPE)
        self._out_host: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._pinned: list[npt.NDArray[np.uint8]] = []
        self._closed = False

    # ------------------------------------------------------------------ public API
    @property
    def launcher(self) -> Launcher:
        """The launcher (device, stream) this backend runs on."""
        return self._gpu

    @property
    def max_block_rows(self) -> int:
        """Largest block height (rows) the planner uses."""
        return self._max_block_rows

    @property
    def out_words(self) -> int:
        """int64 words of results per frame: the raw sums of every tile, then the histogram."""
        return self.grid[0] * self.grid[1] * NFIELDS + HIST_BINS

    def compute(self, image: npt.NDArray[np.uint8], key: str = "default") -> FrameStats:
        """Statistics of one BGR uint8 frame (host memory)."""
        return self.compute_batch([image], [key])[0]

    def compute_batch(self, images: list[npt.NDArray[np.uint8]], keys: list[str]) -> list[FrameStats]:
        """Statistics of several host BGR frames (any sizes) in one kernel launch."""
        if len(images) != len(keys):
            raise ValueError(f"need one key per image, but got {len(images)} images and {len(keys)} keys")
        jobs = []
        for image, key in zip(images, keys, strict=True):
            img = check_frame(image)
            jobs.append(_Job(key, int(img.shape[1]), int(img.shape[0]), "bgr", "full", host=img))
        return self._run(jobs)

    def compute_nv12(
        self, nv12: npt.NDArray[np.uint8], key: str = "default", video_range: VideoRange = "limited"
    ) -> FrameStats:
        """Statistics of one host NV12 frame in OpenCV layout (H*3/2, W), H and W even."""
        y_plane, _ = split_nv12(nv12)
        height, width = y_plane.shape
        _check_size(width, height)
        return self._run([_Job(key, width, height, "nv12", video_range, host=nv12)])[0]

    def compute_device(
        self,
        ptr: int,
        pitch: int,
        width: int,
        height: int,
        *,
        fmt: PixelFormat = "bgr",
        key: str = "default",
        chroma: int = 0,
        chroma_pitch: int = 0,
        video_range: VideoRange = "full",
    ) -> FrameStats:
        """Statistics of a frame already in device memory of this launcher's context.

        ``ptr``/``pitch``: BGR pixels (3 bytes each) or the NV12 luma plane; for NV12 also
        ``chroma``/``chroma_pitch`` (interleaved U,V, ceil(H/2) rows). The producer must
        have finished writing the frame (synchronize its stream) before this call.
        Pointers and pitches that are multiples of 16 get 16-byte loads; others work too,
        byte by byte.
        """
        _check_size(width, height)
        row_bytes = width * 3 if fmt == "bgr" else width
        if ptr == 0 or pitch < row_bytes:
            raise FrameError(f"device frame needs ptr != 0 and pitch >= {row_bytes}, but got {ptr:#x}, {pitch}")
        if fmt == "nv12" and (chroma == 0 or chroma_pitch < (width + 1) // 2 * 2):
            raise FrameError(
                f"NV12 device frame needs chroma != 0 and chroma_pitch >= {(width + 1) // 2 * 2}, "
                f"but got {chroma:#x}, {chroma_pitch}"
            )
        job = _Job(key, width, height, fmt, video_range, ptr, pitch, chroma, chroma_pitch)
        return self._run([job])[0]

    def reset(self, key: str | None = None) -> None:
        """Forget the previous frame of ``key`` (all keys when None); device buffers are kept."""
        with self._lock:
            for k, state in self._luma.items():
                if key is None or k == key:
                    state.valid = False

    def close(self) -> None:
        """Free the device and pinned memory and the launcher (the object is unusable afterwards)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._gpu.close()

    def __enter__(self) -> CudaStats:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _run(self, jobs: list[_Job]) -> list[FrameStats]:
        with self._lock:
            if self._closed:
                raise BackendUnavailable("CudaStats is closed")
            self._gpu.make_current()
            out: list[FrameStats] = []
            group: list[_Job] = []
            for job in jobs:
                # The kernel updates each key's luma in place: a key twice in one launch
                # would race, so a repeated key starts the next launch.
                if any(j.key == job.key for j in group):
                    out += self._launch(group)
                    group = []
                group.append(job)
            if group:
                out += self._launch(group)
            return out

    def _reserve(self, n: int) -> None:
        """Descriptor and result buffers for ``n`` frames (grown, never shrunk)."""
        if n <= self._capacity:
            return
        cap = max(n, 2 * self._capacity, 4)
        for arr in self._pinned:
            self._gpu.free_host(arr)
        desc_raw = self._gpu.alloc_host(cap * DESC_DTYPE.itemsize)
        out_raw = self._gpu.alloc_host(cap * self.out_words * 8)
        self._pinned = [desc_raw, out_raw]
        self._descs_host = desc_raw.view(DESC_DTYPE)
        self._out_host = out_raw.view(np.int64)
        self._descs_dev.ensure(self._gpu, cap * DESC_DTYPE.itemsize)
        self._out_dev.ensure(self._gpu, cap * self.out_words * 8)
        self._capacity = cap

    def _upload(self, slot: int, job: _Job) -> tuple[int, int, int, int]:
        """Copy a host frame into batch slot ``slot``; returns (src, pitch, chroma, chroma_pitch)."""
        assert job.host is not None
        while len(self._slots) <= slot:
            self._slots.append(_DeviceBuffer())
        gpu, w, h = self._gpu, job.width, job.height
        if job.fmt == "bgr":
            img = job.host
            if img.strides[1:] != (3, 1) or img.strides[0] < 3 * w:  # a 2-D copy needs packed, forward rows
                img = np.ascontiguousarray(img)
            pitch = _align(3 * w)
            base = self._slots[slot].ensure(gpu, pitch * h)
            gpu.copy_htod_2d(base, pitch, img, 3 * w, h)
            return base, pitch, 0, 0
        nv12 = job.host if job.host.strides[1] == 1 and job.host.strides[0] >= w else np.ascontiguousarray(job.host)
        pitch = _align(w)
        chroma_off = pitch * h
        base = self._slots[slot].ensure(gpu, chroma_off + pitch * ((h + 1) // 2))
        gpu.copy_htod_2d(base, pitch, nv12[:h], w, h)
        gpu.copy_htod_2d(base + chroma_off, pitch, nv12[h:], w, (h + 1) // 2)
        return base, pitch, base + chroma_off, pitch

    def _luma_for(self, job: _Job) -> tuple[_LumaState, bool, int]:
        """The key's luma state (grown to fit), whether it holds a same-size previous frame, its pitch."""
        state = self._luma.get(job.key)
        if state is None:
            state = self._luma[job.key] = _LumaState(_DeviceBuffer())
        has_prev = state.valid and (state.width, state.height) == (job.width, job.height)
        pitch = _align(job.width)
        state.buf.ensure(self._gpu, pitch * job.height)
        state.valid = False  # until this launch has written it
        return state, has_prev, pitch

    def _launch(self, jobs: list[_Job]) -> list[FrameStats]:
        n = len(jobs)
        self._reserve(n)
        gpu, words = self._gpu, self.out_words
        descs = self._descs_host[:n]
        states: list[tuple[_LumaState, bool]] = []
        block_start = 0
        for i, job in enumerate(jobs):
            src, pitch, chroma, chroma_pitch = (
                self._upload(i, job) if job.host is not None else (job.src, job.pitch, job.chroma, job.chroma_pitch)
            )
            state, has_prev, luma_pitch = self._luma_for(job)
            states.append((state, has_prev))
            plan = plan_frame(job.width, job.height, self.grid, self._max_block_rows)
            out_ptr = self._out_dev.ptr + i * words * 8
            fill_desc(
                descs[i],
                src=src,
                pitch=pitch,
                width=job.width,
                height=job.height,
                grid=self.grid,
                plan=plan,
                block_start=block_start,
                raw_out=out_ptr,
                hist_out=out_ptr + (words - HIST_BINS) * 8,
                fmt=job.fmt,
                video_range=job.video_range,
                chroma=chroma,
                chroma_pitch=chroma_pitch,
                prev_luma=state.buf.ptr if has_prev else 0,
                luma_out=state.buf.ptr,
                luma_pitch=luma_pitch,
            )
            block_start += plan.block_count
        gpu.memset(self._out_dev.ptr, 0, n * words * 8)
        gpu.copy_htod(self._descs_dev.ptr, descs)
        gpu.launch(self.kernel.function, block_start, THREADS, [("ptr", self._descs_dev.ptr), ("i32", n)])
        results = self._out_host[: n * words]
        gpu.copy_dtoh(results, self._out_dev.ptr)
        gpu.synchronize()
        rows, cols = self.grid
        stats = []
        for i, (job, (state, has_prev)) in enumerate(zip(jobs, states, strict=True)):
            frame = results[i * words : (i + 1) * words]
            raw = frame[: words - HIST_BINS].reshape(rows, cols, NFIELDS)  # (rows, cols, 14) int64
            stats.append(finish(raw, frame[words - HIST_BINS :], job.width, job.height, has_prev))
            state.width, state.height, state.valid = job.width, job.height, True
        return stats
