"""Versioned pydantic schemas of every MQTT payload (exported to docs/mqtt/*.schema.json).

Every JSON message shares the :class:`Payload` envelope: who sent it (site, node, camera,
run id, agent version), when, and which model/profile/config decided, so fleets can slice
and audit by them. ``msg_id`` is unique per message: collectors de-duplicate QoS 1
re-deliveries by it. ``seq`` counts messages per (type, camera) stream, so gaps are visible.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from agent.health import HealthSummary

__all__ = [
    "PAYLOAD_TYPES",
    "SCHEMA_VERSION",
    "Backlog",
    "CameraStatusMessage",
    "CommandRequest",
    "CommandResponse",
    "DriftEventMessage",
    "EventMessage",
    "FrameProperties",
    "HealthMessage",
    "IdentityModel",
    "LimitEntry",
    "LimitsArgs",
    "LimitsResult",
    "NodeStatusMessage",
    "Payload",
    "PingArgs",
    "ReasonModel",
    "ReloadProfileArgs",
    "SetThresholdsArgs",
    "SnapshotArgs",
    "WorstFrame",
    "schema_catalog",
]

#: Bumped on incompatible payload changes (also in every payload as ``v``).
SCHEMA_VERSION: int = 1

Decision = Literal["PASS", "FLAG", "BLOCK"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Payload(_Model):
    """Envelope fields carried by every JSON message."""

    type: str = Field(description="Payload type (node_status, camera_status, health, event, command_response).")
    v: int = Field(SCHEMA_VERSION, description="Schema version of this payload type.")
    msg_id: str = Field(description="Unique message id (<run_id>-<n>); de-duplicate QoS 1 re-deliveries by it.")
    seq: int = Field(ge=0, description="Sequence number within this (type, camera) stream since process start.")
    ts: float = Field(description="Wall-clock time the message was created (epoch seconds).")
    site: str = Field(description="Site name.")
    node: str = Field(description="Node (agent) name.")
    camera_id: str | None = Field(description="Camera the message is about; null for node-level messages.")
    run_id: str = Field(description="Fresh per agent process start.")
    agent_version: str = Field(description="edge-guard version.")
    model_sha256: str | None = Field(description="SHA-256 of the ONNX model in use.")
    profile_id: str | None = Field(description="Id of the calibration profile in use.")
    config_hash: str | None = Field(description="Hash of the effective configuration.")


class IdentityModel(_Model):
    """The agent identity (see agent.sinks.mqtt.identity.AgentIdentity)."""

    site: str
    node: str
    cameras: list[str]
    agent_version: str
    pid: int
    boot_id: str = Field(description="Kernel boot id: changes on reboot.")
    run_id: str
    model_sha256: str | None
    profile_id: str | None
    config_hash: str | None
    backends: dict[str, str] = Field(
        description="Backends in use, e.g. stats: cpu, model: onnxruntime:CUDAExecutionProvider.")


class NodeStatusMessage(Payload):
    """Retained ``<node>/status``; the last will carries ``offline``."""

    type: Literal["node_status"] = "node_status"
    state: Literal["online", "offline", "stopped"]
    reason: str = Field(description="Why: connected, last will (connection lost), clean shutdown...")
    since_ts: float = Field(description="When the agent process started (epoch seconds).")
    reconnects: int = Field(ge=0, description="Successful reconnects since start.")
    identity: IdentityModel


class CameraStatusMessage(Payload):
    """Retained ``<camera>/status``."""

    type: Literal["camera_status"] = "camera_status"
    state: Literal["online", "degraded", "offline"]
    reason: str = Field(description="Why, e.g. 'source down', 'pipeline stalled'.")
    since_ts: float = Field(description="When the camera entered this state.")


class Backlog(_Model):
    """Publisher backlog and drops, in every health message (cumulative counters since the spool was created
    for drops; since process start otherwise)."""

    connected: bool
    queued_msgs: int = Field(ge=0, description="Messages in the spool (not yet acknowledged by the broker).")
    queued_bytes: int = Field(ge=0, description="Bytes queued in the spool (payload, topic and properties).")
    oldest_age_s: float | None = Field(description="Age of the oldest queued message; null when empty.")
    inflight: int = Field(ge=0, description="Messages handed to the broker connection, awaiting PUBACK.")
    reconnects: int = Field(ge=0)
    sent: int = Field(ge=0, description="Publishes handed to the connection (re-sends included).")
    acked: int = Field(ge=0, description="Messages acknowledged by the broker.")
    replayed: int = Field(
        ge=0,
        description="Publishes of messages queued before the current connection (re-sends included, acknowledged "
        "or not).",
    )
    drops: dict[str, int] = Field(description="Messages dropped from the spool, by class (frame, health, ...).")
    drops_by_cause: dict[str, int] = Field(description="Drops by cause: cap, age, broker_rejected, too_large.")
    frames_published: int = Field(ge=0, description="JPEG frames spooled.")
    frames_rate_limited: int = Field(ge=0, description="Candidate frames skipped by the per-camera token bucket.")
    frames_budget_limited: int = Field(ge=0, description="Candidate frames skipped by the daily byte budget.")
    commands_received: int = Field(ge=0)
    commands_rejected: int = Field(ge=0)
    commands_ignored: int = Field(ge=0, description="Commands ignored by policy (flood above the rate limit).")


class HealthMessage(Payload):
    """``<camera>/health``: the daemon's health summary plus the publisher backlog."""

    type: Literal["health"] = "health"
    summary: HealthSummary
    backlog: Backlog


class ReasonModel(_Model):
    code: str
    decision: Decision
    score: float | None
    p_value: float | None
    detail: dict[str, float | int | str | None] = Field(default_factory=dict)


class WorstFrame(_Model):
    """The riskiest frame of an episode so far."""

    seq: int
    capture_ts: float
    decision: Decision
    reasons: list[ReasonModel]
    scores: dict[str, float | None]
    p_values: dict[str, float | None]
    stats: dict[str, float | None] = Field(description="Scalar frame statistics (docs/stats.md).")
    top1: int | None = None
    label: str | None = None
    confidence: float | None = None


class EventMessage(Payload):
    """``<camera>/events``: one episode of consecutive risky frames with overlapping reason sets.

    A risky frame stays in the running episode while its reason set shares at least one code
    with the episode's (a flickering secondary reason does not split an incident); a disjoint
    reason set ends the episode and opens the next one.
    """

    type: Literal["event"] = "event"
    event_id: str = Field(description="Stable id of the episode: <camera>-<start ms hex>-<start seq>.")
    lifecycle: Literal["new", "update", "end"] = Field(
        description="new: first risky frame; update: escalation FLAG -> BLOCK, a reason code added to the "
        "episode, or periodic (events.update_interval_s); end: the episode is over (see end_reason)."
    )
    update_seq: int = Field(ge=0, description="0 for new, then 1, 2, ... for each update/end.")
    decision: Decision = Field(description="Most severe decision in the episode so far.")
    reason_codes: list[str] = Field(
        description="Sorted union of the reason codes of the episode's risky frames so far; it only grows, "
        "and each growth is published at once as an update."
    )
    start_ts: float
    start_seq: int
    last_ts: float
    last_seq: int
    duration_s: float
    frames: int = Field(ge=1, description="Risky frames in the episode.")
    flag_frames: int = Field(ge=0)
    block_frames: int = Field(ge=0)
    worst: WorstFrame
    end_reason: Literal["clean", "reasons_changed", "gap", "camera_offline", "shutdown"] | None = Field(
        None, description="Why the episode ended (lifecycle end only); reasons_changed: a risky frame whose "
        "reason set shares no code with the episode's arrived and opened the next episode."
    )


class DriftEventMessage(Payload):
    """``<camera>/events``: a sequential drift alarm raised (``start``) or cleared (``end``).

    Published on the same topic as episodes; tell them apart by ``type``. Drift is a slow,
    sustained change of the scene or the model's outputs against the calibrated profile (a CUSUM
    per detector crossing its threshold), not a single risky frame.
    """

    type: Literal["drift_event"] = "drift_event"
    detector: str = Field(description="Drift detector (CUSUM) that raised or cleared its alarm: stats or model.")
    lifecycle: Literal["start", "end"] = Field(description="start: alarm raised; end: alarm cleared.")
    frame_seq: int = Field(ge=0, description="Sequence number of the frame that raised/cleared the alarm.")
    capture_ts: float = Field(description="Capture time of that frame (epoch seconds).")
    statistic: float | None = Field(description="The detector's CUSUM statistic at that frame (null if not finite).")
    threshold: float | None = Field(description="The detector's alarm threshold (null if not finite).")


class FrameProperties(_Model):
    """MQTT 5 user properties of a ``<camera>/frames/<event_id>`` message (the payload is raw JPEG bytes,
    content type image/jpeg). All values are strings on the wire."""

    schema_: str = Field(alias="schema", description="'edge-guard.frame/1'.")
    msg_id: str
    event_id: str = Field(description="Event id, or snapshot-<request id>, or ref-<camera>-<YYYYmmddHH>.")
    role: Literal["first", "best", "snapshot", "reference"]
    seq: str = Field(description="Frame sequence number.")
    ts: str = Field(description="Capture time (epoch seconds).")
    sha256: str = Field(description="SHA-256 of the JPEG payload.")
    camera_id: str
    site: str
    node: str
    width: str
    height: str
    quality: str
    decision: str
    reasons: str = Field(description="Comma-separated reason codes.")
    model_sha256: str
    profile_id: str
    config_hash: str


#: A command request's ``id`` (also read on its own, for a request rejected before it is parsed).
RequestId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="Request id.")]


class CommandRequest(_Model):
    """Payload of ``<node>/cmd/<name>`` (JSON). ``sig`` is required when signing is on (docs/mqtt.md)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: RequestId
    ts: float | None = Field(
        None, allow_inf_nan=False,
        description="Sender's wall clock (epoch s, finite); required when signing is on.",
    )
    args: dict[str, JsonValue] = Field(default_factory=dict, description="Command arguments (per command).")
    sig: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="HMAC-SHA256 hex of the canonical request (docs/mqtt.md)."
    )


class SnapshotArgs(_Model):
    model_config = ConfigDict(extra="forbid", strict=True)
    camera_id: str | None = Field(None, description="Camera to snapshot (default: the agent's camera).")


class SetThresholdsArgs(_Model):
    model_config = ConfigDict(extra="forbid", strict=True)
    alpha_flag: float = Field(gt=0, lt=1, description="Per-test false-alarm rate for FLAG.")
    alpha_block: float = Field(gt=0, lt=1, description="Per-test false-alarm rate for BLOCK (<= alpha_flag).")

    @model_validator(mode="after")
    def _order(self) -> SetThresholdsArgs:
        if self.alpha_block > self.alpha_flag:
            raise ValueError(f"alpha_block ({self.alpha_block}) must be <= alpha_flag ({self.alpha_flag})")
        return self


class ReloadProfileArgs(_Model):
    model_config = ConfigDict(extra="forbid", strict=True)


class PingArgs(_Model):
    model_config = ConfigDict(extra="forbid", strict=True)


class LimitsArgs(_Model):
    model_config = ConfigDict(extra="forbid", strict=True)


class LimitEntry(_Model):
    """One test's limit: it fires on its own where ``quantity`` is ``side`` ``value`` (docs/detection.md, "Limits")."""

    reason: str = Field(description="The reason code the test gives.")
    test: str = Field(description="The test (e.g. adversarial_hf for the reason adversarial).")
    quantity: str = Field(description="What the limit is in: a statistic's units ('mean luma') or the score's.")
    side: Literal["below", "above"]
    value: float | None = Field(description="The limit; null where no frame reaches the per-test level.")
    low: float | None = Field(description="The calibration frames' smallest value (null: the test never applied).")
    median: float | None = Field(description="The calibration frames' median value.")
    high: float | None = Field(description="The calibration frames' largest value.")


class LimitsResult(_Model):
    """The ``result`` of an ``ok`` response to ``cmd/limits``: what each test flags on its own."""

    profile_id: str
    alpha_flag: float = Field(description="The policy's FLAG rate the limits are for.")
    level: float = Field(description="The per-test p-value at or below which a test flags (family-wise level).")
    limits: list[LimitEntry]


class CommandResponse(Payload):
    """``<node>/cmd/<name>/response``; carries the request's MQTT 5 correlation data."""

    type: Literal["command_response"] = "command_response"
    command: str
    request_id: str | None = Field(description="The request's id; null when the request was unreadable.")
    status: Literal["ok", "rejected", "error"]
    reason: str | None = Field(None, description="Why it was rejected or failed ('rejected: <why>').")
    result: dict[str, Any] = Field(default_factory=dict)


#: Payload type -> model (JSON payloads).
PAYLOAD_TYPES: dict[str, type[Payload]] = {
    "node_status": NodeStatusMessage,
    "camera_status": CameraStatusMessage,
    "health": HealthMessage,
    "event": EventMessage,
    "drift_event": DriftEventMessage,
    "command_response": CommandResponse,
}


def schema_catalog() -> dict[str, type[BaseModel]]:
    """File stem -> model, for the exported JSON Schemas in docs/mqtt/."""
    return {
        "node-status": NodeStatusMessage,
        "camera-status": CameraStatusMessage,
        "health": HealthMessage,
        "event": EventMessage,
        "drift-event": DriftEventMessage,
        "frame-properties": FrameProperties,
        "command-request": CommandRequest,
        "command-response": CommandResponse,
        "cmd-snapshot-args": SnapshotArgs,
        "cmd-set-thresholds-args": SetThresholdsArgs,
        "cmd-reload-profile-args": ReloadProfileArgs,
        "cmd-ping-args": PingArgs,
        "cmd-limits-args": LimitsArgs,
        "cmd-limits-result": LimitsResult,
    }
