"""The pluggable test interface: every detector is a ``Test`` in a list.

A test turns an Observation into a raw score (higher = more anomalous; NaN = not
applicable to this frame) and, once calibrated, into a one-sided conformal p-value.
Life cycle (river style: ``update()`` then read-only results)::

    test.fit(observations)             # learn parameters (most tests: nothing to learn)
    for obs in calibration_block:      # reset() at every block start (stateful tests)
        scores.append(test.update(obs).score)
    test.calibrate(scores, tail_k=25)

Tests that learn parameters set ``fitted = True``: the calibrator then scores each block with a
copy fitted without that block's fold and its neighbours (cross-fitting, calibrate.py), so
calibration scores are out-of-sample.
    ...
    test.update(obs).p_value           # at run time

Parameters round-trip through ``params()`` / ``load_params()`` (JSON-friendly) so a
profile can rebuild the test. New tests (issue 7: adversarial, patch, tamper) subclass
``Test`` and register with ``@register``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, Self, TypeVar, runtime_checkable

from agent.errors import ConfigError
from agent.scoring.config import ALL_TESTS, CalibrationConfig
from agent.scoring.conformal import ConformalScorer
from agent.scoring.observation import Observation

__all__ = ["TEST_REGISTRY", "Params", "Scorer", "Test", "make_test", "register"]

#: Tail-scale floor of tests with zero tolerance.
_MIN_RESOLUTION = 1e-6

#: JSON-friendly parameters of a test.
Params = dict[str, Any]


@runtime_checkable
class Scorer(Protocol):
    """What the policy needs of a test."""

    @property
    def name(self) -> str: ...

    @property
    def reason(self) -> str: ...

    def update(self, obs: Observation) -> Scorer: ...

    @property
    def score(self) -> float: ...

    @property
    def p_value(self) -> float: ...

    def reset(self) -> None: ...


class Test:
    """Base class of a calibrated test. Subclasses set ``name``, ``default_tolerance`` and ``compute()``.

    ``name``: the test's id (also its reason code unless ``reason`` is set).
    ``tolerance``: the smallest score difference that matters physically, in score units.
    Calibration scores are widened by it (conformal.ConformalScorer); ``CalibrationConfig.
    tolerances`` overrides it per test. ``resolution`` floors the scale of the extrapolated
    tail (default: the tolerance; smaller for tests whose faults lie far beyond calibration,
    e.g. ``frozen``, so that their p-values fall fast enough).
    """

    __test__ = False  # not a pytest test class
    name: ClassVar[str] = ""
    reason: ClassVar[str] = ""
    default_tolerance: ClassVar[float] = 0.0
    #: Tail-scale floor (None: the tolerance).
    default_resolution: ClassVar[float | None] = None
    #: True when ``fit`` learns parameters from the frames (cross-fitted at calibration).
    fitted: ClassVar[bool] = False
    #: True when the test reads image-derived parts of the Observation (thumbnail, chroma).
    needs_image: ClassVar[bool] = False
    #: True when the default tolerance is part of what the reason means, so calibration keeps it
    #: even where it resolves alpha and drops the others (the tamper reasons and ``warped``: a crowd
    #: that hides a few more blocks than calibration saw is not a moved camera, a dimmer evening not
    #: a cover, a pixel of wind jitter not a warp).
    keeps_tolerance: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.reason:
            cls.reason = cls.name

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else CalibrationConfig()
        tolerances = self.cfg.tolerances
        self.tolerance: float = 0.0
        self.resolution: float = _MIN_RESOLUTION
        self.set_tolerance(float(tolerances.get(self.name, tolerances.get(ALL_TESTS, self.default_tolerance))))
        self.conformal: ConformalScorer | None = None
        self._score = math.nan

    def set_tolerance(self, tolerance: float) -> None:
        """Set the tolerance and the tail-scale floor that follows from it.

        The floor is ``default_resolution`` (capped at a non-zero tolerance), else the
        tolerance itself, never below 1e-6: a test whose tolerance calibration recorded as 0
        gets the tail of a test configured with tolerance 0.
        """
        self.tolerance = tolerance
        res = self.default_resolution if self.default_resolution is not None else tolerance
        self.resolution = max(min(res, tolerance) if tolerance > 0 else res, _MIN_RESOLUTION)

    # --- calibration ---------------------------------------------------------------------
    def fit(self, observations: Sequence[Observation]) -> None:
        """Learn parameters from clean observations (default: nothing to learn)."""

    def inapplicable(self) -> str | None:
        """Why, after ``fit`` on all calibration frames, the test cannot apply to this camera at
        all (calibration then leaves it out of the profile); None where it can (the default)."""
        return None

    def params(self) -> Params:
        """Parameters learned by ``fit`` (JSON-friendly)."""
        return {}

    def load_params(self, params: Params) -> None:
        """Restore what ``params()`` returned."""
        if params:
            raise ValueError(f"test {self.name!r} takes no parameters, but got {sorted(params)}")

    def calibrate(self, scores: Sequence[float], tail_k: int) -> None:
        """Attach the conformal scorer built from calibration ``scores``."""
        self.conformal = ConformalScorer(
            scores, tail_k=tail_k, resolution=self.resolution, tolerance=self.tolerance
        )

    # --- streaming ------------------------------------------------------------------------
    def compute(self, obs: Observation) -> float:
        """Raw score of ``obs`` (higher = more anomalous, NaN = not applicable)."""
        raise NotImplementedError

    def update(self, obs: Observation) -> Self:
        """Score one frame; read ``score`` and ``p_value`` afterwards."""
        self._score = self.compute(obs)
        return self

    def reset(self) -> None:
        """Forget rolling state (a new block, a reconnected camera)."""

    @property
    def score(self) -> float:
        """Raw score of the last frame (NaN: not applicable)."""
        return self._score

    @property
    def detail(self) -> dict[str, float | int | str]:
        """Extra facts about the last score for ``Reason.detail`` (e.g. patch: the tile)."""
        return {}

    @property
    def p_value(self) -> float:
        """Conformal p-value of the last score (1 when not applicable or not calibrated)."""
        if self.conformal is None or math.isnan(self._score):
            return 1.0
        return self.conformal.p_value(self._score)


T = TypeVar("T", bound=type[Test])

#: name -> Test subclass; profiles rebuild tests from this.
TEST_REGISTRY: dict[str, type[Test]] = {}


def register(cls: T) -> T:
    """Class decorator adding a Test subclass to TEST_REGISTRY under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute `name`")
    if cls.name in TEST_REGISTRY and TEST_REGISTRY[cls.name] is not cls:
        raise ValueError(f"test name {cls.name!r} is already registered by {TEST_REGISTRY[cls.name].__name__}")
    TEST_REGISTRY[cls.name] = cls
    return cls


def make_test(name: str, cfg: CalibrationConfig) -> Test:
    """Instantiate the registered test ``name``."""
    factory: Callable[[CalibrationConfig], Test] | None = TEST_REGISTRY.get(name)
    if factory is None:
        raise KeyError(f"unknown test {name!r}; registered: {sorted(TEST_REGISTRY)}")
    unknown = sorted(set(cfg.tolerances) - set(TEST_REGISTRY) - {ALL_TESTS})
    if unknown:
        raise ConfigError(
            f"calibration.tolerances names unknown tests {unknown}; expected some of {sorted(TEST_REGISTRY)} "
            f"or {ALL_TESTS!r} (every test not named)"
        )
    return factory(cfg)
