"""Robust location and scatter (an MCD-like estimator in NumPy) and robust distances.

Fit on clean calibration frames (cross-fitted per block at calibration, calibrate.py):

1. Start from the coordinate-wise median and MAD (scaled by 1.4826, floored at the
   features' ``floor_sd``) and keep the h = max(p + 1, ceil(support * n)) points closest in
   that diagonal metric.
2. C-steps (Rousseeuw & Van Driessen 1999): mean m and covariance C of the h points (plus the
   ridge diag(floor_sd^2), so C stays invertible when the subset is degenerate),
   Mahalanobis d_i^2 = (x_i - m)^T C^-1 (x_i - m) of all points, keep the h smallest;
   repeat until the subset no longer changes (each step cannot increase det C).
3. Consistency: scale C so that median(d^2) equals the chi-square(p) median, then one
   reweighting step with the points d^2 <= chi2_{p, 0.975}.
4. Regularise: C <- (1 - lam) C + lam diag(C) + diag(floor_sd^2), lam = min(1/2, p/h), so C is
   invertible even when a feature is constant on clean frames (e.g. clip share 0).

With fewer than 2(p + 1) rows only step 1 is done: a diagonal scatter from the floored MADs.

The distance d(x) = sqrt((x - m)^T P (x - m)) with P = C^-1 is then turned into a p-value
conformally, so the chi-square approximations above only shape the score, never the
false-alarm rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.scoring.nanstats import nan_median

__all__ = ["RobustGaussian", "chi2_quantile", "fit_robust_gaussian"]

FloatArray = npt.NDArray[np.float64]

_MAD_TO_SD = 1.4826


def chi2_quantile(q: float, dof: int) -> float:
    """Wilson-Hilferty approximation of the chi-square(dof) q-quantile (no SciPy)."""
    z = _normal_quantile(q)
    a = 2.0 / (9.0 * dof)
    return float(dof * (1.0 - a + z * math.sqrt(a)) ** 3)


def _normal_quantile(q: float) -> float:
    # Acklam-free: invert erf by Newton on the standard normal CDF (a few steps suffice).
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), but got {q}")
    x = 0.0
    for _ in range(50):
        cdf = 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))
        pdf = math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        step = (cdf - q) / max(pdf, 1e-300)
        x -= step
        if abs(step) < 1e-12:
            break
    return x


@dataclass(frozen=True, slots=True)
class RobustGaussian:
    """Robust location ``location`` (p,) and scatter ``scatter`` (p, p) with its inverse."""

    location: FloatArray
    scatter: FloatArray
    precision: FloatArray

    @classmethod
    def from_arrays(cls, location: npt.ArrayLike, scatter: npt.ArrayLike) -> RobustGaussian:
        """Rebuild from stored location and scatter (e.g. a loaded profile); validates shapes."""
        loc = np.asarray(location, dtype=np.float64)
        cov = np.asarray(scatter, dtype=np.float64)
        p = loc.shape[0]
        if loc.ndim != 1 or cov.shape != (p, p):
            raise ValueError(f"scatter must have shape ({p}, {p}) for a location of length {p}, got {cov.shape}")
        precision = np.asarray(np.linalg.inv(cov), dtype=np.float64)
        return cls(location=loc, scatter=cov, precision=precision)

    @property
    def dim(self) -> int:
        return int(self.location.shape[0])

    def distance(self, x: FloatArray) -> float:
        """Robust Mahalanobis distance of one vector; NaN entries are imputed with the location."""
        d = x - self.location  # (p,)
        if np.isnan(d).any():
            d = np.where(np.isnan(d), 0.0, d)
        return math.sqrt(max(float(d @ self.precision @ d), 0.0))

    def distances(self, x: FloatArray) -> FloatArray:
        """Distances of the rows of ``x`` (n, p)."""
        d = np.where(np.isnan(x), 0.0, x - self.location)  # (n, p)
        d2 = np.einsum("ij,jk,ik->i", d, self.precision, d)
        out: FloatArray = np.sqrt(np.maximum(d2, 0.0))
        return out


def _mahal2(x: FloatArray, mean: FloatArray, cov: FloatArray) -> FloatArray:
    d = x - mean
    sol = np.linalg.solve(cov, d.T).T  # (n, p)
    out: FloatArray = np.einsum("ij,ij->i", d, sol)
    return out


def fit_robust_gaussian(
    x: npt.ArrayLike,
    floor_sd: npt.ArrayLike,
    *,
    support: float = 0.75,
    shrinkage: float | None = None,
    max_steps: int = 30,
) -> RobustGaussian:
    """MCD-like robust location/scatter of the rows of ``x`` (n, p); see the module docstring.

    ``floor_sd`` (p,): smallest meaningful spread of each feature (its resolution).
    NaN entries are imputed with the column median. Deterministic.
    """
    data = np.asarray(x, dtype=np.float64)
    floor = np.asarray(floor_sd, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"x must be a 2-D array (n, p), but got shape {data.shape}")
    n, p = data.shape
    if floor.shape != (p,) or not (floor > 0).all():
        raise ValueError(f"floor_sd must be {p} positive numbers, but got {floor.tolist()}")
    if n < 2:
        raise ValueError(f"need at least 2 rows to fit a robust location/scatter, but got {n}")
    if not 0.5 <= support <= 1.0:
        raise ValueError(f"support must be in [0.5, 1], but got {support}")
    if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], but got {shrinkage}")
    med = nan_median(data)
    med = np.where(np.isnan(med), 0.0, med)
    data = np.where(np.isnan(data), med, data)
    mad = _MAD_TO_SD * np.median(np.abs(data - med), axis=0)
    sd0 = np.maximum(mad, floor)
    if n < 2 * (p + 1):
        # Too few rows for a full scatter: median and floored MAD, no correlations.
        return RobustGaussian.from_arrays(med, np.diag(sd0**2))
    h = max(p + 1, math.ceil(support * n))
    ridge = np.diag(floor**2)
    subset = np.argsort((((data - med) / sd0) ** 2).sum(axis=1), kind="stable")[:h]
    for _ in range(max_steps):
        mean = data[subset].mean(axis=0)
        cov = np.cov(data[subset], rowvar=False).reshape(p, p) + ridge
        new = np.argsort(_mahal2(data, mean, cov), kind="stable")[:h]
        if np.array_equal(np.sort(new), np.sort(subset)):
            break
        subset = new
    d2 = _mahal2(data, mean, cov)
    scale = float(np.median(d2)) / chi2_quantile(0.5, p)
    if scale > 0.0:  # 0 when over half the points coincide; the ridge keeps cov invertible then
        cov = cov * scale
    keep = _mahal2(data, mean, cov) <= chi2_quantile(0.975, p)
    if int(keep.sum()) >= p + 2:
        mean = data[keep].mean(axis=0)
        cov = np.cov(data[keep], rowvar=False).reshape(p, p)
    lam = min(0.5, p / h) if shrinkage is None else shrinkage
    cov = (1.0 - lam) * cov + lam * np.diag(np.diag(cov)) + ridge
    return RobustGaussian.from_arrays(mean, cov)
