"""Fast CPU backend of the frame statistics: OpenCV primitives that are exact for integers.

Each OpenCV call used here is bit-exact with the definitions in docs/stats.md
(tests/test_stats_reference.py pins every claim, tests/test_stats_cpu.py the result):

* ``cvtColor(BGR2GRAY)`` is the 15-bit luma formula; ``cvtColor(BGR2HSV)[..., 1]`` is S.
* ``Laplacian(ksize=1)`` and ``sepFilter2D([1,-2,1], [1,-2,1])`` into CV_16S are exact at
  pixels whose 3x3 neighbourhood lies inside the array they are given; we give them each
  block's interior plus a one-pixel halo and read only the inside.
* A 256-bin ``calcHist`` of a block gives n, ΣY, ΣY², #dark, #clipped and the 32-bin
  histogram exactly; its float32 counts are exact below 2^24 pixels.
* ``sumElems`` and ``norm(NORM_L1)`` return doubles that are exact integer sums below 2^53.
* ``norm(NORM_L2SQR)`` of int16 accumulates the squares exactly, but OpenCV 5 returns
  ``norm(NORM_L2)**2`` (sqrt, then square: e.g. 2062052394.0000002). That is within
  3·2^-53 relative of the exact sum, so rounding it is exact while the sum is below 2^50.
  (``multiply`` into CV_32S + ``sumElems`` is exact too, but 4x slower.)

Blocks whose worst-case sums could pass those bounds use int64 NumPy sums instead.

Speed comes from locality: each tile is processed in blocks of at most ``_BLOCK_PX``
pixels, so the block's HSV, Laplacian and noise planes stay in the L2 cache between
the call that writes them and the calls that sum them (at 1080p, 4x4 grid, ~15% faster
than whole-frame planes; ~25% with a 16x16 grid).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from agent.frame import validate_bgr
from agent.stats.finish import RAW_FIELDS, finish, tile_bounds
from agent.stats.reference import check_grid
from agent.stats.types import CLIP_MIN, DARK_MAX, HIST_BINS, FrameStats

__all__ = ["DOUBLE_EXACT_LIMIT", "CpuStats", "cpu_raw"]

U8 = npt.NDArray[np.uint8]
I16 = npt.NDArray[np.int16]
I64 = npt.NDArray[np.int64]

#: Integers below this are exactly representable as float64 (OpenCV's sums return doubles).
DOUBLE_EXACT_LIMIT: int = 1 << 53
#: round(norm(NORM_L2SQR)) is exact below this (sqrt-then-square error < 0.5).
_L2SQR_EXACT_LIMIT: int = 1 << 50
#: calcHist counts are float32: exact below 2^24 per bin.
_HIST_EXACT_LIMIT: int = 1 << 24
#: Largest block (pixels): its BGR, HSV and int16 planes (~1.3 MB) fit a 2 MB L2 cache.
_BLOCK_PX: int = 1 << 17
_L_MAX = 1020  # max |Laplacian| of 8-bit luma
_V = np.arange(256, dtype=np.int64)  # (256,) luma code values
_V2 = _V * _V  # (256,)
_SECOND_DIFF = np.array([1.0, -2.0, 1.0], dtype=np.float32)  # Immerkær kernel = outer(d2, d2)
# (256, 5) weights: hist256 @ _LUMA_WEIGHTS = [n, ΣY, ΣY², #dark, #clipped].
_LUMA_WEIGHTS = np.stack(
    [np.ones_like(_V), _V, _V2, (_V <= DARK_MAX).astype(np.int64), (_V >= CLIP_MIN).astype(np.int64)], axis=1
)
# Where each block-level partial sum goes in RAW_FIELDS.
_LUMA_COLS = [RAW_FIELDS.index(k) for k in ("n", "sum_y", "sum_y2", "n_dark", "n_clip")]
_OTHER_COLS = [
    RAW_FIELDS.index(k)
    for k in ("sum_b", "sum_g", "sum_r", "sum_s", "sum_abs_diff", "m", "sum_l", "sum_l2", "sum_abs_k")
]


@dataclass(frozen=True, slots=True)
class _Frame:
    """One frame's inputs shared by its blocks."""

    image: U8  # (H, W, 3) uint8, C-contiguous
    y: U8  # (H, W) uint8 luma
    prev: U8 | None  # (H, W) uint8 previous luma, None when absent or of another size
    limit: int  # bound below which OpenCV's double-valued sums are trusted
    h: int
    w: int


def _hist256_into(row: I64, block_y: U8, use_cv: bool) -> None:
    """Write the 256-bin luma histogram of a block into ``row`` (256,) int64."""
    if use_cv:
        row[:] = np.asarray(cv2.calcHist([block_y], [0], None, [256], [0, 256]), dtype=np.float32).reshape(256)
    else:
        row[:] = np.bincount(block_y.ravel(), minlength=256)


def _colour_sums(f: _Frame, sl: tuple[slice, slice], n: int) -> list[int]:
    """[ΣB, ΣG, ΣR, ΣS, Σ|Y − Y_prev|] of a block of ``n`` pixels."""
    bgr = f.image[sl]  # (h, w, 3) uint8 view
    hsv = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV), dtype=np.uint8)  # (h, w, 3); S = [..., 1]
    if n * 255 < f.limit:
        b, g, r, _ = cv2.sumElems(bgr)
        s = cv2.sumElems(hsv)[1]
        d = cv2.norm(f.y[sl], f.prev[sl], cv2.NORM_L1) if f.prev is not None else 0.0
        return [int(b), int(g), int(r), int(s), int(d)]
    out = [int(v) for v in bgr.sum(axis=(0, 1), dtype=np.int64)]
    out.append(int(hsv[:, :, 1].sum(dtype=np.int64)))
    diff = 0
    if f.prev is not None:
        diff = int(np.abs(f.y[sl].astype(np.int16) - f.prev[sl].astype(np.int16)).sum(dtype=np.int64))
    return [*out, diff]


def _interior_sums(f: _Frame, box: tuple[int, int, int, int]) -> list[int]:
    """[m, ΣL, ΣL², Σ|K|] over the interior (centre) pixels of block ``box`` = (y0, y1, x0, x1)."""
    y0, y1, x0, x1 = box
    iy0, iy1, ix0, ix1 = max(y0, 1), min(y1, f.h - 1), max(x0, 1), min(x1, f.w - 1)
    if iy1 <= iy0 or ix1 <= ix0:
        return [0, 0, 0, 0]  # no interior pixel (also every frame with H < 3 or W < 3)
    m = (iy1 - iy0) * (ix1 - ix0)
    halo = f.y[iy0 - 1 : iy1 + 1, ix0 - 1 : ix1 + 1]  # (mh + 2, mw + 2) uint8, inside the frame
    lap_full = np.asarray(cv2.Laplacian(halo, cv2.CV_16S, ksize=1), dtype=np.int16)  # (mh + 2, mw + 2)
    k_full = np.asarray(cv2.sepFilter2D(halo, cv2.CV_16S, _SECOND_DIFF, _SECOND_DIFF), dtype=np.int16)
    lap, k = lap_full[1:-1, 1:-1], k_full[1:-1, 1:-1]  # (mh, mw): only pixels with all neighbours in the halo
    if m * _L_MAX * _L_MAX < min(f.limit, _L2SQR_EXACT_LIMIT):  # also bounds |ΣL| and Σ|K| ≤ m·2040
        return [m, int(cv2.sumElems(lap)[0]), round(cv2.norm(lap, cv2.NORM_L2SQR)), int(cv2.norm(k, cv2.NORM_L1))]
    lap64 = lap.astype(np.int64)  # (mh, mw) int64
    return [m, int(lap64.sum()), int((lap64 * lap64).sum()), int(np.abs(k.astype(np.int64)).sum())]


def _blocks(h: int, w: int, rows: int, cols: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(flat tile index, (y0, y1, x0, x1)) of every block: non-empty tiles cut into row bands of ≤ _BLOCK_PX."""
    rb, cb = tile_bounds(h, rows), tile_bounds(w, cols)
    out = []
    for i in range(rows):
        y0, y1 = int(rb[i]), int(rb[i + 1])
        for j in range(cols):
            x0, x1 = int(cb[j]), int(cb[j + 1])
            if y1 <= y0 or x1 <= x0:
                continue  # empty tile: its sums stay 0, finish() makes it NaN
            step = max(1, _BLOCK_PX // (x1 - x0))  # rows per block
            out += [(i * cols + j, (by0, min(by0 + step, y1), x0, x1)) for by0 in range(y0, y1, step)]
    return out


def cpu_raw(
    image: U8,
    prev_luma: U8 | None = None,
    grid: tuple[int, int] = (4, 4),
    *,
    exact_limit: int = DOUBLE_EXACT_LIMIT,
) -> tuple[I64, I64, U8]:
    """Raw per-tile sums (rows, cols, len(RAW_FIELDS)) int64, the (32,) histogram and the (H, W) luma.

    ``sum_abs_diff`` is taken against ``prev_luma`` when it has the frame's (H, W), else 0.
    ``exact_limit`` is the bound below which OpenCV's double-valued sums are trusted; a smaller
    value forces the int64 NumPy paths (tests use 0 to check those paths too).
    """
    image = np.ascontiguousarray(validate_bgr(image))
    rows, cols = check_grid(grid)
    y = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)  # (H, W)
    prev = prev_luma if prev_luma is not None and prev_luma.shape == y.shape else None
    h, w = int(y.shape[0]), int(y.shape[1])
    f = _Frame(image=image, y=y, prev=prev, limit=exact_limit, h=h, w=w)
    blocks = _blocks(h, w, rows, cols)
    hists = np.empty((len(blocks), 256), dtype=np.int64)  # (B, 256) per-block luma histograms
    other: list[list[int]] = []
    for k, (_, (y0, y1, x0, x1)) in enumerate(blocks):
        sl = (slice(y0, y1), slice(x0, x1))
        n = (y1 - y0) * (x1 - x0)
        _hist256_into(hists[k], y[sl], n < min(_HIST_EXACT_LIMIT, exact_limit))
        other.append(_colour_sums(f, sl, n) + _interior_sums(f, (y0, y1, x0, x1)))
    per_block = np.zeros((len(blocks), len(RAW_FIELDS)), dtype=np.int64)  # (B, 14)
    per_block[:, _LUMA_COLS] = hists @ _LUMA_WEIGHTS  # n, ΣY, ΣY², #dark, #clipped
    per_block[:, _OTHER_COLS] = np.array(other, dtype=np.int64).reshape(len(blocks), len(_OTHER_COLS))
    raw = np.zeros((rows * cols, len(RAW_FIELDS)), dtype=np.int64)
    np.add.at(raw, [t for t, _ in blocks], per_block)  # blocks -> their tiles
    hist256 = hists.sum(axis=0)  # (256,)
    hist = hist256.reshape(HIST_BINS, -1).sum(axis=1)  # (32,) int64: bin k = Y >> 3
    return raw.reshape(rows, cols, len(RAW_FIELDS)), hist, y


class CpuStats:
    """Fast, exact CPU statistics backend (StatsBackend protocol).

    Keeps the previous frame's luma per ``key`` for ``diff_prev``; a frame of another
    size than the previous one under the same key has ``diff_prev`` NaN. The per-key
    state is guarded by a lock, so one instance may serve several threads (frames of
    one key should still arrive in order).
    """

    name: str = "cpu"

    def __init__(self, grid: tuple[int, int] = (4, 4)) -> None:
        self.grid: tuple[int, int] = check_grid(grid)
        self._prev: dict[str, U8] = {}
        self._lock = threading.Lock()

    def compute(self, image: U8, key: str = "default") -> FrameStats:
        """Statistics of one BGR uint8 frame; raises FrameError on bad input."""
        image = validate_bgr(image)
        with self._lock:
            prev = self._prev.get(key)
        raw, hist, luma = cpu_raw(image, prev, self.grid)
        has_prev = prev is not None and prev.shape == luma.shape
        with self._lock:
            self._prev[key] = luma
        return finish(raw, hist, width=int(image.shape[1]), height=int(image.shape[0]), has_prev=has_prev)

    def reset(self, key: str | None = None) -> None:
        """Forget the previous frame of ``key`` (all keys when None)."""
        with self._lock:
            if key is None:
                self._prev.clear()
            else:
                self._prev.pop(key, None)
