"""The frame-statistics contract shared by every backend (reference, CPU, CUDA).

Definitions are in docs/stats.md; every backend must reproduce them exactly for
integer quantities (histogram, pixel counts) and to <=1e-6 relative otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "CLIP_MIN",
    "DARK_MAX",
    "HIST_BINS",
    "HIST_SHIFT",
    "SCALAR_FIELDS",
    "TILE_FIELDS",
    "FrameStats",
    "StatsBackend",
]

#: Luma value at or below which a pixel counts as dark.
DARK_MAX: int = 15
#: Luma value at or above which a pixel counts as clipped bright (glare).
CLIP_MIN: int = 250
#: Luma histogram: 32 bins of width 8 (bin = Y >> 3).
HIST_BINS: int = 32
HIST_SHIFT: int = 3

#: Scalar statistics of a whole frame, in this order in ``FrameStats.vector()``.
SCALAR_FIELDS: tuple[str, ...] = (
    "brightness",
    "contrast",
    "saturation",
    "blur",
    "noise",
    "dark_frac",
    "clip_frac",
    "mean_b",
    "mean_g",
    "mean_r",
    "diff_prev",
)

#: Per-tile statistics, the last axis of ``FrameStats.tiles``.
TILE_FIELDS: tuple[str, ...] = (
    "brightness",
    "contrast",
    "saturation",
    "blur",
    "noise",
    "dark_frac",
    "clip_frac",
    "diff_prev",
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class FrameStats:
    """Statistics of one BGR uint8 frame (see docs/stats.md for exact definitions).

    Units: brightness/contrast/saturation/mean_* and diff_prev are in 8-bit code
    values (0..255); blur is the variance of the integer Laplacian of luma; noise is
    Immerkær's sigma in code values; *_frac are fractions of pixels in [0, 1].
    ``diff_prev`` is NaN when there is no previous frame of the same size.
    ``hist`` has shape (HIST_BINS,) with integer pixel counts.
    ``tiles`` has shape (grid_rows, grid_cols, len(TILE_FIELDS)); an empty tile is NaN.
    """

    width: int
    height: int
    brightness: float
    contrast: float
    saturation: float
    blur: float
    noise: float
    dark_frac: float
    clip_frac: float
    mean_b: float
    mean_g: float
    mean_r: float
    diff_prev: float
    hist: IntArray
    tiles: FloatArray

    def __post_init__(self) -> None:
        if self.hist.shape != (HIST_BINS,):
            raise ValueError(f"hist must have shape ({HIST_BINS},), but got {self.hist.shape}")
        if self.tiles.ndim != 3 or self.tiles.shape[2] != len(TILE_FIELDS):
            raise ValueError(
                f"tiles must have shape (rows, cols, {len(TILE_FIELDS)}), "
                f"but got {self.tiles.shape}"
            )

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the tile grid."""
        return int(self.tiles.shape[0]), int(self.tiles.shape[1])

    def scalars(self) -> dict[str, float]:
        """The scalar statistics as a name -> value mapping (order of SCALAR_FIELDS)."""
        return {name: float(getattr(self, name)) for name in SCALAR_FIELDS}

    def vector(self) -> FloatArray:
        """The scalar statistics as a float64 vector, order SCALAR_FIELDS."""
        return np.array([getattr(self, name) for name in SCALAR_FIELDS], dtype=np.float64)

    def tile(self, field: str) -> FloatArray:
        """One per-tile statistic as a (rows, cols) array."""
        return self.tiles[:, :, TILE_FIELDS.index(field)]

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (NaN becomes None)."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else x

        out: dict[str, object] = {"width": self.width, "height": self.height}
        out.update({k: clean(v) for k, v in self.scalars().items()})
        out["hist"] = [int(v) for v in self.hist]
        return out


class StatsBackend(Protocol):
    """Computes FrameStats; keeps the previous luma per ``key`` for ``diff_prev``."""

    name: str
    grid: tuple[int, int]

    def compute(self, image: npt.NDArray[np.uint8], key: str = "default") -> FrameStats:
        """Statistics of one BGR uint8 frame; raises FrameError on bad input."""
        ...

    def reset(self, key: str | None = None) -> None:
        """Forget the previous frame of ``key`` (all keys when None)."""
        ...
