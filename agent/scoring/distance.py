"""Tests scored by the robust Mahalanobis distance of a per-frame vector to its calibrated location.

``ood_stats`` (the transformed statistics), ``color_cast`` (the two channel ratios) and
``ood_detections`` (a detector's per-frame detection vector) differ only in the vector they
read and its scatter floors. The fit (robust.fit_robust_gaussian), the stored parameters
(``features``, ``location``, ``scatter``) and the score d(x) = sqrt((x - m)^T C^-1 (x - m))
are this class's; the p-value is conformal on the cross-fitted calibration scores, like
every test's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from agent.scoring.base import Params, Test
from agent.scoring.config import CalibrationConfig
from agent.scoring.observation import FloatArray, Observation
from agent.scoring.robust import RobustGaussian, fit_robust_gaussian

__all__ = ["RobustDistanceTest"]


class RobustDistanceTest(Test):
    """Subclasses set ``features`` (the vector's names, stored with the fit), ``floors`` (each
    feature's smallest physically meaningful spread, robust.py) and ``vector()``."""

    fitted = True
    features: ClassVar[tuple[str, ...]] = ()
    floors: ClassVar[tuple[float, ...]] = ()
    #: Fewest frames with a vector to fit on; with fewer the test has no model and does not apply.
    min_rows: ClassVar[int] = 1

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self.model: RobustGaussian | None = None
        self._ready = False  # fit() or load_params() was called

    def vector(self, obs: Observation) -> FloatArray | None:
        """The frame's vector, in ``features`` order; None where the frame has none."""
        raise NotImplementedError

    def fit(self, observations: Sequence[Observation]) -> None:
        rows = [v for v in map(self.vector, observations) if v is not None]
        self.model = None
        if len(rows) >= max(1, self.min_rows):
            self.model = fit_robust_gaussian(np.stack(rows), np.asarray(self.floors, dtype=np.float64))
        self._ready = True

    def params(self) -> Params:
        if self.model is None:
            return {}
        return {"features": list(self.features), "location": self.model.location.tolist(),
                "scatter": self.model.scatter.tolist()}

    def load_params(self, params: Params) -> None:
        if list(params.get("features", [])) != list(self.features):
            raise ValueError(f"{self.name} features must be {list(self.features)}, but got {params.get('features')}")
        self.model = RobustGaussian.from_arrays(params["location"], params["scatter"])
        self._ready = True

    def compute(self, obs: Observation) -> float:
        if not self._ready:
            raise RuntimeError(f"{self.name}: fit() or load_params() must come before update()")
        v = self.vector(obs)
        if self.model is None or v is None:
            return math.nan
        return self.model.distance(v)
