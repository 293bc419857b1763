"""What a calibrated guard FLAGs, in the units a field engineer can check: each test's limit.

A frame is flagged when its family-wise p-value is at most ``alpha_flag`` (family.py), i.e.
when some test's p-value is below the per-test level L = ``FamilyCombiner.level(alpha_flag)``;
that test is then among the frame's reasons. Each test's p-value is non-increasing in its score,
so the test fires *on its own* beyond one score, the smallest s with p(s) <= L (found by
bisection on the interpolated, tolerance-widened p-value the guard uses; infinite where no score
gets that low: a level below 1/(n+1) without a fitted tail). Where a test reads one statistic,
the limit is turned back into that statistic's units (a score of -log(1 + brightness) below
-log(1 + 62.4) means "mean luma below 62.4"), next to the calibration frames' range in the same
units, so an engineer sees how much change the profile tolerates: a limit close to the
calibration range means a short or uniform calibration (calibrate on more of the camera's
usual variety, or set ``calibration.tolerances``), one far from it a calibration that saw a lot.

A statistic's own test is not the only way to flag it: ``ood_stats`` reads all the statistics
together and may flag a frame whose brightness, contrast and noise each moved less than their
own limits (its limit is a distance). Every flagged frame still has a test beyond its limit (the
family is never looser than its tests), and explain.py may drop a reason that another explains
(``covered``, ``blur``, ``occluded``). Scores without a physical reading (distances, NCC) are
given in their own units; docs/detection.md ("Limits") defines every quantity.

>>> from agent.scoring.conformal import ConformalScorer
>>> round(score_limit(ConformalScorer([1.0, 2.0, 3.0, 4.0], tail_k=0), 0.2), 6)  # p(s) = 0.2 from s = 4
4.0
>>> score_limit(ConformalScorer([1.0, 2.0, 3.0, 4.0], tail_k=0), 0.1)  # below 1/(n+1), no tail: never
inf
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from agent.scoring.base import Test
from agent.scoring.conformal import ConformalScorer
from agent.scoring.observation import SATURATION_OFFSET
from agent.scoring.policy import Guard

__all__ = ["GuardLimits", "Limit", "guard_limits", "score_limit"]

Side = Literal["below", "above"]


@dataclass(frozen=True, slots=True)
class Limit:
    """Test ``test`` (reason ``reason``) fires on its own where ``quantity`` is ``side`` ``value``.

    ``value`` is +-inf where no frame can reach the per-test level; ``low``, ``median``, ``high``:
    the calibration frames' range of the quantity (NaN when the test never applied to them).
    """

    reason: str
    test: str
    quantity: str
    side: Side
    value: float
    low: float
    median: float
    high: float

    @property
    def label(self) -> str:
        """The reason code, with the test where they differ (``adversarial (adversarial_hf)``)."""
        return self.reason if self.reason == self.test else f"{self.reason} ({self.test})"

    def condition(self) -> str:
        """When the test fires on its own, in the quantity's units."""
        if math.isinf(self.value):
            return f"never on its own at this level ({self.quantity}; a longer calibration resolves it)"
        return f"{self.quantity} {self.side} {_num(self.value)}"

    def calibration_range(self) -> str:
        """The calibration frames' range (``-`` when the test never applied to them)."""
        return "-" if math.isnan(self.median) else f"{_num(self.low)} .. {_num(self.high)} ({_num(self.median)})"


def _num(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def score_limit(scorer: ConformalScorer, level: float) -> float:
    """Smallest score whose p-value is at most ``level`` (inf: none), to ~1e-9 of the score's scale."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), but got {level}")
    lo, hi = scorer.min_score, scorer.max_score  # p(lo) = 1 > level
    if scorer.p_value(hi) > level:
        step = max(scorer.resolution, abs(hi) * 1e-3)
        while scorer.p_value(hi + step) > level:
            step *= 2.0
            if not math.isfinite(hi + step) or step > 1e12:
                return math.inf
        lo, hi = hi, hi + step
    tol = 1e-9 * max(1.0, abs(hi))
    while hi - lo > tol:  # p non-increasing: keep p(lo) > level >= p(hi)
        mid = 0.5 * (lo + hi)
        if scorer.p_value(mid) <= level:
            hi = mid
        else:
            lo = mid
    return hi


# test -> (quantity, side, score -> quantity); ``m`` is the calibration scores' median (for the
# relative readings), ``f`` the glare floor. Other tests are read in their own score units.
_Reading = tuple[str, Side, Callable[[float, float, float], float]]  # f(score, median score, glare floor)
_READINGS: dict[str, _Reading] = {
    "dark": ("mean luma", "below", lambda s, m, f: math.expm1(-s)),
    "overexposed": ("mean luma", "above", lambda s, m, f: math.expm1(s)),
    "glare": ("clipped % of the frame", "above", lambda s, m, f: 100.0 * f * math.expm1(s)),
    "noise": ("noise sd", "above", lambda s, m, f: math.expm1(s)),
    "low_saturation": ("mean saturation", "below", lambda s, m, f: math.exp(-s) - SATURATION_OFFSET),
    "covered": ("75th-pct tile contrast", "below", lambda s, m, f: math.expm1(-s)),
    "frozen": ("largest recent change", "below", lambda s, m, f: math.exp(-s) - 0.01),
    "blur": ("detail for the contrast, % of median", "below", lambda s, m, f: 100.0 * math.exp(m - s)),
    "low_contrast": ("contrast for the light, % of median", "below", lambda s, m, f: 100.0 * math.exp(m - s)),
    "adversarial_hf": ("chroma noise floor, x median", "above", lambda s, m, f: math.exp(s)),
    "occluded": ("hidden % of the view", "above", lambda s, m, f: 100.0 * s),
    "warped": ("unexplained % of the structure", "above", lambda s, m, f: 100.0 * s),
}
#: What the other tests' scores are (docs/detection.md, "Limits", defines each).
_SCORE_NAMES: dict[str, str] = {
    "moved": "1 - block NCC with the view",
    "color_cast": "colour-ratio distance",
    "ood_stats": "statistics distance",
    "patch": "tile deviation",
    "defocused": "tile sharpness drop",
    "adversarial_squeeze": "squeezing L1",
    "ood_detections": "detections distance",
}
_MODEL_SCORES: dict[str, str] = {"energy": "energy", "msp": "1 - top-1 probability", "detection": "1 - best score"}


def _reading(test: Test) -> _Reading:
    if test.name in _READINGS:
        return _READINGS[test.name]
    if test.name == "ood_model":
        name = _MODEL_SCORES.get(str(getattr(test, "kind", "")), "model-output score")
    else:
        name = _SCORE_NAMES.get(test.name, f"{test.name} score")
    return name, "above", lambda s, m, f: s


def guard_limits(guard: Guard, level: float) -> list[Limit]:
    """Every test's limit at the per-test ``level`` (``guard.family.level(alpha)``), in the guard's test order."""
    floor = guard.profile.calibration.glare_floor
    recorded = {t.name: t.calibration_scores for t in guard.profile.tests}
    out: list[Limit] = []
    for test in guard.tests:
        if test.conformal is None:
            continue
        raw = np.array([v for v in recorded.get(test.name, []) if v is not None], dtype=np.float64)
        median = float(np.median(raw)) if raw.size else math.nan
        quantity, side, read = _reading(test)
        s_lim = score_limit(test.conformal, level)
        value = (math.inf if side == "above" else -math.inf) if math.isinf(s_lim) else read(s_lim, median, floor)
        seen = sorted(read(float(s), median, floor) for s in raw) if raw.size else []
        out.append(Limit(
            reason=test.reason, test=test.name, quantity=quantity, side=side, value=value,
            low=seen[0] if seen else math.nan, median=float(np.median(seen)) if seen else math.nan,
            high=seen[-1] if seen else math.nan,
        ))
    return out


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """Every test's limit of one guard at its ``alpha_flag`` (per-test ``level``), for the profile ``profile_id``."""

    profile_id: str
    alpha_flag: float
    level: float
    limits: tuple[Limit, ...]

    @classmethod
    def of(cls, guard: Guard) -> GuardLimits:
        level = guard.family.level(guard.alpha_flag)
        return cls(guard.profile.profile_id, guard.alpha_flag, level, tuple(guard_limits(guard, level)))

    def table(self, indent: str = "  ") -> str:
        """The table ``edge-guard calibrate`` prints under its summary (and the daemon logs)."""
        rows = [("reason", "fires on its own where", "calibration: min .. max (median)")]
        rows += [(lim.label, lim.condition(), lim.calibration_range()) for lim in self.limits]
        w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
        head = (f"{indent}what each test FLAGs on its own at policy.alpha_flag={self.alpha_flag:g} (its p-value <= "
                f"{self.level:.3g}; ood_stats may flag a mix of smaller changes first):")
        return "\n".join([head, *(f"{indent}  {a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows)])

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly (null where a limit is never reached or the calibration has no range)."""
        def finite(v: object) -> object:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return {"profile_id": self.profile_id, "alpha_flag": self.alpha_flag, "level": self.level,
                "limits": [{k: finite(v) for k, v in asdict(lim).items()} for lim in self.limits]}
