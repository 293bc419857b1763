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

Give the calibrator and the guard the frame's image (``image=``, ``Frame.image``) for the
image-based tests (``moved``, ``adversarial_hf``), and the squeezing distance (``squeeze=``,
``FeatureSqueezer``) when squeezing is on. Tamper alarms: ``guard.tamper_states``; drift:
``guard.drift_snapshot()`` (health summaries) and ``guard.drift_events()`` (``drift`` events).

See docs/detection.md for every test, its p-value and the family-wise guarantee.
"""

from agent.scoring.adversarial import FeatureSqueezer, make_squeezer
from agent.scoring.base import TEST_REGISTRY, Scorer, Test, register
from agent.scoring.calibrate import DEFAULT_TESTS, OPTIONAL_TESTS, Calibrator
from agent.scoring.config import CalibrationConfig, DriftConfig, PolicyConfig, SqueezeConfig, TamperConfig
from agent.scoring.conformal import ConformalScorer
from agent.scoring.drift import DriftEvent, DriftMonitor, DriftSnapshot
from agent.scoring.family import FamilyCombiner
from agent.scoring.observation import FEATURES, Observation, observe
from agent.scoring.policy import Guard
from agent.scoring.profile import PROFILE_VERSION, Profile
from agent.scoring.tamper import TAMPER_REASONS, TamperMonitor, TamperState

__all__ = [
    "DEFAULT_TESTS",
    "FEATURES",
    "OPTIONAL_TESTS",
    "PROFILE_VERSION",
    "TAMPER_REASONS",
    "TEST_REGISTRY",
    "CalibrationConfig",
    "Calibrator",
    "ConformalScorer",
    "DriftConfig",
    "DriftEvent",
    "DriftMonitor",
    "DriftSnapshot",
    "FamilyCombiner",
    "FeatureSqueezer",
    "Guard",
    "Observation",
    "PolicyConfig",
    "Profile",
    "Scorer",
    "SqueezeConfig",
    "TamperConfig",
    "TamperMonitor",
    "TamperState",
    "Test",
    "make_squeezer",
    "observe",
    "register",
]
