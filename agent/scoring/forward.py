"""Forward check: does the calibration window support exact p-values?

When the kept frames hold the 1/alpha_flag independent scene states alpha_flag needs (ess.py),
the calibrator drops the default tolerances and the p-values become exact conformal ones
(calibrate.py). They are exact only if new clean frames are exchangeable with the calibration
frames. Enough states is necessary for that, not sufficient: a window along which the scene
keeps changing (light going down, a crowd arriving for its last minutes, a camera slowly
sagging) has many states and still says little about what comes next. Exact p-values then flag
far more than alpha: ``opencv_vtest.avi`` calibrated on its first 400 frames at
alpha_flag = 0.2 (6.4 states: resolved) flagged 73 % of the held-out rest, 5.6 % with the
tolerances kept.

The check replays the guard inside the window, forward in time, with the tolerances the exact
profile would have. The tests' calibration scores of the first 2/3 of the blocks calibrate the
tests and the family-wise level (on their out-of-block p-values, as ``Guard`` does); the last
1/3 is scored as new frames (the past ends ``radius`` blocks before it). Flagged frames come in episodes
about tau frames long (the autocorrelation time), so the past holds n = past / tau independent
states, the future m = round(future / tau), of which k = round(flagged / tau) flagged (at least 1
if any). Given one calibration of n states, the level it realises is itself random: for exact
conformal p-values the chance that a new state is flagged is Beta(alpha (n + 1), (1 - alpha)
(n + 1))-distributed, approximately (the "calibration-conditional" coverage of split conformal prediction;
Vovk 2012), so under a stationary window k is beta-binomial, and

    P = P(BetaBinomial(m, alpha (n + 1), (1 - alpha) (n + 1)) >= k)

is the chance of that many flagged episodes. The exact level is kept unless P < ``SIGNIFICANCE``
(1 %). A plain binomial would ignore that spread and reject stationary windows: the synthetic
scene at 1 000 random times (exchangeable by construction) flags 8 of 322 future states at
alpha = 0.01 (binomial P = 0.017, beta-binomial 0.043). Rejecting a stationary window only
costs sensitivity (the tolerances keep the clean FLAG rate at most alpha); accepting a
drifting one costs false alarms. Cost: one pass over the calibration scores, at calibration only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.scoring.conformal import ConformalScorer, out_of_block_p_values
from agent.scoring.family import FamilyCombiner

__all__ = ["SIGNIFICANCE", "ForwardCheck", "ScoreSeries", "beta_binomial_tail", "forward_check"]

FloatArray = npt.NDArray[np.float64]

#: The exact level is kept unless the window's last third is this unlikely under stationarity.
SIGNIFICANCE: float = 0.01
#: Fewest blocks in the past part (calibrating the family level needs distant blocks).
MIN_PAST_BLOCKS: int = 4


@dataclass(frozen=True, slots=True)
class ScoreSeries:
    """One test's calibration scores (time order, NaN where it does not apply) and tail settings."""

    name: str
    scores: Sequence[float]
    tolerance: float
    resolution: float


@dataclass(frozen=True, slots=True)
class ForwardCheck:
    """``flagged`` of the last ``future`` calibration frames flagged at ``alpha`` against the first ``past``."""

    past: int
    future: int
    flagged: int
    alpha: float
    states: float
    p_value: float

    @property
    def passed(self) -> bool:
        """True when the flags are plausible for a stationary window (exact p-values kept)."""
        return self.p_value >= SIGNIFICANCE

    def describe(self) -> str:
        """One phrase for logs."""
        return (
            f"the last {self.future} calibration frames, scored against the {self.past} before them, "
            f"flagged {self.flagged / max(1, self.future):.1%} at alpha_flag={self.alpha:g} "
            f"({self.states:.0f} independent states; P = {self.p_value:.2g} if the scene were stationary)"
        )


def beta_binomial_tail(m: int, k: int, a: float, b: float) -> float:
    """P(X >= k) for X ~ BetaBinomial(m, a, b) (a, b > 0).

    >>> round(beta_binomial_tail(2, 1, 1.0, 1.0), 6)  # uniform rate: X uniform on 0, 1, 2
    0.666667
    >>> beta_binomial_tail(5, 0, 1.0, 9.0), beta_binomial_tail(3, 4, 1.0, 1.0)
    (1.0, 0.0)
    >>> beta_binomial_tail(5000, 2500, 10.0, 990.0) < 1e-100  # no overflow however many states
    True
    """
    if k <= 0:
        return 1.0
    if k > m:
        return 0.0
    log_norm = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    def log_pmf(j: int) -> float:
        log_comb = math.lgamma(m + 1) - math.lgamma(j + 1) - math.lgamma(m - j + 1)
        return log_comb + math.lgamma(j + a) + math.lgamma(m - j + b) - math.lgamma(m + a + b) - log_norm

    return min(1.0, math.fsum(math.exp(log_pmf(j)) for j in range(k, m + 1)))


def forward_check(
    tests: Sequence[ScoreSeries],
    blocks: npt.ArrayLike,
    *,
    alpha: float,
    autocorrelation: float,
    radius: int = 1,
    tail_k: int = 25,
) -> ForwardCheck | None:
    """Replay the guard on the window's last third, calibrated on the rest (module docstring).

    None when the window has too few blocks to split.
    """
    b = np.asarray(blocks, dtype=np.int64).ravel()
    n_blocks = int(b.max()) + 1 if b.size else 0
    cut = math.ceil(2 * n_blocks / 3)
    if cut - radius < MIN_PAST_BLOCKS or cut >= n_blocks:
        return None
    past, future = b < cut - radius, b >= cut
    past_cols: list[FloatArray] = []
    future_cols: list[FloatArray] = []
    for t in tests:
        s = np.asarray(t.scores, dtype=np.float64)
        if s.shape != b.shape:
            raise ValueError(f"test {t.name}: {s.size} scores for {b.size} block ids")
        if np.isnan(s[past]).all():
            continue  # never applied before the cut: no evidence either way
        past_cols.append(
            out_of_block_p_values(
                s[past], b[past], radius=radius, tail_k=tail_k, resolution=t.resolution, tolerance=t.tolerance
            )
        )
        scorer = ConformalScorer(s[past], tail_k=tail_k, resolution=t.resolution, tolerance=t.tolerance)
        p_future = np.asarray(scorer.p_value(s[future]), dtype=np.float64)
        future_cols.append(np.where(np.isnan(p_future), 1.0, p_future))
    if not past_cols:
        return None
    family = FamilyCombiner(np.column_stack(past_cols))
    p_family = family.p_values(np.column_stack(future_cols).min(axis=1))
    flagged = int((p_family <= alpha).sum())
    n_past, n_future = int(past.sum()), int(future.sum())
    tau = max(1.0, autocorrelation)
    states, past_states = n_future / tau, n_past / tau
    episodes = max(1, round(flagged / tau)) if flagged else 0  # <= round(states): flagged <= future
    shape_a, shape_b = alpha * (past_states + 1.0), (1.0 - alpha) * (past_states + 1.0)
    p = beta_binomial_tail(max(1, round(states)), episodes, shape_a, shape_b)
    return ForwardCheck(n_past, n_future, flagged, alpha, states, p)
