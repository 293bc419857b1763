"""Conformal p-values from calibration scores, with a generalized-Pareto tail below 1/(n+1).

A score is "higher = more anomalous". Given calibration scores s_1..s_n of clean frames and a
new score s, the conformal p-value is

    p(s) = (1 + #{i : s_i >= s} - t) / (n + 1)

where t is how far s lies from the calibration score just below it towards the one at or above
it (s_lo < s <= s_hi, t = (s - s_lo) / (s_hi - s_lo) in (0, 1]; p = 1 at or below every
calibration score). Without t, the textbook (1 + #{i : s_i >= s}) / (n + 1), every p-value lies
on the grid k/(n+1); that is valid (P(p <= a) <= a) but steps: the family-wise level (family.py)
is a low quantile of the minimum over 14 tests, which falls on one of the first few grid steps,
where many calibration frames tie, and ties counted against the new frame made the realised
clean rate at alpha = 0.05 come out at 0.025-0.042 (mean 0.033) on exchangeable rendered frames
with n = 600. Interpolated (what randomised tie-breaking gives on average, without the
randomness), the minimum is continuous, and the same frames gave 0.039-0.047 (mean 0.042). At a
grid level a = k/(n+1) the interpolated p-value flags exactly what the textbook one does (t <= 1);
between grid levels it flags about a. The calibration's own p-values (``out_of_block_p_values``)
are interpolated the same way, so the family-wise level stays conformal. p is non-increasing
and continuous except where calibration scores tie: a point mass (e.g. clip_frac = 0 on most
clean frames, at the bottom of the scores) still gives p = 1, never a small value.

The smallest value the formula can give is 1/(n+1), at the largest calibration score. Below
it (a score beyond every calibration score) the p-value is **extrapolated** by a
peaks-over-threshold model: the k largest scores
exceed the threshold u (the (k+1)-th largest) by y_j, and a generalized-Pareto survival
function G(y) = (1 + xi*y/sigma)^(-1/xi) (exp(-y/sigma) when xi = 0) is fitted to them by
probability-weighted moments (Hosking & Wallis 1987). The shape is clamped to 0 <= xi <= 1/2 —
an exponential or heavier tail, so light (e.g. Gaussian) tails are over-estimated and the
extrapolated p-value errs on the large, conservative side — and sigma is floored at the
score's ``resolution``. Then, for s above the largest calibration score s_(n),

    p(s) = 1/(n+1) * G(s - u) / G(s_(n) - u)

which is continuous with the empirical p-value at the largest score (1/(n+1)), decreasing
beyond it, and keeps the tail's shape. (Anchoring it at u instead, min(1/(n+1), (k+1)/(n+1) *
G(s - u)), left every score a little beyond the largest at exactly 1/(n+1) whenever the fitted
tail was heavier than the top scores: those ties made the family-wise level conservative at
alpha near K/(n+1).) This part is an approximation (it assumes the tail keeps the shape of the
top k scores), not a guarantee.

**Tolerance.** A test may declare a tolerance delta >= 0, the smallest score difference that
matters physically (e.g. 5 % of brightness). Calibration scores are then widened by it, i.e.
s_i + delta replaces s_i above (p_delta(s) = p_0(s - delta)):

    p(s) = (1 + #{i : s_i + delta >= s} - t) / (n + 1)

which can only make p-values larger, so validity is kept; it stops a frame that exceeds
every calibration frame by a physically meaningless margin from counting as "beyond all
of calibration" when the calibration clip was short (few independent scene states).

Example (hand-computed):

    >>> c = ConformalScorer([1.0, 2.0, 2.0, 3.0], tail_k=0)
    >>> [round(c.p_value(s), 6) for s in (0.0, 1.5, 2.0, 2.5, 9.0)]
    [1.0, 0.7, 0.6, 0.3, 0.2]
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

__all__ = ["ConformalScorer", "GPDTail", "fit_gpd_tail", "out_of_block_p_values"]

FloatArray = npt.NDArray[np.float64]

#: Smallest number of exceedances for which a tail is fitted at all.
MIN_TAIL: int = 5
#: Smallest p-value ever returned (p-values stay in (0, 1] even when the tail underflows).
P_MIN: float = 1e-300
XI_MAX: float = 0.5


@dataclass(frozen=True, slots=True)
class GPDTail:
    """Generalized-Pareto tail above ``threshold``: survival G(y) for excess y = s - threshold."""

    threshold: float
    scale: float
    shape: float
    k: int

    def survival(self, s: float) -> float:
        """G(s - threshold), 1 at or below the threshold."""
        y = s - self.threshold
        if y <= 0.0:
            return 1.0
        if self.shape == 0.0:
            return math.exp(-y / self.scale)
        return float((1.0 + self.shape * y / self.scale) ** (-1.0 / self.shape))

    def inverse(self, q: float) -> float:
        """Score s with G(s - threshold) = q, for 0 < q <= 1."""
        if self.shape == 0.0:
            return self.threshold - self.scale * math.log(q)
        return float(self.threshold + self.scale / self.shape * (q ** (-self.shape) - 1.0))


def fit_gpd_tail(sorted_scores: FloatArray, k: int, resolution: float) -> GPDTail | None:
    """Fit a GPD to the ``k`` largest of ``sorted_scores`` (ascending, finite).

    Probability-weighted moments with plotting positions (j - 0.35)/k give
    a0 = mean(y), a1 = mean(y * (1 - F)); then xi = 2 - a0/(a0 - 2*a1), clamped to
    [0, 1/2], and sigma = a0 * (1 - xi) (the mean excess of a GPD is sigma/(1 - xi)),
    floored at ``resolution``. Returns None when fewer than MIN_TAIL points are available.
    """
    n = int(sorted_scores.shape[0])
    k = min(k, n - 1)
    if k < MIN_TAIL:
        return None
    u = float(sorted_scores[n - k - 1])
    y = sorted_scores[n - k :] - u  # (k,) ascending excesses, >= 0
    a0 = float(y.mean())
    plotting = (np.arange(1, k + 1, dtype=np.float64) - 0.35) / k
    a1 = float((y * (1.0 - plotting)).mean())
    denom = a0 - 2.0 * a1
    xi = 2.0 - a0 / denom if denom > 0.0 else 0.0
    xi = min(max(xi, 0.0), XI_MAX)
    sigma = max(a0 * (1.0 - xi), resolution)
    return GPDTail(threshold=u, scale=sigma, shape=xi, k=k)


class ConformalScorer:
    """One-sided conformal p-values p(s) = (1 + #{cal >= s}) / (n + 1), tail-extrapolated.

    ``calibration_scores``: scores of clean calibration frames (NaN entries mean "test not
    applicable to that frame" and are left out). ``tail_k``: exceedances used for the GPD tail
    (0 disables extrapolation: p never goes below 1/(n+1)); capped at n // 5.
    ``resolution``: the floor of the tail's scale. ``tolerance``: delta above (0: the plain
    formula). NaN scores get p = 1 (not applicable = no evidence).
    """

    def __init__(
        self,
        calibration_scores: npt.ArrayLike,
        *,
        tail_k: int = 25,
        resolution: float = 1e-6,
        tolerance: float = 0.0,
    ) -> None:
        raw = np.asarray(calibration_scores, dtype=np.float64).ravel()
        if not (tolerance >= 0.0 and math.isfinite(tolerance)):
            raise ValueError(f"tolerance must be a finite number >= 0, but got {tolerance}")
        if tail_k < 0:
            raise ValueError(f"tail_k must be >= 0, but got {tail_k}")
        if not (resolution > 0.0 and math.isfinite(resolution)):
            raise ValueError(f"resolution must be a finite number > 0, but got {resolution}")
        if np.isinf(raw).any():
            raise ValueError("calibration scores must be finite or NaN, but some are infinite")
        self._raw = raw
        self.tolerance = tolerance
        # Widened calibration scores s_i + delta, ascending.
        self._plain: FloatArray = np.sort(raw[~np.isnan(raw)])
        self._sorted: FloatArray = self._plain + tolerance
        self.n: int = int(self._sorted.shape[0])
        if self.n == 0:
            raise ValueError("ConformalScorer needs at least one non-NaN calibration score, but got none")
        self._list: list[float] = self._sorted.tolist()
        self.tail_k = tail_k
        self.resolution = resolution
        self.tail: GPDTail | None = fit_gpd_tail(self._sorted, min(tail_k, self.n // 5), resolution)
        self._p_floor = 1.0 / (self.n + 1)

    @property
    def min_score(self) -> float:
        """Smallest calibration score plus the tolerance (at or below it p = 1)."""
        return self._list[0]

    @property
    def max_score(self) -> float:
        """Largest calibration score plus the tolerance (beyond it p < 2/(n+1))."""
        return self._list[-1]

    @property
    def min_p(self) -> float:
        """1/(n+1): the smallest p-value the empirical formula gives (the tail goes below)."""
        return self._p_floor

    @overload
    def p_value(self, s: float) -> float: ...
    @overload
    def p_value(self, s: FloatArray) -> FloatArray: ...
    def p_value(self, s: float | FloatArray) -> float | FloatArray:
        """p-value of one score (float) or of an array of scores (vectorized)."""
        if isinstance(s, np.ndarray):
            return self._p_array(s)
        return self._p_scalar(float(s))

    def _p_scalar(self, s: float) -> float:
        if math.isnan(s):
            return 1.0
        idx = bisect.bisect_left(self._list, s)  # the first calibration score >= s
        count_ge = self.n - idx
        if count_ge == 0:
            return self._beyond(s)
        if idx == 0:  # at or below every calibration score
            return 1.0
        lo, hi = self._list[idx - 1], self._list[idx]  # lo < s <= hi
        return (1 + count_ge - (s - lo) / (hi - lo)) / (self.n + 1)

    def _beyond(self, s: float) -> float:
        if self.tail is None:
            return self._p_floor
        # the tail's survival relative to the largest calibration score: continuous there
        # (1/(n+1)) and below it for every score beyond
        p = self._p_floor * self.tail.survival(s) / self.tail.survival(self.max_score)
        return min(self._p_floor, max(p, P_MIN))

    def _p_array(self, s: FloatArray) -> FloatArray:
        s = np.asarray(s, dtype=np.float64)
        idx = np.searchsorted(self._sorted, s, side="left")
        count_ge = self.n - idx
        # the share t of the way from the score below s to the one at or above it (0 at or below all)
        inside = (idx > 0) & (count_ge > 0)
        lo = self._sorted[np.clip(idx - 1, 0, self.n - 1)]
        hi = self._sorted[np.clip(idx, 0, self.n - 1)]
        with np.errstate(invalid="ignore"):
            t = np.where(inside, (s - lo) / np.where(inside, hi - lo, 1.0), 0.0)
        p: FloatArray = (1.0 + count_ge - t) / (self.n + 1)
        beyond = np.flatnonzero((count_ge == 0) & ~np.isnan(s))
        flat = p.reshape(-1)
        s_flat = s.reshape(-1)
        for i in beyond:  # rare: only scores beyond every calibration score
            flat[i] = self._beyond(float(s_flat[i]))
        flat[np.isnan(s_flat)] = 1.0
        return p

    def threshold(self, alpha: float) -> float:
        """Score above which p <= alpha: s > threshold(alpha) implies p(s) <= alpha.

        Uses the empirical quantile when alpha >= 1/(n+1), else the tail (inf without one). The
        quantile is that of the textbook p-value (without t), which the interpolated one never
        exceeds: the implication holds, but between grid levels the threshold is not tight.
        """
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), but got {alpha}")
        j = math.floor(alpha * (self.n + 1) + 1e-12) - 1  # largest count of cal >= s allowed
        if j >= 1:
            return self._list[self.n - min(j, self.n) - 1] if j < self.n else -math.inf
        if j == 0:
            return self.max_score
        if self.tail is None:
            return math.inf
        q = alpha / self._p_floor * self.tail.survival(self.max_score)
        return max(self.max_score, self.tail.inverse(min(q, 1.0)))

    def loo_p_values(self) -> FloatArray:
        """Leave-one-out p-value of every calibration score against the others, in input order.

        p_i = (1 + #{j != i : s_j >= s_i}) / (n + 1), the textbook formula (not interpolated):
        the denominator is n + 1, as for a new frame, so that a new frame that ties a calibration
        frame counts as no more extreme (with n, new frames would win every tie). The unique maximum (if any)
        gets min(1/(n+1), p from a tail fitted to the other scores). NaN scores get 1. These are
        *plain* p-values (no tolerance). The policy calibrates the family on
        ``out_of_block_p_values`` instead: on video a frame's near-twins make these too large.
        """
        out = np.ones(self._raw.shape[0], dtype=np.float64)
        ok = ~np.isnan(self._raw)
        if self.n == 1:
            return out
        vals = self._raw[ok]
        # others with s_j >= s_i (s_i itself always counts, hence the - 1)
        count_ge = self.n - np.searchsorted(self._plain, vals, side="left") - 1
        p = (1.0 + count_ge) / (self.n + 1)
        top = np.flatnonzero(count_ge == 0)
        if top.size == 1:
            others = np.delete(vals, top[0])
            rest = ConformalScorer(others, tail_k=self.tail_k, resolution=self.resolution)
            p[top[0]] = min(self._p_floor, rest.p_value(float(vals[top[0]])))
        out[ok] = p
        return out


def out_of_block_p_values(
    scores: npt.ArrayLike,
    blocks: npt.ArrayLike,
    *,
    radius: int = 1,
    tail_k: int = 25,
    resolution: float = 1e-6,
    tolerance: float = 0.0,
) -> FloatArray:
    """Each calibration frame's p-value against the frames of *other, distant* blocks.

    Frame i of block b is scored against the calibration scores of the frames whose block c
    satisfies |c - b| > ``radius`` (its own block and ``radius`` blocks on each side left out):

        p_i = (1 + #{j : |b_j - b_i| > r, s_j + delta >= s_i} - t_i) / (n_i + 1)

    with n_i the number of such frames (tail-extrapolated below 1/(n_i + 1), as for a new
    frame). This is what a *new* clean frame sees at run time: a stretch of video the
    calibration has not seen. Leave-one-out p-values of single frames are too large on video
    (a frame's near-twins in its own block count as "as extreme"), which makes a family-wise
    level calibrated on them too loose; see family.py. NaN scores get 1.

    **On the run-time scale.** A new frame is scored against all n calibration frames, so its
    p-values run down to 1/(n + 1) at the largest calibration score (and the tail below it);
    frame i's run down to 1/(n_i + 1) > 1/(n + 1). Left as they are, the new frame that is the
    most extreme under one test would be more extreme than every calibration frame that was the
    most extreme under one test (1/(n+1) < 1/(n_i+1)), and the family-wise rate would exceed
    alpha: with 14 tests and n = 1000 exchangeable frames, alpha = 0.01 gave 0.014-0.019. So
    each p_i is put on the run-time scale: its (interpolated) count c_i = p_i (n_i + 1) - 1
    becomes the count the n frames would give, c_i n / n_i, and a tail p-value below
    1/(n_i + 1) is scaled by (n_i + 1) / (n + 1) (n: the non-NaN scores).

    >>> out_of_block_p_values([1.0, 1.0, 5.0, 5.0, 2.0, 2.0], [0, 0, 1, 1, 2, 2], radius=0, tail_k=0).round(4)
    array([1.    , 1.    , 0.1429, 0.1429, 0.5179, 0.5179])
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    b = np.asarray(blocks, dtype=np.int64).ravel()
    if b.shape != s.shape:
        raise ValueError(f"blocks must give one block id per score ({s.shape[0]}), but got {b.shape[0]}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, but got {radius}")
    out = np.ones(s.shape[0], dtype=np.float64)
    n = int((~np.isnan(s)).sum())  # the run-time scorer's calibration size
    for block in np.unique(b):
        mine = b == block
        others = s[np.abs(b - block) > radius]
        if others.size == 0 or np.isnan(others).all():
            continue  # nothing to compare with: no evidence (p = 1)
        scorer = ConformalScorer(others, tail_k=tail_k, resolution=resolution, tolerance=tolerance)
        out[mine] = _on_run_time_scale(np.asarray(scorer.p_value(s[mine]), dtype=np.float64), scorer.n, n)
    return out


def _on_run_time_scale(p: FloatArray, n_i: int, n: int) -> FloatArray:
    """p-values of a scorer with n_i calibration scores, moved to the scale of one with n >= n_i."""
    excess = p * (n_i + 1) - 1.0  # frames at least as extreme; < 0 in the tail, below 1/(n_i+1)
    count = np.maximum(excess, 0.0)
    scaled: FloatArray = np.where(excess > -1e-9, (1.0 + count * n / n_i) / (n + 1), p * (n_i + 1) / (n + 1))
    return np.minimum(scaled, 1.0)
