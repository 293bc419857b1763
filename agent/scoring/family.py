"""Family-wise control: combine the tests' p-values so alpha is the clean-frame FLAG rate.

With K tests each at level alpha, a clean frame would be flagged with probability up to
K * alpha. Instead the policy uses the minimum per-test p-value m = min_k p_k as one
combined score and calibrates **it** conformally on the calibration frames:

    F(m) = (1 + #{i : m_i <= m}) / (n + 1)

where m_i is the minimum over tests of calibration frame i's **out-of-block** p-values
(``conformal.out_of_block_p_values``: frame i scored, tolerance-widened like a new frame,
against the frames of the other, distant blocks only, then put on the scale of a new frame's
p-values, which are taken against all n calibration frames). On video this matters: with
leave-one-*frame*-out p-values a frame's near-twins in its own block vouch for it, the m_i
come out too large, the level too loose, and 15-70 % of the next clean minutes were flagged.
A new stretch of clean video relates to the calibration as a calibration block relates to
the other blocks, so F is the distribution of m on new clean frames, and the realised clean
FLAG rate is about alpha_flag and not above it whatever the correlation between tests:
correlated tests (dark, covered, ood_stats) cost less than Bonferroni would charge. A frame
is flagged when p_family <= alpha_flag, blocked when p_family <= alpha_block.

Below the empirical resolution (m smaller than every m_i) the p-value falls back on the
Bonferroni bound, valid for any dependence between tests:

    p_family(m) = min(1/(n+1), K * m)

**Never looser than a single test.** The combination corrects for multiplicity; it must not
make a test more sensitive than its own conformal level. When the calibration frames are
unremarkable under every test (tolerances widen the scores, so most m_i are near 1), the
empirical quantile above would put the per-test level far above alpha (0.48 was seen on a
real clip), flagging frames that no single test finds unusual. So the family p-value is

    p_family(m) = max(F(m), m)

which is non-decreasing and at least as large as F(m) (validity kept): a frame is flagged only
if its smallest per-test p-value is itself <= alpha.

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

    ``loo_p``: (n, K) out-of-block (or leave-one-out) p-values of the n calibration frames
    under the K tests (1 where a test does not apply).
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
            return max((1 + count) / (self.n + 1), p_min)
        return max(min(self._floor, self.k * p_min), p_min)

    def p_values(self, p: FloatArray) -> FloatArray:
        """Vectorized ``p_value`` over per-test p-values."""
        count = np.searchsorted(self._m, p, side="right")
        out: FloatArray = np.where(
            count > 0, (1.0 + count) / (self.n + 1), np.minimum(self._floor, self.k * p)
        )
        return np.where(np.isnan(p), 1.0, np.maximum(out, p))

    def level(self, alpha: float) -> float:
        """Per-test level of the combination: p_family(m) <= alpha for every m < level(alpha).

        (The supremum of such m; the documented "per-test level at which the combination
        triggers", e.g. for health summaries.)
        """
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), but got {alpha}")
        j = math.floor(alpha * (self.n + 1) + 1e-12) - 1  # calibration frames allowed at or below
        if j >= 1:
            # F(m) <= alpha iff #{m_i <= m} <= j iff m < m_(j+1); and m <= alpha
            return min(self._m_list[j] if j < self.n else 1.0, alpha)
        if j == 0:
            return min(self._m_list[0], alpha)
        return min(self._m_list[0], alpha / self.k)
