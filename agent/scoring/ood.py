"""Out-of-distribution tests: the whole statistics vector, and the model's own output.

``ood_stats``: robust Mahalanobis distance d(x) = sqrt((x - m)^T C^-1 (x - m)) of the
frame's ``OOD_FEATURES`` vector x (the observation FEATURES but ``motion``, ``tile_structure``
and ``tile_contrast_hi``) to the robust location m and scatter C fitted on the calibration
frames (robust.fit_robust_gaussian); p-value conformal on the cross-fitted calibration scores.

``ood_model``: an output-based score, chosen at fit time from what the model gives:
free energy E = -logsumexp(logits) when logits exist (Liu et al. 2020: higher energy =
less familiar), else 1 - max-softmax (Hendrycks & Gimpel 2017) for classifiers, or
1 - best detection score for detectors. Absent when the profile has no model. Its default
tolerance depends on the kind (``KIND_TOLERANCE``: 0.5 nats of energy, 0.05 of confidence):
a model's output moves with what is in view, far more than the statistics do.

``ood_detections`` (detectors; reason ``ood_model``): robust Mahalanobis distance of the
frame's detection vector (detector_outputs.detection_vector: log(1 + count), mean score,
median log box area) to its robust location/scatter on the calibration frames (floors
0.3, 0.05, 0.3); a frame without detections is judged by its count alone (the other two
imputed at their location). The spatial distribution of detections is compared over
windows (drift.py), not per frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from agent.scoring.base import Params, Test, register
from agent.scoring.config import ALL_TESTS, CalibrationConfig
from agent.scoring.detector_outputs import DETECTION_FEATURES, detection_vector
from agent.scoring.distance import RobustDistanceTest
from agent.scoring.observation import FEATURE_TOLERANCE, FEATURES, FloatArray, Observation

__all__ = ["KIND_TOLERANCE", "MODEL_SCORE_KINDS", "OOD_FEATURES", "OodDetections", "OodModel", "OodStats"]

MODEL_SCORE_KINDS: tuple[str, ...] = ("energy", "msp", "detection")
#: Default tolerance of ood_model per score kind (``calibration.tolerances`` overrides it).
KIND_TOLERANCE: dict[str, float] = {"energy": 0.5, "msp": 0.05, "detection": 0.05}
#: Features in ood_stats: all but ``motion`` (a genuine change between two clean frames, e.g.
#: the first frame after a fault or a person stepping in, is not a property of the frame),
#: ``tile_structure`` (its lower quartile over tiles jumps whenever an object enters a flat
#: part of the view) and ``tile_contrast_hi`` (the upper quartile of tile contrast: ``covered``
#: tests it).
OOD_FEATURES: tuple[str, ...] = tuple(
    f for f in FEATURES if f not in ("motion", "tile_structure", "tile_contrast_hi")
)
_OOD_IDX = [FEATURES.index(f) for f in OOD_FEATURES]


@register
class OodStats(RobustDistanceTest):
    """Robust Mahalanobis distance of the OOD_FEATURES vector to the calibrated profile."""

    name = "ood_stats"
    default_tolerance = 1.0
    features = OOD_FEATURES
    floors = tuple(FEATURE_TOLERANCE[i] for i in _OOD_IDX)

    def vector(self, obs: Observation) -> FloatArray:
        return obs.features[_OOD_IDX]


@register
class OodModel(Test):
    """Model-output OOD score: energy (logits), else 1 - confidence (see module docstring)."""

    name = "ood_model"
    default_tolerance = 0.05

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self.kind: str | None = None

    def _set_kind(self, kind: str | None) -> None:
        self.kind = kind
        if kind is not None and not ({self.name, ALL_TESTS} & set(self.cfg.tolerances)):
            self.set_tolerance(KIND_TOLERANCE[kind])

    def fit(self, observations: Sequence[Observation]) -> None:
        outs = [o.model for o in observations if o.model is not None]
        if not outs:
            self._set_kind(None)  # no model: not applicable (left out of the profile)
        elif all(m.energy is not None for m in outs):
            self._set_kind("energy")
        elif all(m.entropy is not None for m in outs):
            self._set_kind("msp")
        else:
            self._set_kind("detection")

    def params(self) -> Params:
        return {"kind": self.kind}

    def load_params(self, params: Params) -> None:
        kind = params.get("kind")
        if kind not in MODEL_SCORE_KINDS:
            raise ValueError(f"ood_model kind must be one of {MODEL_SCORE_KINDS}, but got {kind!r}")
        self._set_kind(str(kind))

    def compute(self, obs: Observation) -> float:
        m = obs.model
        if m is None or self.kind is None:
            return math.nan
        if self.kind == "energy":
            return math.nan if m.energy is None else m.energy
        return 1.0 - m.confidence


#: Scatter floors of DETECTION_FEATURES: ~30 % in count or box size, 0.05 in mean score.
DETECTION_FLOORS: tuple[float, ...] = (0.3, 0.05, 0.3)


@register
class OodDetections(RobustDistanceTest):
    """Robust distance of a detector's per-frame detection vector (see the module docstring)."""

    name = "ood_detections"
    reason = "ood_model"
    default_tolerance = 1.0
    features = DETECTION_FEATURES
    floors = DETECTION_FLOORS
    min_rows = 2

    def vector(self, obs: Observation) -> FloatArray | None:
        if obs.model is None or obs.model.boxes is None:
            return None
        return detection_vector(obs.model.boxes)
