"""Each test's limit (agent/scoring/limits.py): what the calibrate summary says a profile flags
is what the guard flags."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import numpy.typing as npt
import pytest
from helpers import synthetic_frames

from agent.frame import Frame
from agent.scoring import limits
from agent.scoring.calibrate import Calibrator
from agent.scoring.config import CalibrationConfig, PolicyConfig
from agent.scoring.conformal import ConformalScorer
from agent.scoring.limits import GuardLimits, Limit, guard_limits, score_limit
from agent.scoring.policy import Guard
from agent.stats.cpu import CpuStats

Image = npt.NDArray[np.uint8]


def test_doctests() -> None:
    assert doctest.testmod(limits).failed == 0


@pytest.mark.parametrize("tolerance", [0.0, 0.3])
@pytest.mark.parametrize("tail_k", [0, 25])
def test_score_limit_is_where_the_p_value_reaches_the_level(tolerance: float, tail_k: int) -> None:
    scores = np.random.default_rng(4).gamma(2.0, 1.0, 200)
    scorer = ConformalScorer(scores, tail_k=tail_k, resolution=0.05, tolerance=tolerance)
    for level in (0.3, 0.05, 1.0 / 201, 0.2 / 201, 1e-4):
        s = score_limit(scorer, level)
        if math.isinf(s):  # only below the empirical floor without a tail
            assert tail_k == 0 and level < scorer.min_p
            assert scorer.p_value(1e9) > level
            continue
        assert scorer.p_value(s) <= level < scorer.p_value(s - 1e-6), (level, s)
    with pytest.raises(ValueError, match="level must be in"):
        score_limit(scorer, 1.0)


@pytest.fixture(scope="module")
def scene() -> list[Image]:
    return synthetic_frames("synthetic://clean?size=160x96&seed=5&frames=240")


@pytest.fixture(scope="module")
def guard(scene: list[Image]) -> Guard:
    backend = CpuStats((4, 4))
    cal = Calibrator(CalibrationConfig(frames=200), (4, 4))
    for image in scene[:200]:
        cal.update(backend.compute(image), image=image, live=False)
    return Guard(cal.build(), PolicyConfig(alpha_flag=0.01))


def test_dark_and_overexposed_fire_exactly_beyond_their_limits(scene: list[Image], guard: Guard) -> None:
    """One held-out frame at 61 exposures: ``dark`` is among its reasons exactly where its mean luma
    is below the dark limit, ``overexposed`` exactly where it is above the overexposed one."""
    by_test = {lim.test: lim for lim in guard_limits(guard, guard.family.level(guard.alpha_flag))}
    dark, bright = by_test["dark"], by_test["overexposed"]
    assert (dark.side, bright.side, dark.quantity) == ("below", "above", "mean luma")
    assert dark.value < dark.low <= dark.median <= dark.high < bright.value  # the limits lie outside calibration
    backend = CpuStats((4, 4))
    below = above = 0
    for k, gain in enumerate(np.linspace(0.5, 1.5, 61)):
        image = np.clip(scene[220].astype(np.float64) * gain, 0, 255).astype(np.uint8)
        guard.reset()
        stats = backend.compute(image)
        verdict = guard.update(Frame(image, "cam", k, 0.0, 0.0, live=False), stats, None)
        for lim, beyond in ((dark, stats.brightness < dark.value), (bright, stats.brightness > bright.value)):
            if abs(stats.brightness - lim.value) > 0.05:  # away from the boundary itself
                assert (lim.reason in verdict.reason_codes) == beyond, (gain, stats.brightness, lim)
        below += stats.brightness < dark.value
        above += stats.brightness > bright.value
    assert below >= 5 and above >= 5  # both sides were tried


def test_every_test_has_a_limit_beyond_its_calibration_and_the_table_lists_them(guard: Guard) -> None:
    found = guard_limits(guard, guard.family.level(0.01))
    assert [lim.test for lim in found] == [t.name for t in guard.tests]
    for lim in found:  # the typical calibration frame (p about 1/2) is far inside every limit
        if not (math.isnan(lim.median) or math.isinf(lim.value)):
            assert (lim.value > lim.median) if lim.side == "above" else (lim.value < lim.median), lim
    report = GuardLimits.of(guard)
    assert report.limits == tuple(found) and report.level == guard.family.level(0.01)
    doc = json.loads(json.dumps(report.as_dict(), allow_nan=False))  # strict JSON: null, never NaN
    assert doc["profile_id"] == guard.profile.profile_id and len(doc["limits"]) == len(found)
    assert doc["limits"][0].keys() == {"reason", "test", "quantity", "side", "value", "low", "median", "high"}
    text = report.table()
    lines = text.splitlines()
    assert lines[0].startswith("  what each test FLAGs on its own at policy.alpha_flag=0.01")
    assert len(lines) == 2 + len(found)
    dark = next(ln for ln in lines if ln.strip().startswith("dark "))
    assert "mean luma below" in dark and ".." in dark


def test_a_limit_that_cannot_be_reached_says_so() -> None:
    lim = Limit("dark", "dark", "mean luma", "below", -math.inf, 100.0, 110.0, 120.0)
    assert lim.condition().startswith("never on its own at this level")
    assert Limit("x", "x", "x score", "above", 1.0, math.nan, math.nan, math.nan).calibration_range() == "-"
