"""NV12 input for the CUDA statistics kernel: the NumPy reference of its exact conversion.

docs/stats.md ("NV12 input") defines how an NV12 frame feeds the statistics: luma from the
Y plane (limited range mapped to full range), B, G, R from the 4:2:0 chroma sample covering
the pixel with an exact integer BT.601 conversion (OpenCV's ``COLOR_YUV2BGR_NV12`` for
limited range, OpenCV's ``COLOR_YCrCb2BGR`` for full range). This module is the plain
NumPy statement of those definitions; the kernel (kernels/frame_stats_math.h) and its host
build are tested against it, and it against OpenCV.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.errors import FrameError
from agent.stats.finish import RAW_FIELDS, tile_bounds
from agent.stats.reference import check_grid, reference_laplacian, reference_noise_response, reference_saturation
from agent.stats.types import CLIP_MIN, DARK_MAX, HIST_BINS, HIST_SHIFT

__all__ = ["nv12_reference_raw", "nv12_to_planes", "raw_from_planes", "split_nv12", "yuv_to_bgr"]

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


def split_nv12(nv12: U8) -> tuple[U8, U8]:
    """Y plane (H, W) and interleaved UV plane (H/2, W) of an OpenCV-layout (H*3/2, W) buffer."""
    if not isinstance(nv12, np.ndarray) or nv12.dtype != np.uint8 or nv12.ndim != 2:
        got = f"{nv12.dtype} array of shape {nv12.shape}" if isinstance(nv12, np.ndarray) else type(nv12).__name__
        raise FrameError(f"NV12 frame must be a 2-D uint8 array of shape (H*3/2, W), but got {got}")
    rows, width = nv12.shape
    height = rows * 2 // 3
    if rows % 3 != 0 or height % 2 != 0 or width % 2 != 0 or height == 0:
        raise FrameError(f"NV12 frame must have shape (H*3/2, W) with H and W even and non-zero, but got {nv12.shape}")
    return nv12[:height], nv12[height:]


def yuv_to_bgr(y: I64, u: I64, v: I64, video_range: str) -> tuple[I64, U8]:
    """Statistics luma Y' and B, G, R (shape + (3,), uint8) of pixels with Y, U, V (int64 arrays).

    Limited range: OpenCV's ``COLOR_YUV2BGR_NV12`` arithmetic (20-bit fixed point) and
    Y' = clamp(((Y-16)·510 + 219) // 438). Full range: OpenCV's ``COLOR_YCrCb2BGR``
    arithmetic (14-bit) with Cr = V, Cb = U, and Y' = Y.
    """
    uu, vv = u - 128, v - 128
    if video_range == "limited":
        yy = np.maximum(y - 16, 0) * 1220542
        half = 1 << 19
        r = (yy + half + 1673527 * vv) >> 20
        g = (yy + half - 852492 * vv - 409993 * uu) >> 20
        b = (yy + half + 2116026 * uu) >> 20
        luma = np.clip(((y - 16) * 510 + 219) // 438, 0, 255)
    elif video_range == "full":
        half = 1 << 13
        b = y + ((uu * 29049 + half) >> 14)
        g = y + ((uu * -5636 + vv * -11698 + half) >> 14)
        r = y + ((vv * 22987 + half) >> 14)
        luma = y.copy()
    else:
        raise ValueError(f"video_range must be 'full' or 'limited', but got {video_range!r}")
    bgr = np.clip(np.stack([b, g, r], axis=-1), 0, 255).astype(np.uint8)
    return luma, bgr


def nv12_to_planes(y_plane: U8, uv_plane: U8, video_range: str) -> tuple[I64, U8]:
    """Statistics luma Y' (H, W) int64 and the BGR image (H, W, 3) uint8 of an NV12 frame.

    ``uv_plane`` holds ceil(H/2) rows of ceil(W/2) (U, V) pairs; pixel (y, x) uses pair
    (y >> 1, x >> 1). ``video_range`` is "limited" (Y 16..235) or "full".
    """
    h, w = y_plane.shape
    pairs = uv_plane.astype(np.int64).reshape(uv_plane.shape[0], -1, 2)  # (ceil(H/2), ceil(W/2), 2)
    u = np.repeat(np.repeat(pairs[:, :, 0], 2, axis=0), 2, axis=1)[:h, :w]  # (H, W)
    v = np.repeat(np.repeat(pairs[:, :, 1], 2, axis=0), 2, axis=1)[:h, :w]  # (H, W)
    return yuv_to_bgr(y_plane.astype(np.int64), u, v, video_range)


def raw_from_planes(luma: I64, bgr: U8, prev_luma: I64 | None, grid: tuple[int, int]) -> tuple[I64, I64]:
    """Raw per-tile sums (rows, cols, 14) and histogram (32,) from a luma plane and BGR pixels.

    The statistics of docs/stats.md with luma given rather than computed from B, G, R
    (``agent.stats.reference.reference_raw`` is this with luma = reference_luma(bgr)).
    ``prev_luma`` of the same shape enables ``sum_abs_diff``.
    """
    rows, cols = check_grid(grid)
    h, w = luma.shape
    b, g, r = (bgr[:, :, c].astype(np.int64) for c in range(3))  # (H, W) each
    s = reference_saturation(bgr)  # (H, W)
    lap = np.zeros((h, w), dtype=np.int64)
    k = np.zeros((h, w), dtype=np.int64)
    interior = np.zeros((h, w), dtype=np.int64)
    if h >= 3 and w >= 3:
        lap[1:-1, 1:-1] = reference_laplacian(luma)
        k[1:-1, 1:-1] = reference_noise_response(luma)
        interior[1:-1, 1:-1] = 1
    has_prev = prev_luma is not None and prev_luma.shape == luma.shape
    absdiff = np.abs(luma - prev_luma) if has_prev and prev_luma is not None else np.zeros_like(luma)
    rb, cb = tile_bounds(h, rows), tile_bounds(w, cols)
    raw = np.zeros((rows, cols, len(RAW_FIELDS)), dtype=np.int64)
    for i in range(rows):
        for j in range(cols):
            sl = (slice(int(rb[i]), int(rb[i + 1])), slice(int(cb[j]), int(cb[j + 1])))
            y, lp = luma[sl], lap[sl]
            raw[i, j] = [
                y.size,
                int(interior[sl].sum()),
                int(y.sum()),
                int((y * y).sum()),
                int(s[sl].sum()),
                int(b[sl].sum()),
                int(g[sl].sum()),
                int(r[sl].sum()),
                int((y <= DARK_MAX).sum()),
                int((y >= CLIP_MIN).sum()),
                int(lp.sum()),
                int((lp * lp).sum()),
                int(np.abs(k[sl]).sum()),
                int(absdiff[sl].sum()),
            ]
    hist = np.bincount((luma >> HIST_SHIFT).ravel(), minlength=HIST_BINS).astype(np.int64)  # (32,)
    return raw, hist


def nv12_reference_raw(
    y_plane: U8,
    uv_plane: U8,
    video_range: str,
    prev_luma: I64 | None = None,
    grid: tuple[int, int] = (4, 4),
) -> tuple[I64, I64, I64]:
    """(raw, hist, luma) of an NV12 frame by the definitions; pass ``luma`` as the next ``prev_luma``."""
    luma, bgr = nv12_to_planes(y_plane, uv_plane, video_range)
    raw, hist = raw_from_planes(luma, bgr, prev_luma, grid)
    return raw, hist, luma
