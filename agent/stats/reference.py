"""Slow, obviously correct NumPy reference of the frame statistics (docs/stats.md).

Every quantity is computed straight from its definition with int64 arrays and an
explicit loop over tiles; no OpenCV. The fast backends are tested against this module
for exact equality of the raw integer sums and the histogram.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.frame import validate_bgr
from agent.stats.finish import RAW_FIELDS, finish, tile_bounds
from agent.stats.types import CLIP_MIN, DARK_MAX, HIST_BINS, HIST_SHIFT, FrameStats

__all__ = [
    "check_grid",
    "reference_laplacian",
    "reference_luma",
    "reference_noise_response",
    "reference_raw",
    "reference_saturation",
    "reference_stats",
]

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

#: Immerkær's noise-estimation kernel (docs/stats.md, "noise response K").
_IMMERKAER = ((1, -2, 1), (-2, 4, -2), (1, -2, 1))
#: Laplacian(ksize=1) kernel.
_LAPLACE = ((0, 1, 0), (1, -4, 1), (0, 1, 0))


def check_grid(grid: tuple[int, int]) -> tuple[int, int]:
    """Return ``grid`` as (rows, cols) if both are integers >= 1, else raise ValueError."""
    if len(grid) != 2 or not all(isinstance(v, int | np.integer) and v >= 1 for v in grid):
        raise ValueError(f"grid must be (rows, cols) with integers >= 1, but got {grid!r}")
    return int(grid[0]), int(grid[1])


def _channels(image: U8) -> tuple[I64, I64, I64]:
    """B, G, R planes as int64, each (H, W)."""
    bgr = image.astype(np.int64)  # (H, W, 3) int64
    return bgr[:, :, 0], bgr[:, :, 1], bgr[:, :, 2]


def reference_luma(image: U8) -> I64:
    """Luma Y = (3735·B + 19235·G + 9798·R + 16384) >> 15, (H, W) int64."""
    b, g, r = _channels(validate_bgr(image))
    return (3735 * b + 19235 * g + 9798 * r + 16384) >> 15


def reference_saturation(image: U8) -> I64:
    """HSV saturation S = (d·q(v) + 2048) >> 12, q(v) = (2·255·4096 + v) // (2v), (H, W) int64."""
    b, g, r = _channels(validate_bgr(image))
    v = np.maximum(np.maximum(b, g), r)  # (H, W) int64
    d = v - np.minimum(np.minimum(b, g), r)  # (H, W) int64
    q = np.zeros_like(v)
    lit = v > 0  # q(0) = 0
    q[lit] = (2 * 255 * 4096 + v[lit]) // (2 * v[lit])
    return (d * q + 2048) >> 12


def _correlate3x3(y: I64, kernel: tuple[tuple[int, int, int], ...]) -> I64:
    """Σ kernel[dy][dx]·Y[y-1+dy, x-1+dx] at every interior pixel, (H-2, W-2) int64."""
    h, w = y.shape
    if h < 3 or w < 3:
        return np.zeros((0, 0), dtype=np.int64)
    out = np.zeros((h - 2, w - 2), dtype=np.int64)
    for dy in range(3):
        for dx in range(3):
            out += kernel[dy][dx] * y[dy : dy + h - 2, dx : dx + w - 2]
    return out


def reference_laplacian(y: I64) -> I64:
    """Laplacian L of luma at interior pixels, (H-2, W-2) int64 ((0, 0) if H < 3 or W < 3)."""
    return _correlate3x3(y, _LAPLACE)


def reference_noise_response(y: I64) -> I64:
    """Immerkær response K of luma at interior pixels, (H-2, W-2) int64 ((0, 0) if H < 3 or W < 3)."""
    return _correlate3x3(y, _IMMERKAER)


def _embed_interior(inner: I64, h: int, w: int) -> I64:
    """Place an interior-pixel array at its centre positions in a zero (H, W) array."""
    full = np.zeros((h, w), dtype=np.int64)
    if inner.size:
        full[1:-1, 1:-1] = inner
    return full


def _tile_sums(planes: dict[str, I64], sl: tuple[slice, slice], has_prev: bool) -> list[int]:
    """The RAW_FIELDS sums of one tile, from full-size (H, W) int64 planes."""
    y, lap, k = planes["y"][sl], planes["lap"][sl], planes["k"][sl]
    sums = {
        "n": y.size,
        "m": int(planes["interior"][sl].sum()),
        "sum_y": int(y.sum()),
        "sum_y2": int((y * y).sum()),
        "sum_s": int(planes["s"][sl].sum()),
        "sum_b": int(planes["b"][sl].sum()),
        "sum_g": int(planes["g"][sl].sum()),
        "sum_r": int(planes["r"][sl].sum()),
        "n_dark": int((y <= DARK_MAX).sum()),
        "n_clip": int((y >= CLIP_MIN).sum()),
        "sum_l": int(lap.sum()),
        "sum_l2": int((lap * lap).sum()),
        "sum_abs_k": int(np.abs(k).sum()),
        "sum_abs_diff": int(planes["absdiff"][sl].sum()) if has_prev else 0,
    }
    return [sums[name] for name in RAW_FIELDS]


def reference_raw(image: U8, prev_image: U8 | None = None, grid: tuple[int, int] = (4, 4)) -> tuple[I64, I64]:
    """Per-tile raw sums (rows, cols, len(RAW_FIELDS)) int64 and the (32,) int64 luma histogram.

    ``sum_abs_diff`` uses ``prev_image`` only when it has the same shape; otherwise it is 0.
    """
    image = validate_bgr(image)
    rows, cols = check_grid(grid)
    h, w = image.shape[:2]
    y = reference_luma(image)  # (H, W) int64
    b, g, r = _channels(image)
    absdiff = y * 0  # (H, W) int64; stays 0 without a same-size previous frame
    has_prev = prev_image is not None and validate_bgr(prev_image).shape == image.shape
    if has_prev and prev_image is not None:
        absdiff = np.abs(y - reference_luma(prev_image))
    interior = np.zeros((h, w), dtype=np.int64)
    interior[1:-1, 1:-1] = 1  # centre pixels of L and K; empty when H < 3 or W < 3
    planes = {
        "y": y,
        "s": reference_saturation(image),
        "b": b,
        "g": g,
        "r": r,
        "interior": interior,
        "lap": _embed_interior(reference_laplacian(y), h, w),
        "k": _embed_interior(reference_noise_response(y), h, w),
        "absdiff": absdiff,
    }
    rb, cb = tile_bounds(h, rows), tile_bounds(w, cols)
    raw = np.zeros((rows, cols, len(RAW_FIELDS)), dtype=np.int64)
    for i in range(rows):
        for j in range(cols):
            sl = (slice(int(rb[i]), int(rb[i + 1])), slice(int(cb[j]), int(cb[j + 1])))
            raw[i, j] = _tile_sums(planes, sl, has_prev)
    hist = np.bincount((y >> HIST_SHIFT).ravel(), minlength=HIST_BINS).astype(np.int64)  # (32,)
    return raw, hist


def reference_stats(image: U8, prev_image: U8 | None = None, grid: tuple[int, int] = (4, 4)) -> FrameStats:
    """FrameStats of ``image`` by the reference definitions (``diff_prev`` against ``prev_image``)."""
    raw, hist = reference_raw(image, prev_image, grid)
    has_prev = prev_image is not None and prev_image.shape == image.shape
    return finish(raw, hist, width=int(image.shape[1]), height=int(image.shape[0]), has_prev=has_prev)
