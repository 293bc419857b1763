"""Turn raw integer sums into FrameStats: the one piece of float arithmetic every backend shares.

Backends (reference, CPU, CUDA) only have to produce, per tile, the integer sums in
RAW_FIELDS plus the 32-bin luma histogram; this module does the rest in double precision
from exact integers, so backend parity reduces to equality of integer sums.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from agent.stats.types import HIST_BINS, TILE_FIELDS, FrameStats

__all__ = ["RAW_FIELDS", "STATS_VERSION", "finish", "tile_bounds"]

#: Version of the statistics contract (docs/stats.md); profiles record it.
STATS_VERSION: int = 1

RAW_FIELDS: tuple[str, ...] = (
    "n",  # pixels in the tile
    "m",  # interior pixels (Laplacian / noise centres) in the tile
    "sum_y",
    "sum_y2",
    "sum_s",
    "sum_b",
    "sum_g",
    "sum_r",
    "n_dark",
    "n_clip",
    "sum_l",
    "sum_l2",
    "sum_abs_k",
    "sum_abs_diff",
)
_I = {name: i for i, name in enumerate(RAW_FIELDS)}
_SQRT_HALF_PI = math.sqrt(math.pi / 2.0)


def tile_bounds(length: int, parts: int) -> npt.NDArray[np.int64]:
    """Boundaries floor(i*length/parts) for i = 0..parts (docs/stats.md, Tiles)."""
    return (np.arange(parts + 1, dtype=np.int64) * length) // parts


def _var(count: int, s1: int, s2: int) -> float:
    if count == 0:
        return 0.0
    return float(count * s2 - s1 * s1) / float(count * count)


def _scalars(r: list[int], has_prev: bool) -> tuple[float, ...]:
    """(brightness, contrast, saturation, blur, noise, dark, clip, b, g, r, diff) from sums."""
    n, m = r[_I["n"]], r[_I["m"]]
    if n == 0:
        return (math.nan,) * 11
    var_y = _var(n, r[_I["sum_y"]], r[_I["sum_y2"]])
    blur = _var(m, r[_I["sum_l"]], r[_I["sum_l2"]])
    noise = _SQRT_HALF_PI * r[_I["sum_abs_k"]] / (6.0 * m) if m else 0.0
    diff = r[_I["sum_abs_diff"]] / n if has_prev else math.nan
    return (
        r[_I["sum_y"]] / n,
        math.sqrt(max(var_y, 0.0)),
        r[_I["sum_s"]] / n,
        blur,
        noise,
        r[_I["n_dark"]] / n,
        r[_I["n_clip"]] / n,
        r[_I["sum_b"]] / n,
        r[_I["sum_g"]] / n,
        r[_I["sum_r"]] / n,
        diff,
    )


# Positions of TILE_FIELDS inside the tuple returned by _scalars.
_TILE_PICK = (0, 1, 2, 3, 4, 5, 6, 10)
assert len(_TILE_PICK) == len(TILE_FIELDS)


def finish(
    raw: npt.NDArray[np.int64],
    hist: npt.NDArray[np.int64],
    width: int,
    height: int,
    has_prev: bool,
) -> FrameStats:
    """Build FrameStats from per-tile raw sums ``raw`` (rows, cols, len(RAW_FIELDS)).

    ``hist`` is the frame's 32-bin luma histogram. ``has_prev`` says whether
    ``sum_abs_diff`` is meaningful (a previous frame of the same size existed).
    """
    if raw.ndim != 3 or raw.shape[2] != len(RAW_FIELDS):
        raise ValueError(
            f"raw must have shape (rows, cols, {len(RAW_FIELDS)}), but got {raw.shape}"
        )
    if hist.shape != (HIST_BINS,):
        raise ValueError(f"hist must have shape ({HIST_BINS},), but got {hist.shape}")
    rows, cols = raw.shape[0], raw.shape[1]
    tiles = np.empty((rows, cols, len(TILE_FIELDS)), dtype=np.float64)
    for i in range(rows):
        for j in range(cols):
            vals = _scalars([int(v) for v in raw[i, j]], has_prev)
            tiles[i, j] = [vals[k] for k in _TILE_PICK]
    # Python ints: exact totals regardless of int64 headroom.
    total = [int(v) for v in raw.reshape(-1, len(RAW_FIELDS)).astype(object).sum(axis=0)]
    s = _scalars(total, has_prev)
    return FrameStats(
        width=width,
        height=height,
        brightness=s[0],
        contrast=s[1],
        saturation=s[2],
        blur=s[3],
        noise=s[4],
        dark_frac=s[5],
        clip_frac=s[6],
        mean_b=s[7],
        mean_g=s[8],
        mean_r=s[9],
        diff_prev=s[10],
        hist=hist.astype(np.int64, copy=True),
        tiles=tiles,
    )
