"""Effective sample size of correlated frames (ess.py) and the calibrator's use of it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from helpers import exact_tolerances, synthetic_stats

from agent.scoring.calibrate import Calibrator
from agent.scoring.config import CalibrationConfig
from agent.scoring.ess import autocorrelation_time, effective_frames, frames_needed
from agent.scoring.profile import Profile
from agent.stats.types import FrameStats


def ar1(phi: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0] / np.sqrt(1.0 - phi * phi)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


@pytest.mark.parametrize(("phi", "lo", "hi"), [(0.9, 15.0, 23.0), (0.5, 2.6, 3.4)])
def test_ar1_autocorrelation_time_matches_theory(phi: float, lo: float, hi: float) -> None:
    # tau = (1 + phi) / (1 - phi): 19 for 0.9, 3 for 0.5
    assert lo <= autocorrelation_time(ar1(phi, 20_000, seed=3)) <= hi


def test_independent_frames_count_once_each() -> None:
    x = np.random.default_rng(1).normal(size=5000)
    assert 1.0 <= autocorrelation_time(x) <= 1.3


def test_nan_dropped_and_constant_is_one() -> None:
    x = ar1(0.9, 4000, seed=5)
    holes = x.copy()
    holes[::97] = np.nan
    assert abs(autocorrelation_time(holes) - autocorrelation_time(x[np.isfinite(holes)])) < 1e-9
    assert autocorrelation_time(np.full(50, 7.0)) == 1.0
    assert autocorrelation_time([1.0, 2.0]) == 1.0


def test_effective_frames_median_over_varying_features() -> None:
    n = 6000
    cols = np.column_stack([ar1(0.9, n, 1), ar1(0.9, n, 2), ar1(0.9, n, 4), np.zeros(n)])
    ess = effective_frames(cols)
    assert ess.frames == n
    assert 15.0 <= ess.autocorrelation <= 23.0  # the constant column does not pull it to 1
    assert ess.effective == pytest.approx(n / ess.autocorrelation)
    assert "independent scene states" in ess.describe()
    one = effective_frames(ar1(0.5, n, 9))  # 1-D: one feature
    assert 2.5 <= one.autocorrelation <= 3.5
    with pytest.raises(ValueError, match=r"\(n, F\)"):
        effective_frames(np.zeros((2, 2, 2)))


def test_effective_frames_never_exceeds_the_frames() -> None:
    ess = effective_frames(np.linspace(0.0, 1.0, 30)[:, None])  # a ramp: one long excursion
    assert 1.0 <= ess.autocorrelation <= 30.0 and ess.effective >= 1.0


def test_frames_needed() -> None:
    assert frames_needed(50.0, 0.01) == 4950
    assert frames_needed(0.5, 0.1) == 9  # tau floored at 1
    with pytest.raises(ValueError, match="alpha"):
        frames_needed(10.0, 1.0)


@pytest.fixture(scope="module")
def video_stats() -> list[FrameStats]:
    return synthetic_stats("synthetic://clean?size=128x72&seed=4&frames=200")


def calibrator(stats: list[FrameStats], stride: int = 1) -> Calibrator:
    cal = Calibrator(CalibrationConfig(frames=len(stats), stride=stride), (4, 4))
    for s in stats:
        cal.update(s)
    return cal


def test_profile_records_effective_frames_and_warns_for_fine_alpha(
    video_stats: list[FrameStats], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.scoring.calibrate"):
        profile = calibrator(video_stats).build(alpha_flag=0.01)
    assert profile.autocorrelation_frames is not None and profile.effective_frames is not None
    assert profile.autocorrelation_frames > 2.0  # a video, not independent draws
    assert profile.effective_frames == pytest.approx(profile.n_kept / profile.autocorrelation_frames)
    need = frames_needed(profile.autocorrelation_frames, 0.01)
    warned = [r.getMessage() for r in caplog.records if "independent scene states" in r.getMessage()]
    assert len(warned) == 1 and "alpha_flag=0.01" in warned[0] and f"about {need} frames" in warned[0], warned
    assert all(t.tolerance > 0 for t in profile.tests if t.name != "frozen")  # a short clip keeps them


def test_no_warning_when_the_states_resolve_alpha(
    video_stats: list[FrameStats], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.scoring.calibrate"):
        profile = calibrator(video_stats).build(alpha_flag=0.5)
    assert profile.effective_frames is not None and profile.effective_frames + 1 >= 2
    assert not [r for r in caplog.records if "independent scene states" in r.getMessage()]
    assert {t.name: t.tolerance for t in profile.tests} == exact_tolerances(profile)  # resolved: exact p-values


def test_older_profiles_without_the_fields_still_load(video_stats: list[FrameStats]) -> None:
    data = calibrator(video_stats).build().model_dump(mode="json")
    del data["autocorrelation_frames"], data["effective_frames"]
    loaded = Profile.from_dict(data)
    assert loaded.autocorrelation_frames is None and loaded.effective_frames is None
