"""Model-input preprocessing on the GPU (kernels/preprocess.cu), writing straight into the engine input.

The decoded BGR uint8 frame is uploaded once (:class:`FrameUploader`, or it is already on the
device); the statistics kernel (``CudaStats.compute_device``) and this kernel both read that
buffer, and this kernel writes the normalised tensor into the inference engine's input binding
(a device pointer), so the only host<->device traffic per frame is the frame itself and the
small results.

Everything the kernel does is declared by :class:`agent.model.config.PreprocessConfig` and
matches :mod:`agent.model.preprocess` (the CPU path):

- geometry from :func:`agent.model.preprocess.plan_resize` (the same function the CPU uses);
- ``interpolation: linear`` only: the kernel reproduces OpenCV's fixed-point INTER_LINEAR
  (see kernels/preprocess_math.h). Measured against ``cv2.resize`` 5.1 on x86-64 it is
  bit-exact; other OpenCV builds (e.g. ARM) round a few pixels differently, so the documented
  tolerance is **at most 1 level of 0..255 before normalisation** (|Δ| <= max_c |mul[c]| after
  it, plus one float16 ulp for float16 inputs). ``area``/``cubic``/``nearest`` stay on the CPU
  (:func:`unsupported_reason` says so);
- channel order, ``(x * scale - mean) / std`` as ``x * mul + add`` with the CPU's float32
  constants, NCHW/NHWC, float32/float16 (round to nearest even)/uint8;
- feature-squeezing companions (:mod:`agent.gpu.squeeze`) as extra slots of the same batch.

:func:`fill_descs` is pure NumPy: the host harness tests fill the same descriptors with host
pointers and run the host-compiled kernel arithmetic over them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.errors import BackendUnavailable, FrameError
from agent.frame import validate_bgr
from agent.gpu.launcher import Launcher
from agent.gpu.squeeze import Squeeze, slot_layout
from agent.model.config import PreprocessConfig
from agent.model.preprocess import Letterbox, plan_resize

__all__ = [
    "DESC_DTYPE",
    "DESC_FIELDS",
    "KERNEL_FILE",
    "KERNEL_NAME",
    "THREADS",
    "DeviceFrame",
    "FrameUploader",
    "GpuPreprocessor",
    "fill_descs",
    "normalization",
    "slot_bytes",
    "unsupported_reason",
]

logger = logging.getLogger(__name__)

KERNEL_FILE = "preprocess.cu"
KERNEL_NAME = "egp_preprocess"
#: Threads per block (EGP_THREADS).
THREADS = 256
_DTYPE_CODES = {"float32": 0, "float16": 1, "uint8": 2}
_ITEMSIZE = {"float32": 4, "float16": 2, "uint8": 1}
_PITCH_ALIGN = 128

#: (name, numpy type) of EgpDesc's fields in declaration order (112 bytes, no padding).
DESC_FIELDS: tuple[tuple[str, str] | tuple[str, str, int], ...] = (
    ("src", "<u8"),
    ("dst", "<u8"),
    ("src_pitch", "<i8"),
    ("scale_x", "<f8"),
    ("scale_y", "<f8"),
    ("mul", "<f4", 3),
    ("add", "<f4", 3),
    ("src_w", "<i4"),
    ("src_h", "<i4"),
    ("dst_w", "<i4"),
    ("dst_h", "<i4"),
    ("box_x", "<i4"),
    ("box_y", "<i4"),
    ("box_w", "<i4"),
    ("box_h", "<i4"),
    ("block_start", "<i4"),
    ("flags", "<i4"),
    ("pad_value", "<i4"),
    ("bits", "<i4"),
)
DESC_DTYPE = np.dtype(list(DESC_FIELDS))


@dataclass(frozen=True, slots=True)
class DeviceFrame:
    """A BGR uint8 frame in device memory: ``ptr`` to row 0, ``pitch`` bytes between rows."""

    ptr: int
    pitch: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.ptr == 0 or self.width < 1 or self.height < 1 or self.pitch < 3 * self.width:
            raise FrameError(
                f"device frame needs ptr != 0, width/height >= 1 and pitch >= 3 * width, but got "
                f"ptr={self.ptr:#x} {self.width}x{self.height} pitch={self.pitch}"
            )


def unsupported_reason(cfg: PreprocessConfig) -> str | None:
    """None when the GPU kernel implements ``cfg``, else why not (the CPU path is then used)."""
    if cfg.interpolation != "linear":
        return f"GPU preprocessing implements interpolation 'linear' only, config asks for {cfg.interpolation!r}"
    return None


def normalization(cfg: PreprocessConfig) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per-channel (mul, add) with ``x * mul + add == (x * scale - mean) / std``, in float32 as the CPU path."""
    std = np.asarray(cfg.std, dtype=np.float32)
    mul = np.float32(cfg.scale) / std
    add = -np.asarray(cfg.mean, dtype=np.float32) / std
    return mul.astype(np.float32), add.astype(np.float32)


def slot_bytes(cfg: PreprocessConfig) -> int:
    """Bytes of one model input (3 x W x H elements of ``cfg.dtype``)."""
    w, h = cfg.size
    return 3 * w * h * _ITEMSIZE[cfg.dtype]


def fill_descs(
    cfg: PreprocessConfig,
    frames: Sequence[DeviceFrame],
    dst: int,
    squeezers: Sequence[Squeeze] = (),
    *,
    slots: Sequence[tuple[int, Squeeze | None]] | None = None,
) -> tuple[npt.NDArray[np.void], int, list[Letterbox]]:
    """Descriptors of one launch: every frame plain, then squeezed (:func:`agent.gpu.squeeze.slot_layout`),
    or exactly ``slots`` ((frame index, squeezer or None) pairs) when given.

    Slot ``s`` writes ``slot_bytes(cfg)`` at ``dst + s * slot_bytes(cfg)``. Returns the
    descriptors, the grid size in blocks and each frame's geometry (for detector decoding).
    """
    reason = unsupported_reason(cfg)
    if reason is not None:
        raise BackendUnavailable(reason)
    if not frames:
        raise FrameError("preprocessing needs at least one frame, got an empty batch")
    tw, th = cfg.size
    geos = [plan_resize((f.width, f.height), cfg) for f in frames]
    mul, add = normalization(cfg)
    base_flags = (1 if cfg.channel_order == "rgb" else 0) | (2 if cfg.layout == "nhwc" else 0)
    base_flags |= _DTYPE_CODES[cfg.dtype] << 2
    layout = list(slots) if slots is not None else slot_layout(len(frames), squeezers)
    if not layout or any(not 0 <= i < len(frames) for i, _ in layout):
        raise FrameError(f"slots must name frames 0..{len(frames) - 1}, but got {[i for i, _ in layout]}")
    descs = np.zeros(len(layout), dtype=DESC_DTYPE)
    per_slot = (tw * th + THREADS - 1) // THREADS
    size = slot_bytes(cfg)
    for s, (i, sq) in enumerate(layout):
        f, geo = frames[i], geos[i]
        bw, bh = geo.resized_wh
        d = descs[s]
        d["src"], d["dst"], d["src_pitch"] = f.ptr, dst + s * size, f.pitch
        # cv::resize's own scale: 1 / (dsize / ssize) in double
        d["scale_x"], d["scale_y"] = 1.0 / (bw / f.width), 1.0 / (bh / f.height)
        d["mul"], d["add"] = mul, add
        d["src_w"], d["src_h"], d["dst_w"], d["dst_h"] = f.width, f.height, tw, th
        d["box_x"], d["box_y"], d["box_w"], d["box_h"] = geo.pad_x, geo.pad_y, bw, bh
        d["block_start"] = s * per_slot
        d["flags"] = base_flags | ((sq.code if sq is not None else 0) << 4)
        d["pad_value"] = cfg.pad_value
        d["bits"] = sq.param if sq is not None and sq.kind == "bits" else 0
    return descs, len(layout) * per_slot, geos


def _align(n: int) -> int:
    return (n + _PITCH_ALIGN - 1) // _PITCH_ALIGN * _PITCH_ALIGN


class FrameUploader:
    """Host BGR frames -> device buffers (one per batch position, grown, never shrunk).

    The returned :class:`DeviceFrame` s are valid until the next ``upload``; the copies are
    queued on the launcher's stream, so kernels queued after them on that stream see the data
    (other streams must synchronize first).
    """

    def __init__(self, launcher: Launcher) -> None:
        self._gpu = launcher
        self._bufs: list[tuple[int, int]] = []  # (ptr, nbytes)

    def upload(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[DeviceFrame]:
        """Copy ``images`` (HxWx3 uint8) to the device; returns where each one is."""
        frames: list[DeviceFrame] = []
        for k, image in enumerate(images):
            img = validate_bgr(image)
            h, w = img.shape[:2]
            if img.strides[1:] != (3, 1) or img.strides[0] < 3 * w:  # a 2-D copy needs packed rows
                img = np.ascontiguousarray(img)
            pitch = _align(3 * w)
            need = pitch * h
            if k == len(self._bufs):
                self._bufs.append((0, 0))
            ptr, nbytes = self._bufs[k]
            if need > nbytes:
                if ptr:
                    self._gpu.free(ptr)
                ptr, nbytes = self._gpu.alloc(need), need
                self._bufs[k] = (ptr, nbytes)
            self._gpu.copy_htod_2d(ptr, pitch, img, 3 * w, h)
            frames.append(DeviceFrame(ptr, pitch, w, h))
        return frames

    def close(self) -> None:
        """Free the device buffers."""
        for ptr, _ in self._bufs:
            if ptr:
                self._gpu.free(ptr)
        self._bufs = []


class GpuPreprocessor:
    """Runs kernels/preprocess.cu for a batch of device frames on ``launcher``'s stream.

    ``run(frames, dst, squeezers)`` fills ``len(frames) * (1 + len(squeezers))`` model inputs
    at ``dst`` (device memory of the same context, e.g. the TensorRT input binding) and
    returns each frame's geometry. It only queues work: synchronize the stream (or order
    later work on it) before reading ``dst``.
    """

    def __init__(self, cfg: PreprocessConfig, launcher: Launcher) -> None:
        reason = unsupported_reason(cfg)
        if reason is not None:
            raise BackendUnavailable(reason)
        from agent.gpu.kernels import load_kernel  # noqa: PLC0415 (NVRTC bindings only when used)

        self.cfg = cfg
        self._gpu = launcher
        self.kernel = load_kernel(launcher, KERNEL_FILE, KERNEL_NAME)
        self._lock = threading.Lock()
        self._capacity = 0
        self._descs_host: npt.NDArray[np.void] = np.zeros(0, dtype=DESC_DTYPE)
        self._pinned: npt.NDArray[np.uint8] | None = None
        self._descs_dev = 0

    @property
    def slot_bytes(self) -> int:
        """Bytes of one model input."""
        return slot_bytes(self.cfg)

    def _reserve(self, n: int) -> None:
        if n <= self._capacity:
            return
        cap = max(n, 2 * self._capacity, 8)
        if self._pinned is not None:
            self._gpu.free_host(self._pinned)
        if self._descs_dev:
            self._gpu.free(self._descs_dev)
        self._pinned = self._gpu.alloc_host(cap * DESC_DTYPE.itemsize)
        self._descs_host = self._pinned.view(DESC_DTYPE)
        self._descs_dev = self._gpu.alloc(cap * DESC_DTYPE.itemsize)
        self._capacity = cap

    def run(
        self,
        frames: Sequence[DeviceFrame],
        dst: int,
        squeezers: Sequence[Squeeze] = (),
        *,
        slots: Sequence[tuple[int, Squeeze | None]] | None = None,
    ) -> list[Letterbox]:
        """Queue the preprocessing of ``frames`` (plus squeezed slots, or exactly ``slots``) into ``dst``."""
        if dst == 0:
            raise FrameError("preprocessing needs a device destination, got a null pointer")
        descs, blocks, geos = fill_descs(self.cfg, frames, dst, squeezers, slots=slots)
        with self._lock:
            self._gpu.make_current()
            self._reserve(len(descs))
            host = self._descs_host[: len(descs)]
            # the previous launch may still read the pinned descriptors: wait before rewriting them
            self._gpu.synchronize()
            host[:] = descs
            self._gpu.copy_htod(self._descs_dev, host)
            self._gpu.launch(self.kernel.function, blocks, THREADS, [("ptr", self._descs_dev), ("i32", len(descs))])
        return geos

    def close(self) -> None:
        """Free the descriptor buffers (the launcher stays open: it belongs to the caller)."""
        with self._lock:
            if self._pinned is not None:
                self._gpu.free_host(self._pinned)
                self._pinned = None
            if self._descs_dev:
                self._gpu.free(self._descs_dev)
                self._descs_dev = 0
            self._capacity = 0
