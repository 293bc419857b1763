"""Forward check: exact p-values only where the calibration window's last third confirms them."""

from __future__ import annotations

import dataclasses
import doctest
from pathlib import Path

import numpy as np
import pytest
from helpers import exact_tolerances, synthetic_stats

from agent.calibrate_cmd import CalibrationResult
from agent.scoring import forward
from agent.scoring.calibrate import Calibrator
from agent.scoring.config import CalibrationConfig
from agent.scoring.forward import ForwardCheck, ScoreSeries, beta_binomial_tail, forward_check
from agent.scoring.profile import Profile
from agent.stats.types import FrameStats


def test_doctests() -> None:
    assert doctest.testmod(forward).failed == 0


def test_hand_computed_window() -> None:
    """14 one-frame blocks, radius 0: the first 10 calibrate, the last 4 are scored.

    Past scores 1..10: score k (2..9) is exceeded by 10 - k of the 9 others and lies half-way
    from k - 1 to k + 1, so its interpolated count c = 10 - k - 0.5 is put on the scale of 10
    frames as c * 10 / 9; score 1 is at the bottom (p = 1) and 10 beyond all (1/10, scaled to
    1/11): out-of-block p-values 1/11, 14/99, 24/99, ..., 84/99, 11/11. Future scores 0, 5.5,
    10.5, 100 (no tail) get p = 1, 5.5/11, 1/11, 1/11; family p-values 1, (1 + 5)/11,
    (1 + 1)/11, (1 + 1)/11. At alpha 0.2 two are flagged. 10 past states at alpha 0.2
    give the beta-binomial a = 0.2 * 11 = 2.2, b = 8.8:
    P(X = 0) = (8.8 * 9.8 * 10.8 * 11.8) / (11 * 12 * 13 * 14) = 0.45748,
    P(X = 1) = 4 * 2.2 * (8.8 * 9.8 * 10.8) / (11 * 12 * 13 * 14) = 0.34117, so P(X >= 2) = 0.20135.
    """
    scores = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 5.5, 10.5, 100]

    def window(values: list[float], tolerance: float = 0.0) -> forward.ForwardCheck | None:
        series = ScoreSeries("t", values, tolerance, max(tolerance, 1e-6))
        return forward_check([series], np.arange(14), alpha=0.2, autocorrelation=1.0, radius=0, tail_k=0)

    check = window(scores)
    assert check is not None
    assert (check.past, check.future, check.flagged, check.states) == (10, 4, 2, 4.0)
    assert check.p_value == pytest.approx(0.20135, abs=1e-5)
    assert check.passed
    # Every future score beyond the past ones: P(X = 4) = (2.2 * 3.2 * 4.2 * 5.2) / 24024 = 0.0064 < 1 %.
    worse = window([*scores[:10], 11, 10.5, 12, 100])
    assert worse is not None and worse.flagged == 4
    assert worse.p_value == pytest.approx(beta_binomial_tail(4, 4, 2.2, 8.8)) == pytest.approx(0.0064, abs=1e-6)
    assert not worse.passed
    # A tolerance of 10 widens the past scores beyond each other (every out-of-block p-value is 1)
    # and beyond 10.5: only 100 is still beyond them (the Bonferroni fallback 1/11).
    widened = window(scores, tolerance=10.0)
    assert widened is not None and widened.flagged == 1


def test_episodes_are_counted_in_autocorrelation_times() -> None:
    """30 correlated frames flagged in a row are one episode, not 30 independent alarms."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=600)
    scores[-60:-30] += 50.0  # one 30-frame episode in the future part
    check = forward_check(
        [ScoreSeries("t", scores.tolist(), 0.0, 1e-6)], np.arange(600) // 10, alpha=0.05, autocorrelation=30.0
    )
    assert check is not None and check.flagged >= 30
    assert check.states == pytest.approx(200 / 30)
    past_states = check.past / 30
    a, b = 0.05 * (past_states + 1), 0.95 * (past_states + 1)
    assert check.p_value == pytest.approx(beta_binomial_tail(7, round(check.flagged / 30), a, b))


def test_stationary_scores_pass_and_a_shift_fails() -> None:
    rng = np.random.default_rng(1)
    blocks = np.arange(900) // 30
    clean = [ScoreSeries(f"t{k}", rng.normal(size=900).tolist(), 0.0, 1e-6) for k in range(3)]
    ok = forward_check(clean, blocks, alpha=0.05, autocorrelation=1.0)
    assert ok is not None and ok.passed, ok
    assert ok.flagged / ok.future < 0.1
    shifted = [dataclasses.replace(t, scores=[*t.scores[:600], *(s + 1.5 for s in t.scores[600:])]) for t in clean]
    bad = forward_check(shifted, blocks, alpha=0.05, autocorrelation=1.0)
    assert bad is not None and not bad.passed
    assert "flagged" in bad.describe() and "stationary" in bad.describe()


def test_tests_that_never_applied_before_the_cut_are_skipped_and_short_windows_unchecked() -> None:
    blocks = np.arange(120) // 10  # 12 blocks
    never = ScoreSeries("never", [float("nan")] * 120, 0.0, 1e-6)
    assert forward_check([never], blocks, alpha=0.05, autocorrelation=1.0) is None
    late = ScoreSeries("late", [float("nan")] * 80 + [9.0] * 40, 0.0, 1e-6)
    steady = ScoreSeries("steady", [1.0] * 120, 0.0, 1e-6)
    check = forward_check([steady, late], blocks, alpha=0.05, autocorrelation=1.0)
    assert isinstance(check, ForwardCheck) and check.flagged == 0
    assert forward_check([steady], np.arange(120) // 20, alpha=0.05, autocorrelation=1.0) is None  # 6 blocks
    with pytest.raises(ValueError, match="10 scores for 120 block ids"):
        forward_check([ScoreSeries("t", [1.0] * 10, 0.0, 1e-6)], blocks, alpha=0.05, autocorrelation=1.0)


@pytest.fixture(scope="module")
def shuffled() -> list[FrameStats]:
    """Frames at random times: 160 of them resolve alpha 0.05 (see test_profile)."""
    stats = synthetic_stats("synthetic://clean?size=96x64&seed=9&frames=200")
    return [stats[i] for i in np.random.default_rng(3).permutation(len(stats))][:160]


def _build(frames: list[FrameStats]) -> Profile:
    cal = Calibrator(CalibrationConfig(frames=160), (4, 4))
    for s in frames:
        cal.update(s)
    return cal.build(alpha_flag=0.05)


def _tolerances(profile: Profile) -> dict[str, float]:
    return {t.name: t.tolerance for t in profile.tests}


def test_a_window_that_darkens_keeps_the_tolerances(
    shuffled: list[FrameStats], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The same independent frames, dimmed by up to 20 % over the window's second half (dusk
    during calibration): enough states for alpha 0.05, but the last third is darker than the
    rest, so the calibrator keeps the default tolerances and says why."""
    steady = _build(shuffled)
    assert _tolerances(steady) == exact_tolerances(steady)  # stationary: exact (tamper tolerances kept)
    said = CalibrationResult(steady, tmp_path / "s.json", 160, 160, 1.0, "steady.mp4").summary()
    assert "exact conformal p-values (no tolerances but those of covered, defocused, frozen" in said
    assert steady.forward_check is not None and steady.forward_check.passed
    dusk = [
        dataclasses.replace(s, brightness=s.brightness * (1 - 0.2 * max(0, i - 80) / 80))
        for i, s in enumerate(shuffled)
    ]
    with caplog.at_level("WARNING", logger="agent.scoring.calibrate"):
        profile = _build(dusk)
    tolerances = _tolerances(profile)
    assert tolerances["dark"] > 0 and tolerances["blur"] > 0
    assert "scene changed along the calibration window" in caplog.text
    assert "default tolerances kept" in caplog.text
    # The profile records the check (and keeps it through a save), and edge-guard calibrate says it.
    fc = Profile.from_dict(profile.model_dump(mode="json")).forward_check
    assert fc is not None and not fc.passed and fc.p_value < 0.01 and fc.flagged > 0.5 * fc.future
    result = CalibrationResult(profile, tmp_path / "p.json", 160, 160, 1.0, "dusk.mp4")
    assert "but the scene changed along the window" in result.summary()
