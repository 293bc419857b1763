"""NaN-ignoring reductions along an axis that give NaN, without a warning, where a slice is all NaN.

A tile the frame is too small to measure (a thumbnail or chroma block grid with fewer cells than
the tile grid) is NaN in every frame, so its column of calibration values is all NaN. NumPy's
``nanmedian``/``nanquantile`` return NaN there too, but also emit ``RuntimeWarning: All-NaN slice
encountered`` through the ``warnings`` module, which ``np.errstate`` does not silence and
``warnings.catch_warnings`` silences only by changing process-wide state (not thread-safe). These
fill such slices before reducing and put NaN back afterwards.

>>> x = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, np.nan]])
>>> nan_median(x).tolist()
[2.0, nan]
>>> nan_quantile(x, [0.0, 1.0]).tolist()
[[1.0, nan], [3.0, nan]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["nan_median", "nan_quantile"]

FloatArray = npt.NDArray[np.float64]


def _fill_empty(a: npt.ArrayLike, axis: int) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    x: FloatArray = np.asarray(a, dtype=np.float64)
    empty = np.asarray(np.isnan(x).all(axis=axis))
    if empty.any():
        x = np.where(np.expand_dims(empty, axis), 0.0, x)
    return x, empty


def nan_median(a: npt.ArrayLike, axis: int = 0) -> FloatArray:
    """Median along ``axis`` ignoring NaN; NaN where the slice has no number.

    Without any NaN it is ``np.median`` (the same numbers): ``np.nanmedian`` of a small array goes
    through masked arrays, ~10x slower, and the guard takes this median every frame.
    """
    plain: FloatArray = np.asarray(a, dtype=np.float64)
    if not np.isnan(plain).any():
        return np.asarray(np.median(plain, axis=axis), dtype=np.float64)
    x, empty = _fill_empty(plain, axis)
    out = np.asarray(np.nanmedian(x, axis=axis), dtype=np.float64)
    out[empty] = np.nan
    return out


def nan_quantile(a: npt.ArrayLike, q: float | Sequence[float], axis: int = 0) -> FloatArray:
    """Quantile(s) ``q`` along ``axis`` ignoring NaN (q's axis first, as NumPy); NaN where the slice has no number."""
    x, empty = _fill_empty(a, axis)
    out = np.asarray(np.nanquantile(x, q, axis=axis), dtype=np.float64)
    out[..., empty] = np.nan
    return out
