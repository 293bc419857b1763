"""How many independent scene states a stretch of video holds (effective sample size).

Consecutive frames of a fixed camera are nearly the same scene: 400 frames of a street at
10 fps are not 400 draws but a handful of scene states (a group of pedestrians, a cloud, an
exposure step), each lasting seconds. Conformal p-values and realised false-alarm rates are
resolved by those states, not by frames: a level finer than about 1/(n_eff + 1) is set by
the tolerances and the extrapolated tails, and whole scene episodes fall on one side of the
threshold together.

For one feature x_1..x_n the **integrated autocorrelation time** is

    tau = 1 + 2 * sum_{k >= 1} rho_k

(for an AR(1) series with coefficient phi, tau = (1 + phi) / (1 - phi)), and the effective
sample size is n_eff = n / tau. It is estimated with Geyer's (1992) initial monotone sequence:
with the sample autocorrelations rho_k (biased autocovariance, computed by FFT), the pair
sums G_m = rho_{2m} + rho_{2m+1} are added while positive, each clipped to the one before,
and tau = -1 + 2 * sum_m G_m (floored at 1).

For a clip, ``effective_frames`` takes the median tau over the features that vary (a few
features that hold one value, e.g. clip fraction 0 on a dim scene, carry no information).

    >>> round(autocorrelation_time([1.0, -1.0] * 50), 2)  # alternating: anti-correlated
    1.0
    >>> autocorrelation_time([3.0] * 10)  # constant: nothing to correlate
    1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["EffectiveFrames", "autocorrelation_time", "effective_frames", "frames_needed"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class EffectiveFrames:
    """``frames`` correlated frames hold about ``effective`` independent ones (tau frames apart)."""

    frames: int
    autocorrelation: float
    effective: float

    def describe(self) -> str:
        """One phrase for logs and summaries."""
        return (
            f"{self.frames} frames ≈ {self.effective:.0f} independent scene states "
            f"(features stay correlated for about {self.autocorrelation:.0f} frames)"
        )

    def resolves(self, alpha: float) -> bool:
        """True when these frames hold the 1/alpha - 1 independent states a level alpha needs."""
        return self.effective + 1.0 >= 1.0 / alpha


def autocorrelation_time(x: npt.ArrayLike) -> float:
    """Integrated autocorrelation time of one series (NaN entries dropped); 1 when constant."""
    v = np.asarray(x, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n < 3:
        return 1.0
    v = v - v.mean()
    var = float(np.dot(v, v))
    if not var > 1e-12 * n * max(1.0, float(np.max(np.abs(v))) ** 2):
        return 1.0
    spectrum = np.fft.rfft(v, 2 * n)
    rho = np.fft.irfft(spectrum * np.conj(spectrum))[:n] / var
    total, previous = 0.0, math.inf
    for m in range(0, n - 1, 2):
        pair = float(rho[m] + rho[m + 1])
        if pair <= 0.0:
            break
        previous = min(pair, previous)
        total += previous
    return max(1.0, 2.0 * total - 1.0)


def effective_frames(features: npt.ArrayLike) -> EffectiveFrames:
    """Effective sample size of ``features`` ((n, F): one row per frame, in time order)."""
    arr = np.asarray(features, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"features must be an (n, F) array, but got shape {arr.shape}")
    n = int(arr.shape[0])
    taus = [
        autocorrelation_time(col)
        for col in arr.T
        if np.isfinite(col).sum() >= 3 and float(np.nanstd(col)) > 0.0
    ]
    tau = float(np.median(taus)) if taus else 1.0
    tau = min(tau, float(max(n, 1)))
    return EffectiveFrames(frames=n, autocorrelation=tau, effective=n / tau)


def frames_needed(autocorrelation: float, alpha: float) -> int:
    """Frames for about 1/alpha independent scene states (the conformal resolution of alpha)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), but got {alpha}")
    return math.ceil(max(autocorrelation, 1.0) * (1.0 / alpha - 1.0))
