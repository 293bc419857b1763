"""What every scorer sees of one frame: an Observation (statistics, features, model scores).

The transformed feature vector (``FEATURES``) is computed once per frame and shared by
all tests. Transforms make the statistics closer to additive and gain-invariant
(a camera's exposure multiplies luma, so logs of brightness/contrast shift by a constant,
and ``sharpness`` does not change when a frame is only darker):

| feature | definition |
|---|---|
| ``log_brightness`` | log(1 + brightness) |
| ``log_contrast`` | log(1 + contrast) |
| ``log_saturation`` | log(1 + saturation) |
| ``sharpness`` | log(1 + blur) - 2 log(1 + contrast): Laplacian energy relative to contrast |
| ``log_noise`` | log(1 + noise) |
| ``dark`` | log(1 + dark_frac / f), f = ``glare_floor`` |
| ``clip`` | log(1 + clip_frac / f) |
| ``cast_b`` / ``cast_r`` | log((1 + mean_b) / (1 + mean_g)), log((1 + mean_r) / (1 + mean_g)) |
| ``motion`` | log(0.1 + diff_prev) (NaN without a previous frame) |
| ``tile_spread`` | log(1 + std over tiles of tile brightness) |
| ``tile_structure`` | 25th percentile over tiles of log(1 + contrast_t) + 0.5 log(1 + blur_t) |
| ``tile_structure_hi`` | the same, 75th percentile (``covered`` tests it) |

Percentiles over tiles interpolate linearly between order statistics (NumPy's default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.model.types import ModelOutput
from agent.stats.types import TILE_FIELDS, FrameStats

__all__ = [
    "FEATURES",
    "FEATURE_TOLERANCE",
    "ModelScores",
    "Observation",
    "feature_vector",
    "model_scores",
    "observe",
    "tile_structure",
]

FloatArray = npt.NDArray[np.float64]

FEATURES: tuple[str, ...] = (
    "log_brightness",
    "log_contrast",
    "log_saturation",
    "sharpness",
    "log_noise",
    "dark",
    "clip",
    "cast_b",
    "cast_r",
    "motion",
    "tile_spread",
    "tile_structure",
    "tile_structure_hi",
)
#: Smallest spread of each feature that matters physically (5 % of brightness, contrast,
#: saturation or noise; 3 % of a channel ratio; ...): it floors the robust scatter, so a
#: feature that is nearly constant on clean frames (clip share 0, a static scene) does not
#: turn tiny changes into huge distances.
FEATURE_TOLERANCE: tuple[float, ...] = (0.05, 0.05, 0.05, 0.1, 0.05, 0.5, 0.5, 0.03, 0.03, 0.3, 0.1, 0.1, 0.1)
assert len(FEATURE_TOLERANCE) == len(FEATURES)

_C = TILE_FIELDS.index("contrast")
_L = TILE_FIELDS.index("blur")
_B = TILE_FIELDS.index("brightness")
MOTION_OFFSET: float = 0.1


def tile_structure(tiles: FloatArray) -> FloatArray:
    """Per-tile structure log(1 + contrast_t) + 0.5 log(1 + blur_t), flattened (rows*cols,)."""
    t = tiles.reshape(-1, tiles.shape[-1])
    out: FloatArray = np.log1p(t[:, _C]) + 0.5 * np.log1p(t[:, _L])
    return out


def _percentile(ordered: list[float], q: float) -> float:
    """Linear-interpolation percentile (q in [0, 100]) of an ascending list; NaN when empty."""
    if not ordered:
        return math.nan
    pos = q / 100.0 * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def feature_vector(stats: FrameStats, floor: float = 1e-3) -> FloatArray:
    """The FEATURES vector of one frame (see the module table). ``floor`` is ``glare_floor``."""
    log1p = math.log1p
    contrast = log1p(stats.contrast)
    diff = stats.diff_prev
    # 16 tiles: sorting a Python list beats np.percentile's overhead by ~20x
    struct = sorted(v for v in tile_structure(stats.tiles).tolist() if not math.isnan(v))
    bright = stats.tiles[:, :, _B]
    if np.isnan(bright).any():
        bright = bright[~np.isnan(bright)]
    return np.array(
        (
            log1p(stats.brightness),
            contrast,
            log1p(stats.saturation),
            log1p(stats.blur) - 2.0 * contrast,
            log1p(stats.noise),
            log1p(stats.dark_frac / floor),
            log1p(stats.clip_frac / floor),
            math.log((1.0 + stats.mean_b) / (1.0 + stats.mean_g)),
            math.log((1.0 + stats.mean_r) / (1.0 + stats.mean_g)),
            math.log(MOTION_OFFSET + diff) if not math.isnan(diff) else math.nan,
            log1p(float(bright.std())) if bright.size > 1 else 0.0,
            _percentile(struct, 25.0),
            _percentile(struct, 75.0),
        ),
        dtype=np.float64,
    )


@dataclass(frozen=True, slots=True)
class ModelScores:
    """Scalar summaries of a model output used by scoring (small enough to keep per frame).

    ``energy`` is -logsumexp(logits) (None without logits), ``entropy`` of the class
    probabilities (None for detectors), ``confidence`` the top-1 probability or best detection
    score, ``detections`` the number of detections (None for classifiers).
    """

    top1: int
    confidence: float
    entropy: float | None
    energy: float | None
    detections: int | None


def model_scores(output: ModelOutput | None) -> ModelScores | None:
    """Reduce a ModelOutput to ModelScores (None stays None)."""
    if output is None:
        return None
    return ModelScores(
        top1=int(output.top1),
        confidence=float(output.confidence),
        entropy=output.entropy,
        energy=output.energy,
        detections=None if output.detections is None else int(output.detections.shape[0]),
    )


@dataclass(frozen=True, slots=True)
class Observation:
    """One frame as scorers see it. ``live`` is False for files/folders (no frozen test then)."""

    stats: FrameStats
    features: FloatArray
    model: ModelScores | None
    live: bool = True

    def feature(self, name: str) -> float:
        return float(self.features[FEATURES.index(name)])


def observe(
    stats: FrameStats, output: ModelOutput | None, *, live: bool = True, floor: float = 1e-3
) -> Observation:
    """Build the Observation of one frame (features computed once here)."""
    return Observation(stats=stats, features=feature_vector(stats, floor), model=model_scores(output), live=live)
