"""Family-wise control: combine the tests' p-values so alpha is the clean-frame FLAG rate.

With K tests each at level alpha, a clean frame would be flagged with probability up to
K * alpha. Instead the policy uses the minimum per-test p-value m = min_k p_k as one
combined score and calibrates **it** conformally on the calibration frames:

    p_family(m) = (1 + #{i : m_i <= m}) / (n + 1)

where m_i is the minimum over tests of calibration frame i's leave-one-out p-values
(``ConformalScorer.loo_p_values``: frame i scored against the other n - 1 calibration
frames, on the same (1 + count)/(n + 1) grid as a new frame, ties counting against the new
frame). A frame is flagged when p_family <= alpha_flag, blocked when p_family <=
alpha_block. Because p_family is a conformal p-value of a score that is (up to the
leave-one-out approximation, which errs on the conservative side) exchangeable between
calibration and new clean frames, the realised clean FLAG rate is about alpha_flag and not
above it, whatever the correlation between tests: correlated tests (dark, covered,
ood_stats) cost less than Bonferroni would charge. The per-test p-values fed in are the
tolerance-widened ones while the m_i are plain, which only raises p_family.

Below the empirical resolution (m smaller than every m_i) the p-value falls back on the
Bonferroni bound, valid for any dependence between tests:

    p_family(m) = min(1/(n+1), K * m)

Reasons: test k is a reason when p_family(p_k) <= alpha (the family p-value it would give
alone). p_family is non-decreasing in m, so p_family(min_k p_k) = min_k p_family(p_k):
every flagged frame has at least one reason, and each reason's level is the per-test
level at which the combination triggered.
"""

from __future__ import annotations

import bisect
import math

import numpy as np
import numpy.typing as npt

__all__ = ["FamilyCombiner"]

FloatArray = npt.NDArray[np.float64]


class FamilyCombiner:
    """Conformal calibration of min-p over tests; see the module docstring.

    ``loo_p``: (n, K) leave-one-out p-values of the n calibration frames under the K tests
    (1 where a test does not apply).
    """

    def __init__(self, loo_p: npt.ArrayLike) -> None:
        arr = np.asarray(loo_p, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"loo_p must be a non-empty (n, K) array, but got shape {arr.shape}")
        if np.isnan(arr).any() or (arr <= 0).any() or (arr > 1).any():
            raise ValueError("loo_p must hold p-values in (0, 1]")
        self.n, self.k = int(arr.shape[0]), int(arr.shape[1])
        self._m: FloatArray = np.sort(arr.min(axis=1))  # (n,) ascending
        self._m_list: list[float] = self._m.tolist()
        self._floor = 1.0 / (self.n + 1)

    @property
    def min_p(self) -> float:
        """1/(n+1): below this the Bonferroni fallback applies."""
        return self._floor

    def p_value(self, p_min: float) -> float:
        """Family-wise p-value of a frame whose smallest per-test p-value is ``p_min``."""
        if math.isnan(p_min):
            return 1.0
        # count of calibration frames at least as extreme: m_i <= p_min
        count = bisect.bisect_right(self._m_list, p_min)
        if count > 0:
            return (1 + count) / (self.n + 1)
        return min(self._floor, self.k * p_min)

    def p_values(self, p: FloatArray) -> FloatArray:
        """Vectorized ``p_value`` over per-test p-values."""
        count = np.searchsorted(self._m, p, side="right")
        out: FloatArray = np.where(
            count > 0, (1.0 + count) / (self.n + 1), np.minimum(self._floor, self.k * p)
        )
        return np.where(np.isnan(p), 1.0, out)

    def level(self, alpha: float) -> float:
        """Per-test level of the combination: p_family(m) <= alpha for every m < level(alpha).

        (The supremum of such m; the documented "per-test level at which the combination
        triggers", e.g. for health summaries.)
        """
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), but got {alpha}")
        j = math.floor(alpha * (self.n + 1) + 1e-12) - 1  # calibration frames allowed at or below
        if j >= 1:
            # p_family(m) <= alpha iff #{m_i <= m} <= j iff m < m_(j+1)
            return self._m_list[j] if j < self.n else 1.0
        if j == 0:
            return self._m_list[0]
        return min(self._m_list[0], alpha / self.k)
