"""What the model stage hands to scoring: one ModelOutput per frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["ModelInfo", "ModelOutput", "ModelRunner"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """Decoded model output for one frame.

    Classifiers: ``probs`` (C,) sums to 1; ``logits`` (C,) when the model exposes them
    (None when the model already outputs probabilities); ``top1``/``confidence`` the argmax.
    Detectors: ``detections`` (K, 6) rows [x1, y1, x2, y2, score, class] in frame pixels;
    ``confidence`` is the highest detection score (0 with no detections), ``top1`` its class
    (-1 with none).
    """

    top1: int
    confidence: float
    probs: F32 | None = None
    logits: F32 | None = None
    detections: F32 | None = None
    label: str | None = None

    @property
    def entropy(self) -> float | None:
        """Shannon entropy of ``probs`` in nats."""
        if self.probs is None:
            return None
        p = np.clip(self.probs.astype(np.float64), 1e-12, 1.0)
        return float(-(p * np.log(p)).sum())

    @property
    def energy(self) -> float | None:
        """Free energy -logsumexp(logits); from log(probs) when logits are unknown (then it is 0)."""
        if self.logits is None:
            return None
        z = self.logits.astype(np.float64)
        m = float(z.max())
        return -(m + float(np.log(np.exp(z - m).sum())))


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Identity of the loaded model, recorded in profiles and every published message."""

    path: str
    sha256: str
    kind: str
    input_name: str
    input_size_wh: tuple[int, int]
    provider: str
    num_classes: int | None = None
    labels: tuple[str, ...] = field(default_factory=tuple)


class ModelRunner(Protocol):
    """Runs a model on BGR uint8 frames."""

    info: ModelInfo

    def infer(self, images: list[npt.NDArray[np.uint8]]) -> list[ModelOutput]:
        """Preprocess, run and decode a batch of frames (any sizes)."""
        ...

    def warmup(self) -> None:
        """Run one dummy inference (first-run JIT / engine setup) before READY."""
        ...
