"""Builders that turn pipeline objects into the versioned payloads of schemas.py."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from agent.frame import Frame
from agent.health import HealthSummary
from agent.sinks.mqtt.episodes import Transition
from agent.sinks.mqtt.frames import EncodedJpeg
from agent.sinks.mqtt.identity import AgentIdentity
from agent.sinks.mqtt.schemas import (
    Backlog,
    CameraStatusMessage,
    CommandResponse,
    DriftEventMessage,
    EventMessage,
    HealthMessage,
    IdentityModel,
    NodeStatusMessage,
    ReasonModel,
    WorstFrame,
)
from agent.verdict import Verdict

__all__ = [
    "Backlog",
    "Envelopes",
    "camera_status",
    "command_response",
    "drift_event",
    "event",
    "frame_properties",
    "health",
    "node_status",
    "worst_frame",
]


def _num(x: float | None) -> float | None:
    """JSON has no NaN/inf: they become null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class Envelopes:
    """Makes the common envelope fields: unique msg ids and per-(type, camera) sequence numbers."""

    def __init__(self, identity: AgentIdentity, ids: Callable[[], Mapping[str, str | None]] | None = None) -> None:
        self.identity = identity
        self._live_ids = ids
        self._ids = itertools.count()
        self._seq: dict[tuple[str, str | None], int] = {}

    def refresh(self) -> AgentIdentity:
        """Pick up model/profile/config ids that changed (calibration finished, reload, SIGHUP)."""
        if self._live_ids is not None:
            now = self._live_ids()
            changes = {k: now[k] for k in ("model_sha256", "profile_id", "config_hash")
                       if k in now and now[k] != getattr(self.identity, k)}
            if changes:
                self.identity = self.identity.with_changes(**changes)
        return self.identity

    def next_id(self) -> str:
        return f"{self.identity.run_id}-{next(self._ids)}"

    def __call__(self, type_: str, camera_id: str | None, *, advance: bool = True) -> dict[str, Any]:
        """Envelope fields; ``advance=False`` (the last will) reuses the next sequence number."""
        key = (type_, camera_id)
        seq = self._seq.get(key, 0)
        if advance:
            self._seq[key] = seq + 1
        ident = self.refresh()
        return {
            "msg_id": self.next_id(),
            "seq": seq,
            "ts": time.time(),
            "site": ident.site,
            "node": ident.node,
            "camera_id": camera_id,
            "run_id": ident.run_id,
            "agent_version": ident.agent_version,
            "model_sha256": ident.model_sha256,
            "profile_id": ident.profile_id,
            "config_hash": ident.config_hash,
        }


def node_status(env: Envelopes, state: str, reason: str, since_ts: float, reconnects: int) -> NodeStatusMessage:
    ident = IdentityModel.model_validate(env.identity.to_dict())
    return NodeStatusMessage.model_validate({
        **env("node_status", None, advance=state != "offline"), "state": state, "reason": reason, "since_ts": since_ts,
        "reconnects": reconnects, "identity": ident,
    })


def camera_status(env: Envelopes, camera_id: str, state: str, reason: str, since_ts: float) -> CameraStatusMessage:
    return CameraStatusMessage.model_validate({
        **env("camera_status", camera_id), "state": state, "reason": reason, "since_ts": since_ts,
    })


def health(env: Envelopes, summary: HealthSummary, backlog: Backlog) -> HealthMessage:
    return HealthMessage.model_validate({**env("health", summary.camera_id), "summary": summary, "backlog": backlog})


def worst_frame(v: Verdict) -> WorstFrame:
    reasons = [
        ReasonModel(
            code=r.code, decision=r.decision.name, score=_num(r.score), p_value=_num(r.p_value),
            detail={str(k): (_num(x) if isinstance(x, float) else x) for k, x in r.detail.items()},
        )
        for r in v.reasons
    ]
    out = v.output
    return WorstFrame(
        seq=v.seq, capture_ts=v.capture_ts, decision=v.decision.name,
        reasons=reasons,
        scores={k: _num(x) for k, x in v.scores.items()},
        p_values={k: _num(x) for k, x in v.p_values.items()},
        stats={k: _num(x) for k, x in v.stats.scalars().items()},
        top1=None if out is None else out.top1,
        label=None if out is None else out.label,
        confidence=None if out is None else _num(out.confidence),
    )


def event(env: Envelopes, t: Transition) -> EventMessage:
    ep = t.episode
    return EventMessage.model_validate({
        **env("event", ep.camera_id),
        "event_id": ep.event_id, "lifecycle": t.lifecycle, "update_seq": ep.update_seq,
        "decision": ep.max_decision.name, "reason_codes": list(ep.reason_codes),
        "start_ts": ep.start_ts, "start_seq": ep.start_seq, "last_ts": ep.last_ts, "last_seq": ep.last_seq,
        "duration_s": max(0.0, ep.last_ts - ep.start_ts), "frames": ep.frames, "flag_frames": ep.flag_frames,
        "block_frames": ep.block_frames, "worst": worst_frame(ep.worst), "end_reason": t.end_reason,
    })


def drift_event(env: Envelopes, event: Mapping[str, object]) -> DriftEventMessage:
    """A ``drift`` event dict (agent.scoring.drift.DriftEvent.to_dict) as a versioned payload.

    The frame's ``seq`` becomes ``frame_seq`` (``seq`` is the envelope's message counter)."""
    camera_id = str(event["camera_id"])
    return DriftEventMessage.model_validate({
        **env("drift_event", camera_id),
        "detector": event["detector"], "lifecycle": event["lifecycle"], "frame_seq": event["seq"],
        "capture_ts": event["capture_ts"], "statistic": _opt_float(event.get("statistic")),
        "threshold": _opt_float(event.get("threshold")),
    })


def _opt_float(x: object) -> float | None:
    """A finite number, or None (JSON has no NaN/inf; anything else is not a number here)."""
    return _num(float(x)) if isinstance(x, int | float) else None


def command_response(
    env: Envelopes, command: str, *, status: str, request_id: str | None, reason: str | None, result: dict[str, Any]
) -> CommandResponse:
    return CommandResponse.model_validate({
        **env("command_response", None), "command": command[:128], "status": status,
        "request_id": request_id, "reason": reason, "result": result,
    })


def frame_properties(
    env: Envelopes, frame: Frame, verdict: Verdict | None, *, role: str, event_id: str, jpeg: EncodedJpeg, sha256: str
) -> list[list[str]]:
    """MQTT 5 user properties of a frame message (schema: FrameProperties), as [key, value] pairs.

    ``msg_id`` is added by the connection when it sends (as for every message)."""
    ident = env.identity
    props = {
        "schema": "edge-guard.frame/1",
        "event_id": event_id,
        "role": role,
        "seq": str(frame.seq),
        "ts": f"{frame.capture_ts:.6f}",
        "sha256": sha256,
        "camera_id": frame.camera_id,
        "site": ident.site,
        "node": ident.node,
        "width": str(jpeg.width),
        "height": str(jpeg.height),
        "quality": str(jpeg.quality),
        "decision": "PASS" if role == "reference" else (verdict.decision.name if verdict is not None else ""),
        "reasons": ",".join(verdict.reason_codes) if verdict is not None and role != "reference" else "",
        "model_sha256": ident.model_sha256 or "",
        "profile_id": ident.profile_id or "",
        "config_hash": ident.config_hash or "",
    }
    return [[k, v] for k, v in props.items()]
