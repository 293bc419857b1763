"""Remote commands: ``<node>/cmd/<name>`` in, ``<node>/cmd/<name>/response`` out.

Every command that reaches the worker gets exactly one response: ``ok``, ``error`` (the
target failed) or ``rejected: <why>`` (unreadable, invalid, unsigned, stale, unknown...).
Commands above the rate limit are ignored by policy and counted, so a flood cannot turn the
agent into a response amplifier.

Signing (``commands.require_signature``): ``sig`` is the hex HMAC-SHA256, under the shared
key, of ``<topic> + "\\n" + canonical JSON of the request without "sig"`` (keys sorted,
separators ``,`` and ``:``, UTF-8). Signed requests must carry ``ts`` within ``max_skew_s`` of
the agent's clock, and a request id is accepted once (replays are rejected).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, TypeAdapter, ValidationError

from agent.errors import ConfigError, ProfileError
from agent.frame import Frame
from agent.sinks.mqtt.config import CommandsConfig
from agent.sinks.mqtt.schemas import (
    CommandRequest,
    LimitsArgs,
    LimitsResult,
    PingArgs,
    ReloadProfileArgs,
    RequestId,
    SetThresholdsArgs,
    SnapshotArgs,
)
from agent.sinks.mqtt.topics import COMMAND_NAMES

__all__ = [
    "CommandOutcome",
    "CommandProcessor",
    "CommandTarget",
    "IncomingCommand",
    "canonical_bytes",
    "request_id_of",
    "sign_request",
    "verify_signature",
]

logger = logging.getLogger(__name__)

_REQUEST_ID: TypeAdapter[str] = TypeAdapter(RequestId)

_ARGS: dict[str, type[BaseModel]] = {
    "snapshot": SnapshotArgs,
    "set-thresholds": SetThresholdsArgs,
    "reload-profile": ReloadProfileArgs,
    "ping": PingArgs,
    "limits": LimitsArgs,
}


class CommandTarget(Protocol):
    """What commands act on (the daemon implements it and is given via ``MqttSink.attach``)."""

    def snapshot(self) -> Frame | None:
        """The most recent frame (None when none was read yet)."""
        ...

    def set_alphas(self, alpha_flag: float, alpha_block: float) -> None:
        """Set the FLAG/BLOCK false-alarm rates; ValueError/ConfigError when invalid."""
        ...

    def reload_profile(self) -> str:
        """Reload the calibration profile; returns its id; ProfileError when it cannot."""
        ...

    def ping(self) -> dict[str, object]:
        """Liveness details (frames processed, uptime, ...)."""
        ...

    def limits(self) -> dict[str, object]:
        """What each test flags on its own (``LimitsResult``); ValueError while still calibrating."""
        ...


def canonical_bytes(topic: str, request: dict[str, Any]) -> bytes:
    """The bytes that are signed: topic, newline, canonical JSON of the request without ``sig``."""
    body = {k: v for k, v in request.items() if k != "sig"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return topic.encode("utf-8") + b"\n" + blob.encode("utf-8")


def sign_request(key: bytes, topic: str, request: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``request`` with its ``sig`` (what an operator tool does before publishing)."""
    out = {k: v for k, v in request.items() if k != "sig"}
    out["sig"] = hmac.new(key, canonical_bytes(topic, out), hashlib.sha256).hexdigest()
    return out


def verify_signature(key: bytes, topic: str, request: dict[str, Any]) -> bool:
    sig = request.get("sig")
    if not isinstance(sig, str):
        return False
    want = hmac.new(key, canonical_bytes(topic, request), hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, sig)


@dataclass(frozen=True, slots=True)
class IncomingCommand:
    """A command as received (validated later, in the command worker)."""

    topic: str
    name: str
    payload: bytes
    correlation: bytes | None


@dataclass(slots=True)
class CommandOutcome:
    """What to answer; ``snapshot`` is a frame to publish as the command's effect."""

    status: str  # ok | rejected | error
    request_id: str | None = None
    reason: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    snapshot: Frame | None = None


def request_id_of(payload: bytes, max_bytes: int) -> str | None:
    """The request's ``id`` where it is a valid one (the operator's key to match a response), else None:
    for a response before the command is handled (e.g. rejected as busy)."""
    if len(payload) > max_bytes:
        return None
    try:
        raw = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    rid = raw.get("id") if isinstance(raw, dict) else None
    try:
        return _REQUEST_ID.validate_python(rid, strict=True)
    except ValidationError:
        return None


def _rejected(why: str, request_id: str | None = None) -> CommandOutcome:
    return CommandOutcome("rejected", request_id, f"rejected: {why}")


def _errors(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class CommandProcessor:
    """Validates, authenticates and executes one command (called in the command worker thread)."""

    def __init__(
        self,
        config: CommandsConfig,
        key: bytes | None,
        *,
        snapshot_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.snapshot_interval_s = snapshot_interval_s
        self._key = key
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._last_snapshot = float("-inf")

    def handle(self, cmd: IncomingCommand, target: CommandTarget | None) -> CommandOutcome:
        """Never raises for bad input: every problem becomes a rejection or an error outcome."""
        if len(cmd.payload) > self.config.max_payload_bytes:
            return _rejected(f"payload of {len(cmd.payload)} bytes exceeds {self.config.max_payload_bytes}")
        if cmd.name not in COMMAND_NAMES:
            return _rejected(f"unknown command {cmd.name[:64]!r}; expected one of {', '.join(COMMAND_NAMES)}")
        try:
            raw = json.loads(cmd.payload.decode("utf-8")) if cmd.payload.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # ([[[[... nested too deep)
            return _rejected(f"payload is not UTF-8 JSON ({type(exc).__name__})")
        if not isinstance(raw, dict):
            return _rejected(f"payload must be a JSON object, but got {type(raw).__name__}")
        rid = raw.get("id") if isinstance(raw.get("id"), str) else None
        try:
            req = CommandRequest.model_validate(raw)
        except ValidationError as exc:
            return _rejected(f"invalid request: {_errors(exc)}", rid)
        rid = req.id
        why = self._authenticate(cmd.topic, raw, req)
        if why is not None:
            return _rejected(why, rid)
        try:
            args = _ARGS[cmd.name].model_validate(req.args)
        except ValidationError as exc:
            return _rejected(f"invalid args: {_errors(exc)}", rid)
        if target is None:
            return _rejected("agent not ready: no pipeline attached yet", rid)
        return self._execute(cmd.name, args, target, rid)

    def _authenticate(self, topic: str, raw: dict[str, Any], req: CommandRequest) -> str | None:
        if self._key is None:
            return None
        if req.sig is None:
            if self.config.require_signature:
                return "missing signature (commands must be signed on this agent)"
            return None
        if not verify_signature(self._key, topic, raw):
            return "bad signature"
        if req.ts is None:
            return "signed requests must carry ts"
        skew = abs(self._clock() - req.ts)
        if skew > self.config.max_skew_s:
            return f"stale request: ts is {skew:.0f} s from the agent clock (max {self.config.max_skew_s:.0f} s)"
        if req.id in self._seen:
            return f"replayed request id {req.id!r}"
        self._seen[req.id] = req.ts
        while len(self._seen) > 4096:
            self._seen.popitem(last=False)
        return None

    def _execute(self, name: str, args: BaseModel, target: CommandTarget, rid: str) -> CommandOutcome:
        try:
            if name == "ping":
                details = target.ping()
                return CommandOutcome("ok", rid, None, {"pong": True, **{str(k): v for k, v in details.items()}})
            if name == "set-thresholds":
                assert isinstance(args, SetThresholdsArgs)
                target.set_alphas(args.alpha_flag, args.alpha_block)
                return CommandOutcome("ok", rid, None, {"alpha_flag": args.alpha_flag, "alpha_block": args.alpha_block})
            if name == "reload-profile":
                return CommandOutcome("ok", rid, None, {"profile_id": target.reload_profile()})
            if name == "limits":
                limits = target.limits()  # ValueError while the guard is still calibrating: rejected
                try:
                    result = LimitsResult.model_validate(limits).model_dump(mode="json")
                except ValidationError as exc:  # the agent's own bug, not the request's
                    return CommandOutcome("error", rid, f"error: limits do not fit their schema: {_errors(exc)}")
                return CommandOutcome("ok", rid, None, result)
            assert isinstance(args, SnapshotArgs)
            now = time.monotonic()
            if now - self._last_snapshot < self.snapshot_interval_s:
                return _rejected("snapshot rate limit: try again shortly", rid)
            frame = target.snapshot()
            if frame is None:
                return _rejected("no frame available yet", rid)
            if args.camera_id is not None and args.camera_id != frame.camera_id:
                return _rejected(f"unknown camera {args.camera_id!r}; this agent has {frame.camera_id!r}", rid)
            self._last_snapshot = now
            return CommandOutcome("ok", rid, None, {"camera_id": frame.camera_id, "seq": frame.seq}, snapshot=frame)
        except (ValueError, ConfigError) as exc:
            return _rejected(str(exc)[:500], rid)
        except ProfileError as exc:
            return CommandOutcome("error", rid, f"error: {str(exc)[:500]}")
        except Exception as exc:  # the target's failure must not kill the command worker
            logger.exception("command %s failed", name)
            return CommandOutcome("error", rid, f"error: {type(exc).__name__}: {str(exc)[:300]}")
