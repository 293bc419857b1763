"""Out-of-distribution tests: the whole statistics vector, and the model's own output.

``ood_stats``: robust Mahalanobis distance d(x) = sqrt((x - m)^T C^-1 (x - m)) of the
frame's FEATURES vector x to the robust location m and scatter C fitted on the FIT part
(robust.fit_robust_gaussian); p-value conformal on the CALIBRATION part.

``ood_model``: an output-based score, chosen at fit time from what the model gives:
free energy E = -logsumexp(logits) when logits exist (Liu et al. 2020: higher energy =
less familiar), else 1 - max-softmax (Hendrycks & Gimpel 2017) for classifiers, or
1 - best detection score for detectors. Absent when the profile has no model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from agent.scoring.base import Params, Test, register
from agent.scoring.config import CalibrationConfig
from agent.scoring.observation import FEATURE_TOLERANCE, FEATURES, Observation
from agent.scoring.robust import RobustGaussian, fit_robust_gaussian

__all__ = ["MODEL_SCORE_KINDS", "OOD_FEATURES", "OodModel", "OodStats"]

MODEL_SCORE_KINDS: tuple[str, ...] = ("energy", "msp", "detection")
#: Features in ood_stats: all but ``motion`` (a genuine change between two clean frames, e.g.
#: the first frame after a fault or a person stepping in, is not a property of the frame) and
#: ``tile_structure`` (its lower quartile over tiles jumps whenever an object enters a flat
#: part of the view; ``covered`` tests the upper quartile, ``tile_structure_hi``, instead).
OOD_FEATURES: tuple[str, ...] = tuple(
    f for f in FEATURES if f not in ("motion", "tile_structure", "tile_structure_hi")
)
_OOD_IDX = [FEATURES.index(f) for f in OOD_FEATURES]


@register
class OodStats(Test):
    """Robust Mahalanobis distance of the FEATURES vector to the calibrated profile."""

    name = "ood_stats"
    default_tolerance = 1.0

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self.model: RobustGaussian | None = None

    def fit(self, observations: Sequence[Observation]) -> None:
        x = np.stack([o.features[_OOD_IDX] for o in observations])  # (n, p)
        self.model = fit_robust_gaussian(x, np.asarray([FEATURE_TOLERANCE[i] for i in _OOD_IDX]))

    def params(self) -> Params:
        if self.model is None:
            return {}
        return {
            "features": list(OOD_FEATURES),
            "location": self.model.location.tolist(),
            "scatter": self.model.scatter.tolist(),
        }

    def load_params(self, params: Params) -> None:
        if list(params.get("features", [])) != list(OOD_FEATURES):
            raise ValueError(f"ood_stats features must be {list(OOD_FEATURES)}, but got {params.get('features')}")
        self.model = RobustGaussian.from_arrays(params["location"], params["scatter"])

    def compute(self, obs: Observation) -> float:
        if self.model is None:
            raise RuntimeError("ood_stats: fit() or load_params() must come before update()")
        return self.model.distance(obs.features[_OOD_IDX])


@register
class OodModel(Test):
    """Model-output OOD score: energy (logits), else 1 - confidence (see module docstring)."""

    name = "ood_model"
    default_tolerance = 0.02

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self.kind: str | None = None

    def fit(self, observations: Sequence[Observation]) -> None:
        outs = [o.model for o in observations if o.model is not None]
        if not outs:
            raise ValueError("ood_model needs model outputs on the calibration frames, but got none")
        if all(m.energy is not None for m in outs):
            self.kind = "energy"
        elif all(m.entropy is not None for m in outs):
            self.kind = "msp"
        else:
            self.kind = "detection"

    def params(self) -> Params:
        return {"kind": self.kind}

    def load_params(self, params: Params) -> None:
        kind = params.get("kind")
        if kind not in MODEL_SCORE_KINDS:
            raise ValueError(f"ood_model kind must be one of {MODEL_SCORE_KINDS}, but got {kind!r}")
        self.kind = str(kind)

    def compute(self, obs: Observation) -> float:
        m = obs.model
        if m is None:
            return math.nan
        if self.kind == "energy":
            return math.nan if m.energy is None else m.energy
        return 1.0 - m.confidence
