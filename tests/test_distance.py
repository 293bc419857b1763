"""The robust-distance tests (ood_stats, color_cast, ood_detections) share one fit, store and score."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import person_boxes, synthetic_stats

from agent.scoring.distance import RobustDistanceTest
from agent.scoring.observation import Observation, observe
from agent.scoring.ood import OodDetections, OodStats
from agent.scoring.rules import ColorCast

W, H = 160, 90


@pytest.fixture(scope="module")
def observations() -> list[Observation]:
    rng = np.random.default_rng(0)
    stats = synthetic_stats(f"synthetic://clean?size={W}x{H}&seed=3&frames=60")
    return [observe(s, person_boxes(rng, int(rng.integers(3, 9)), (W, H))) for s in stats]


@pytest.mark.parametrize("cls", [OodStats, ColorCast, OodDetections])
def test_params_round_trip(cls: type[RobustDistanceTest], observations: list[Observation]) -> None:
    """A fitted test and one loaded from its stored params score every frame the same."""
    test = cls()
    test.fit(observations[:50])
    params = test.params()
    assert params["features"] == list(cls.features) and len(params["location"]) == len(cls.features)
    again = cls()
    again.load_params(params)
    for obs in observations[50:]:
        assert again.compute(obs) == pytest.approx(test.compute(obs)) and math.isfinite(test.compute(obs))
    with pytest.raises(ValueError, match=f"{cls.name} features must be"):
        again.load_params({**params, "features": ["log_brightness"]})


@pytest.mark.parametrize("cls", [OodStats, ColorCast, OodDetections])
def test_score_before_fit_is_an_error(cls: type[RobustDistanceTest], observations: list[Observation]) -> None:
    with pytest.raises(RuntimeError, match=f"{cls.name}: fit"):
        cls().compute(observations[0])


def test_detections_need_two_frames_with_boxes(observations: list[Observation]) -> None:
    """A classifier's frames carry no boxes: ood_detections has no model and does not apply."""
    plain = [observe(o.stats, None) for o in observations]
    test = OodDetections()
    test.fit([*plain, observations[0]])
    assert test.model is None and test.params() == {} and math.isnan(test.compute(observations[1]))
    test.fit(observations[:2])
    assert test.model is not None and math.isfinite(test.compute(observations[2]))
