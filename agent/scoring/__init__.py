"""Scoring: calibration profiles, conformal tests and the PASS/FLAG/BLOCK policy.

Typical use::

    cal = Calibrator(cfg.calibration, grid=cfg.stats.grid)
    for frame in clean_frames:
        cal.update(stats_of(frame), model_output_of(frame))
        if cal.done:
            break
    profile = cal.build(model_sha256=info.sha256, config_hash=config_hash(cfg))
    guard = Guard(profile, cfg.policy)
    verdict = guard.update(frame, stats, output, latency_ms)

See docs/detection.md for every test, its p-value and the family-wise guarantee.
"""

from agent.scoring.base import TEST_REGISTRY, Scorer, Test, register
from agent.scoring.calibrate import DEFAULT_TESTS, Calibrator
from agent.scoring.config import CalibrationConfig, PolicyConfig
from agent.scoring.conformal import ConformalScorer
from agent.scoring.family import FamilyCombiner
from agent.scoring.observation import FEATURES, Observation, observe
from agent.scoring.policy import Guard
from agent.scoring.profile import PROFILE_VERSION, Profile

__all__ = [
    "DEFAULT_TESTS",
    "FEATURES",
    "PROFILE_VERSION",
    "TEST_REGISTRY",
    "CalibrationConfig",
    "Calibrator",
    "ConformalScorer",
    "FamilyCombiner",
    "Guard",
    "Observation",
    "PolicyConfig",
    "Profile",
    "Scorer",
    "Test",
    "observe",
    "register",
]
