"""The policy's output for one frame: PASS / FLAG / BLOCK with reasons."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from agent.model.types import ModelOutput
from agent.stats.types import FrameStats

__all__ = ["REASON_CODES", "Decision", "Reason", "Verdict"]


class Decision(enum.IntEnum):
    """Ordered so that max() of decisions is the most severe."""

    PASS = 0
    FLAG = 1
    BLOCK = 2

    def __str__(self) -> str:
        return self.name


#: Every reason code the policy may raise (docs/detection.md describes each).
REASON_CODES: tuple[str, ...] = (
    "dark",
    "overexposed",
    "glare",
    "blur",
    "low_saturation",
    "low_contrast",
    "noise",
    "covered",
    "frozen",
    "color_cast",
    "ood_stats",
    "ood_model",
    "adversarial",
    "patch",
    "defocused",
    "moved",
    "occluded",
    "warped",
    "drift",
    "resolution",
    "model_output",
)


@dataclass(frozen=True, slots=True)
class Reason:
    """One triggered test: its code, the raw score, its p-value (when conformal) and level."""

    code: str
    decision: Decision
    score: float
    p_value: float | None = None
    detail: dict[str, float | int | str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "decision": str(self.decision),
            "score": self.score,
            "p_value": self.p_value,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """Decision for one frame plus everything needed to explain and audit it."""

    camera_id: str
    seq: int
    capture_ts: float
    decision: Decision
    reasons: tuple[Reason, ...]
    scores: dict[str, float]
    p_values: dict[str, float]
    stats: FrameStats
    output: ModelOutput | None
    latency_ms: dict[str, float] = field(default_factory=dict)
    fault: str | None = None

    @property
    def reason_codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "camera_id": self.camera_id,
            "seq": self.seq,
            "capture_ts": self.capture_ts,
            "decision": str(self.decision),
            "reasons": [r.to_dict() for r in self.reasons],
            "scores": dict(self.scores),
            "p_values": dict(self.p_values),
            "stats": self.stats.to_dict(),
            "latency_ms": dict(self.latency_ms),
        }
        if self.output is not None:
            out["top1"] = self.output.top1
            out["label"] = self.output.label
            out["confidence"] = self.output.confidence
        if self.fault is not None:
            out["fault"] = self.fault
        return out
