"""Adversarial-looking inputs (reason ``adversarial``): feature squeezing and high-frequency energy.

**adversarial_squeeze** (Xu, Evans & Qi, NDSS 2018). The model also runs on squeezed copies
of the frame's model-input canvas — bit-depth reduction to 5 bits and a 3x3 median
(agent.gpu.squeeze, the same definitions on CPU and GPU) — in the *same* batched call as the
plain frame. With p the plain probability vector and q_j the squeezed ones,

    score = max_j || p - q_j ||_1          (0 .. 2)

A natural image's prediction barely moves under squeezing; an adversarial perturbation is a
fragile, high-frequency pattern that the squeezers partly erase, so its prediction moves.
Classifiers only (the score needs probability vectors). Cost: two extra model passes per
frame (batched), so ``calibration.squeeze.enabled`` is off by default; the benchmark
(benchmarks/bench_detection.py) measures both its detection and its cost.

**adversarial_hf** (on whenever the guard sees the frame's pixels; ~1 ms at 768x432). L-inf
attacks (FGSM, PGD) add a sign-like pattern of amplitude eps to every pixel, and the
gradient's sign differs between colour channels, so the attack puts high-frequency energy
into the colour differences B - G and R - G, where natural images have almost none (optics
blur chroma, cameras subsample and denoise it). Per tile, c_t = ln(1 + chroma noise floor)
(observation.chroma_energy: Immerkaer's noise kernel on the colour differences, the 10th
percentile over small blocks, so colourful edges do not count) is compared
with the tile's calibrated median m_t, and the score is the 25th percentile over tiles of
c_t - m_t (three quarters of the view gained chroma noise; a colourful object entering a few
tiles does not count), in log units, tolerance 0.1 (10 % more chroma energy is noise, not an
attack). Floors below ``REQUANTIZATION_FLOOR`` count as that floor, in the frame and in the
calibration alike: rounding each channel to 8 bits after any processing (a scaler, a
denoiser, a transcoder, a software blur) leaves independent per-channel errors of up to half
a code value, whose floor is ~3 (``requantization_floor``), while a codec's subsampled chroma can
sit near 0.5. Without it, every frame processed in floating point after decoding (ImageNet-C's
defocus, contrast, fog: 100 % of such vtest frames) was called ``adversarial``, though a
perturbation of even 1/255 with its own sign per channel gives a floor of ~11. Measured on
the photos against SqueezeNet (benchmarks/bench_detection.py): PGD and FGSM at 4/255 and
8/255 stand above the clean photos, where squeezing alone catches 11-56 %.

**What an adaptive attacker can do** (docs/detection.md repeats this): (1) attack through the
squeezers (optimise the loss on the plain *and* squeezed inputs, or BPDA/EOT), which defeats
squeezing at the cost of a larger perturbation; (2) perturb luma only (the same sign in all channels)
or keep the perturbation smooth / confined to a few tiles (low-frequency or masked attacks), so
the chroma energy of most tiles stays within the calibrated profile; (3) use a physical
patch instead (then ``patch`` is the relevant test).
Neither score is a certificate; both raise the cost of an attack that ignores them.

>>> import numpy as np
>>> p = np.array([0.9, 0.1]); q1 = np.array([0.8, 0.2]); q2 = np.array([0.3, 0.7])
>>> round(squeeze_distance(p, [q1, q2]), 3)
1.2
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.gpu.squeeze import Squeeze, parse_squeezers, slot_layout, split_by_variant, squeezed_canvases
from agent.model.config import PreprocessConfig
from agent.model.types import ModelOutput, ModelRunner
from agent.scoring.base import Params, Test, register
from agent.scoring.config import CalibrationConfig, SqueezeConfig
from agent.scoring.nanstats import nan_median
from agent.scoring.observation import Observation, chroma_energy

__all__ = [
    "REQUANTIZATION_FLOOR",
    "AdversarialHF",
    "AdversarialSqueeze",
    "FeatureSqueezer",
    "SqueezeResult",
    "make_squeezer",
    "requantization_floor",
    "squeeze_distance",
    "squeeze_scores",
]

FloatArray = npt.NDArray[np.float64]

logger = logging.getLogger(__name__)

#: The chroma noise floor (observation.chroma_energy) that nothing at or below counts as an attack:
#: about what two independent 8-bit roundings of each channel leave (one: ~3.0, see
#: ``requantization_floor``; the errors add, so two: ~3.0 x sqrt 2). An L-inf perturbation of
#: 1/255 with its own sign per channel gives ~11, of 2/255 ~21.
REQUANTIZATION_FLOOR: float = 4.0


def requantization_floor(shape: tuple[int, int] = (432, 768), grid: tuple[int, int] = (4, 4), seed: int = 0) -> float:
    """The median tile floor of independent rounding errors (uniform within +-1/2 code value per channel).

    Measured, not derived: chroma_energy of a uint8 image holding the errors scaled by 40
    (so they survive as integers), divided by 40 again (the floor is linear in the image).
    """
    scale = 40.0
    errors = np.random.default_rng(seed).uniform(-0.5, 0.5, (*shape, 3))
    image = (128.0 + np.rint(scale * errors)).astype(np.uint8)
    return float(np.nanmedian(chroma_energy(image, grid))) / scale


def squeeze_distance(plain: npt.ArrayLike, squeezed: Sequence[npt.ArrayLike]) -> float:
    """max_j ||plain - squeezed_j||_1 of probability vectors (NaN without squeezed copies)."""
    p = np.asarray(plain, dtype=np.float64).ravel()
    dists = [float(np.abs(p - np.asarray(q, dtype=np.float64).ravel()).sum()) for q in squeezed]
    return max(dists) if dists else math.nan


def squeeze_scores(outputs: Sequence[ModelOutput], squeezed: Mapping[str, Sequence[ModelOutput]]) -> list[float]:
    """Per-frame squeezing distance from plain outputs and {squeezer: outputs} (NaN without probs)."""
    out: list[float] = []
    for i, plain in enumerate(outputs):
        copies = [s[i].probs for s in squeezed.values()]
        if plain.probs is None or any(c is None for c in copies):
            out.append(math.nan)
            continue
        out.append(squeeze_distance(plain.probs, [c for c in copies if c is not None]))
    return out


@dataclass(frozen=True, slots=True)
class SqueezeResult:
    """One batched call: the plain outputs and each frame's squeezing distance."""

    outputs: list[ModelOutput]
    scores: list[float]


class FeatureSqueezer:
    """Runs a ModelRunner on frames and their squeezed copies in ONE ``infer`` call (CPU squeezing).

    ``squeezers``: e.g. ``"bits:5,median:3"`` (agent.gpu.squeeze.parse_squeezers). The
    squeezed copies are made on the model-input canvas (after resize/letterbox), so the
    runner's own resize is the identity for them. A runner with a fixed batch size still
    gets one call; it chunks internally.
    """

    def __init__(self, model: ModelRunner, preprocess: PreprocessConfig, squeezers: str = "bits:5,median:3") -> None:
        self.model = model
        self.preprocess = preprocess
        self.squeezers: tuple[Squeeze, ...] = parse_squeezers(squeezers)
        if not self.squeezers:
            raise ValueError("FeatureSqueezer needs at least one squeezer, but got none")

    def infer(self, images: list[npt.NDArray[np.uint8]]) -> SqueezeResult:
        """Plain outputs of ``images`` and their squeezing distances."""
        if not images:
            return SqueezeResult([], [])
        batch = list(images) + squeezed_canvases(images, self.preprocess, self.squeezers)
        assert len(batch) == len(slot_layout(len(images), self.squeezers))
        plain, squeezed = split_by_variant(self.model.infer(batch), len(images), self.squeezers)
        return SqueezeResult(plain, squeeze_scores(plain, squeezed))


def make_squeezer(
    model: ModelRunner | None, preprocess: PreprocessConfig, cfg: SqueezeConfig
) -> FeatureSqueezer | None:
    """The squeezer the measuring stage should use, or None (squeezing off, no model, or a detector)."""
    if not cfg.enabled or model is None:
        return None
    if model.info.kind != "classifier":
        logger.warning("calibration.squeeze.enabled is ignored: squeezing needs a classifier, the model is a %s",
                       model.info.kind)
        return None
    return FeatureSqueezer(model, preprocess, cfg.squeezers)


@register
class AdversarialSqueeze(Test):
    """Feature-squeezing distance (Observation.squeeze); not applicable without it."""

    name = "adversarial_squeeze"
    reason = "adversarial"
    default_tolerance = 0.02

    def compute(self, obs: Observation) -> float:
        return math.nan if obs.squeeze is None else float(obs.squeeze)


@register
class AdversarialHF(Test):
    """25th percentile over tiles of the chroma energy above the tile's median (module docstring)."""

    name = "adversarial_hf"
    reason = "adversarial"
    default_tolerance = 0.1
    default_resolution = 0.05
    fitted = True
    needs_image = True

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self.median: FloatArray | None = None  # (T,) median ln(1 + chroma energy) per tile

    def fit(self, observations: Sequence[Observation]) -> None:
        rows = [_log_floor(o.chroma) for o in observations if o.chroma is not None]
        self.median = np.nan_to_num(nan_median(np.stack(rows))) if len(rows) >= 2 else None

    def params(self) -> Params:
        return {} if self.median is None else {"median": self.median.tolist()}

    def load_params(self, params: Params) -> None:
        med = np.asarray(params.get("median", []), dtype=np.float64)
        if med.ndim != 1 or med.size == 0 or not np.isfinite(med).all():
            raise ValueError(f"adversarial_hf: median must be a non-empty 1-D array of numbers, got shape {med.shape}")
        self.median = med

    def compute(self, obs: Observation) -> float:
        if obs.chroma is None or self.median is None:
            return math.nan
        if obs.chroma.shape != self.median.shape:
            raise ValueError(f"adversarial_hf: {obs.chroma.shape[0]} tiles, but the profile has {self.median.shape[0]}")
        d = _log_floor(obs.chroma) - self.median
        d = d[~np.isnan(d)]
        return float(np.percentile(d, 25.0)) if d.size else math.nan


def _log_floor(chroma: FloatArray) -> FloatArray:
    """ln(1 + chroma noise floor), floors below REQUANTIZATION_FLOOR counted as it (NaN stays NaN)."""
    return np.log1p(np.maximum(chroma, REQUANTIZATION_FLOOR))
