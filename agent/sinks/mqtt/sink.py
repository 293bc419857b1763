"""``MqttSink``: the Sink that publishes to a broker through the store-and-forward spool.

Producer threads (the pipeline) call ``publish_*``; those build a versioned payload, commit
it to the spool and return. The connection thread sends, the command worker executes
commands. See docs/mqtt.md for topics, payloads and the spool policy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.credentials import Secret, configured_secret_path, read_configured_secret
from agent.errors import ConfigError, PublishError
from agent.frame import Frame
from agent.health import HealthSummary
from agent.sinks.base import CameraState
from agent.sinks.mqtt import messages as m
from agent.sinks.mqtt.commands import CommandProcessor, CommandTarget, IncomingCommand, request_id_of
from agent.sinks.mqtt.config import MqttConfig, pem_problem
from agent.sinks.mqtt.connection import Connection, Will
from agent.sinks.mqtt.episodes import EpisodeTracker, Transition
from agent.sinks.mqtt.frames import DailyBudget, Reservoir, encode_jpeg
from agent.sinks.mqtt.identity import AgentIdentity
from agent.sinks.mqtt.schemas import CameraStatusMessage, CommandResponse, NodeStatusMessage
from agent.sinks.mqtt.spool import OutMessage, Spool
from agent.sinks.mqtt.topics import Topics
from agent.tokenbucket import TokenBucket
from agent.verdict import Decision, Verdict

__all__ = ["MqttSink", "default_spool_path"]

logger = logging.getLogger(__name__)
_JSON = {"content_type": "application/json"}


def default_spool_path(site: str, node: str) -> Path:
    """``$STATE_DIRECTORY`` (systemd StateDirectory=) or ./var, file mqtt-spool-<site>-<node>.sqlite."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state or "var") / f"mqtt-spool-{site}-{node}.sqlite"


class MqttSink:
    """Publishes verdict episodes, sampled frames, health and status; answers commands.

    ``attach(target)`` connects the commands to the daemon. ``ids()``, when given, is asked for
    the current model/profile/config ids before each message (they change after start-up
    calibration, a profile reload or SIGHUP). ``start=False`` builds everything without
    connecting (call :meth:`start`).
    """

    def __init__(
        self,
        config: MqttConfig,
        identity: AgentIdentity,
        *,
        ids: Callable[[], Mapping[str, str | None]] | None = None,
        start: bool = True,
    ) -> None:
        self.config = config
        node = config.node or identity.node
        self.topics = Topics(config.prefix, identity.site, node)
        for cam in identity.cameras:
            self.topics.health(cam)  # validates camera ids as topic levels (ConfigError)
        pw = read_configured_secret(config.password_file, config.password_credential, what="MQTT password")
        password: str | None = None
        if pw is not None:
            try:
                password = pw.reveal()
            except ConfigError:
                raise ConfigError(
                    f"the MQTT password in {pw.source} must be UTF-8 text (MQTT sends it as a string)"
                ) from None
        key = read_configured_secret(
            config.commands.hmac_key_file, config.commands.hmac_key_credential, what="command signing key"
        )
        self._check_tls_files()
        self.spool = Spool(config.spool.path or default_spool_path(identity.site, node), config.spool)
        try:  # the spool holds its file's lock: closed again if the rest cannot be set up
            self._setup(config, identity, ids, node=node, password=password, key=key)
        except BaseException:
            self.spool.close()
            raise
        if start:
            self.start()

    def _setup(
        self, config: MqttConfig, identity: AgentIdentity, ids: Callable[[], Mapping[str, str | None]] | None,
        *, node: str, password: str | None, key: Secret | None,
    ) -> None:
        """Everything of ``__init__`` after the spool: its state, the command processor, the connection."""
        self._lock = threading.RLock()
        self._env = m.Envelopes(identity.with_changes(node=node), ids)
        self._trackers: dict[str, EpisodeTracker] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._reservoirs: dict[str, Reservoir] = {}
        # each camera's latest status message: a reconnect sends it again (same msg_id and seq)
        self._camera_status: dict[str, CameraStatusMessage] = {}
        self._counts = dict.fromkeys(
            ("frames_published", "frames_rate_limited", "frames_budget_limited", "commands_received",
             "commands_rejected", "commands_ignored", "spool_errors"), 0)
        self._budget = DailyBudget(config.frames.daily_bytes, self._load_budget, self._save_budget)
        self._listeners: list[Callable[[OutMessage], None]] = []
        self._target: CommandTarget | None = None
        self._processor = CommandProcessor(
            config.commands, key.reveal_bytes() if key is not None else None,
            snapshot_interval_s=config.frames.snapshot_min_interval_s,
        )
        self._cmd_bucket = TokenBucket(config.commands.rate_per_s, config.commands.burst)
        self._cmd_queue: queue.Queue[IncomingCommand | None] = queue.Queue(config.commands.queue_size)
        self._cmd_thread = threading.Thread(target=self._command_worker, name="mqtt-commands", daemon=True)
        self._started_ts = time.time()
        self._last_expire = 0.0
        self._closed = False
        self.conn = Connection(
            config,
            client_id=config.client_id or f"edge-guard-{identity.site}-{node}",
            spool=self.spool,
            will=self._will,
            on_connected=self._on_connected,
            on_message=self._on_command,
            on_tick=self._tick,
            command_filter=self.topics.command_filter if config.commands.enabled else None,
            password=password,
        )

    def _check_tls_files(self) -> None:
        """Load the CA and the client certificate/key pair once here, so that a missing, empty,
        unreadable or mismatched file is a configuration error at start-up (exit 78) rather than a
        TLS failure retried in the connection thread forever."""
        tls = self.config.tls
        if tls is None:
            return
        key = configured_secret_path(tls.key_file, tls.key_credential, what="TLS client key")
        for what, path in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key", key)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"mqtt.tls.{what}: expected a readable PEM file, but {path} does not exist")
        problem = pem_problem(tls.ca_file, tls.cert_file, key)
        if problem is not None and problem[0] == "ca":
            raise ConfigError(
                f"mqtt.tls.ca_file: {tls.ca_file} is not a usable PEM CA certificate ({problem[1]}); it must be "
                "the certificate of the CA that signed the broker's certificate"
            )
        if problem is not None:
            raise ConfigError(
                f"mqtt.tls: the client certificate {tls.cert_file} and key {key} cannot be loaded together "
                f"({problem[1]}); both must be PEM, the key unencrypted and belonging to the certificate"
            )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the connection thread and the command worker."""
        self._cmd_thread.start()
        self.conn.start()

    def attach(self, target: CommandTarget) -> None:
        """Give commands something to act on (the daemon, once its pipeline is up)."""
        self._target = target

    def add_listener(self, fn: Callable[[OutMessage], None]) -> None:
        """Call ``fn`` with every message right after it was committed to the spool (audit/ledger)."""
        self._listeners.append(fn)

    @property
    def identity(self) -> AgentIdentity:
        """The identity in the messages (model/profile/config ids refreshed from ``ids()``)."""
        with self._lock:
            return self._env.refresh()

    def update_identity(self, **changes: object) -> None:
        """Change identity fields (e.g. ``profile_id`` after a reload) for all later messages."""
        with self._lock:
            self._env.identity = self._env.identity.with_changes(**changes)

    def close(self) -> None:
        """End open episodes, publish the reference samples held for this hour and ``stopped``, drain
        the spool (bounded), disconnect cleanly."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            for tracker in self._trackers.values():
                for t in tracker.finish("shutdown"):
                    self._emit_event(t)
            held = [(cam, ref) for cam, res in self._reservoirs.items() for ref in res.drain()]
        for cam, ref in held:
            self._publish_frame(ref, "reference", self._reference_id(cam, ref), None)
        with self._lock:
            self._put_node_status("stopped", "clean shutdown")
        if self._cmd_thread.is_alive():
            self._cmd_queue.put(None)
            self._cmd_thread.join(5.0)
        self.conn.stop(self.config.flush_timeout_s)
        self.spool.close()

    # -- Sink protocol -----------------------------------------------------------------------
    def publish_verdict(self, verdict: Verdict, frame: Frame) -> None:
        cam = verdict.camera_id
        jobs: list[tuple[Frame, str, str, Verdict]] = []
        with self._lock:
            tracker = self._trackers.get(cam)
            if tracker is None:
                tracker = self._trackers[cam] = EpisodeTracker(cam, self.config.events)
            for t in tracker.update(verdict, frame, time.monotonic()):
                self._emit_event(t)
                job = self._frame_job(t)
                if job is not None:
                    jobs.append(job)
            if verdict.decision == Decision.PASS and self.config.frames.enabled:
                res = self._reservoirs.get(cam)
                if res is None:
                    res = self._reservoirs[cam] = Reservoir(self.config.frames.reference_per_hour)
                jobs += [(ref, "reference", self._reference_id(cam, ref), verdict) for ref in res.offer(frame)]
        for frame_, role, event_id, v in jobs:
            self._publish_frame(frame_, role, event_id, v)

    @staticmethod
    def _reference_id(cam: str, ref: Frame) -> str:
        return f"ref-{cam}-{time.strftime('%Y%m%d%H', time.gmtime(ref.capture_ts))}"

    def publish_health(self, summary: HealthSummary) -> None:
        backlog = self.backlog()
        if not summary.publisher:
            summary = summary.model_copy(update={"publisher": self.stats()})
        with self._lock:
            msg = m.health(self._env, summary, backlog)
            self._put("health", self.topics.health(summary.camera_id), msg)

    def publish_camera_status(self, camera_id: str, state: CameraState, reason: str) -> None:
        with self._lock:
            if state == "offline" and camera_id in self._trackers:
                for t in self._trackers[camera_id].finish("camera_offline"):
                    self._emit_event(t)
            msg = self._camera_status[camera_id] = m.camera_status(self._env, camera_id, state, reason, time.time())
            self._put_camera_status(camera_id, msg)

    def publish_event(self, event: dict[str, object]) -> None:
        """Spool a pipeline event for ``<camera>/events`` (QoS 1, kept like episodes).

        Only ``type: drift`` exists so far (as a ``drift_event`` payload); other types are logged and
        skipped rather than published without a schema."""
        if event.get("type") != "drift":
            logger.warning("event of unknown type %r not published", event.get("type"))
            return
        with self._lock:
            msg = m.drift_event(self._env, event)
            self._put("event", self.topics.events(str(event["camera_id"])), msg)

    def stats(self) -> dict[str, float]:
        """Flat counters for the health summary's ``publisher`` field."""
        b = self.backlog()
        out: dict[str, float] = {
            "connected": float(b.connected), "queued_msgs": b.queued_msgs, "queued_bytes": b.queued_bytes,
            "oldest_age_s": b.oldest_age_s or 0.0, "inflight": b.inflight, "reconnects": b.reconnects,
            "sent": b.sent, "acked": b.acked, "replayed": b.replayed, "drops_total": sum(b.drops.values()),
            "frames_published": b.frames_published, "frames_rate_limited": b.frames_rate_limited,
            "frames_budget_limited": b.frames_budget_limited, "commands_received": b.commands_received,
            "commands_rejected": b.commands_rejected, "commands_ignored": b.commands_ignored,
        }
        out.update({f"drops_{k}": float(v) for k, v in b.drops.items()})
        out.update({f"drops_cause_{k}": float(v) for k, v in b.drops_by_cause.items()})
        c = self.conn.counts()
        out.update({k: float(c[k]) for k in ("auth_failures", "connect_failures", "broker_rejected",
                                             "session_taken_over", "short_sessions")})
        out["spool_errors"] = float(self._counts["spool_errors"])
        return out

    def backlog(self) -> m.Backlog:
        c = self.conn.counts()
        drops, causes = self.spool.drops()
        age = self.spool.oldest_age_s()
        return m.Backlog(
            connected=self.conn.connected, queued_msgs=self.spool.queued_msgs, queued_bytes=self.spool.queued_bytes,
            oldest_age_s=None if age is None else round(age, 3), inflight=c["inflight"], reconnects=c["reconnects"],
            sent=c["sent"], acked=c["acked"], replayed=c["replayed"], drops=drops, drops_by_cause=causes,
            **{k: v for k, v in self._counts.items() if k != "spool_errors"},
        )

    # -- spooling ----------------------------------------------------------------------------
    def _put(self, cls: str, topic: str, payload: BaseModel | bytes, *, retain: bool = False,
             props: dict[str, object] | None = None, coalesce: bool = False) -> int | None:
        if isinstance(payload, BaseModel):
            data, msg_id = payload.model_dump_json().encode(), str(getattr(payload, "msg_id", ""))
            props = {**_JSON, **(props or {})}
        else:
            data, msg_id = payload, ""
        msg = OutMessage(cls, topic, data, msg_id or self._env.next_id(), retain, props or {})
        try:
            row = self.spool.put(msg, coalesce=coalesce)
        except (sqlite3.Error, OSError) as exc:
            # The disk (or the spool) failed: this message is lost; count it, keep guarding.
            self._spool_error(f"spool a {cls} message for {topic}", exc)
            return None
        if row is not None:
            for fn in self._listeners:
                fn(msg)
        return row

    def _load_budget(self) -> str | None:
        try:
            return self.spool.get_meta("frame_budget")
        except sqlite3.Error as exc:
            self._spool_error("read the frame budget", exc)
            return None

    def _save_budget(self, value: str) -> None:
        try:
            self.spool.set_meta("frame_budget", value)
        except sqlite3.Error as exc:  # e.g. a full disk: the budget lives on in memory, guarding goes on
            self._spool_error("save the frame budget", exc)

    def _spool_error(self, what: str, exc: BaseException) -> None:
        self._counts["spool_errors"] += 1
        logger.error("could not %s in the MQTT spool %s: %s", what, self.spool.path, exc)

    def _put_node_status(self, state: str, reason: str) -> int | None:
        msg = m.node_status(self._env, state, reason, self._started_ts, self.conn.counts()["reconnects"])
        return self._put("status", self.topics.node_status, msg, retain=True, coalesce=True)

    def _put_camera_status(self, camera_id: str, msg: CameraStatusMessage) -> int | None:
        """Spool ``msg``, replacing a status of that camera still queued (``superseded``)."""
        return self._put("status", self.topics.camera_status(camera_id), msg, retain=True, coalesce=True)

    def _emit_event(self, t: Transition) -> None:
        self._put("event", self.topics.events(t.episode.camera_id), m.event(self._env, t))

    # -- frames ------------------------------------------------------------------------------
    def _frame_job(self, t: Transition) -> tuple[Frame, str, str, Verdict] | None:
        """Pick the frame a transition should publish (first of an episode, best at its end)."""
        ep, fc = t.episode, self.config.frames
        if not fc.enabled or t.lifecycle == "update":
            return None
        if t.lifecycle == "end":
            better = ep.sent_frame_risk is None or ep.worst_risk > ep.sent_frame_risk
            if ep.sent_frame_seq == ep.worst.seq or not better:
                return None
        bucket = self._buckets.get(ep.camera_id)
        if bucket is None:
            # per_minute 0: no episode frames at all (an empty bucket), not just the first burst
            bucket = self._buckets[ep.camera_id] = TokenBucket(fc.per_minute / 60.0,
                                                               fc.burst if fc.per_minute > 0 else 0)
        if not bucket.take():
            self._counts["frames_rate_limited"] += 1
            return None
        ep.sent_frame_seq, ep.sent_frame_risk = ep.worst.seq, ep.worst_risk
        return ep.worst_frame, "first" if t.lifecycle == "new" else "best", ep.event_id, ep.worst

    def _publish_frame(self, frame: Frame, role: str, event_id: str, verdict: Verdict | None,
                       *, budgeted: bool = True) -> dict[str, Any] | None:
        fc = self.config.frames
        try:
            jpeg = encode_jpeg(frame.image, fc.max_bytes, fc.max_width, fc.jpeg_quality, fc.min_quality)
        except PublishError as exc:
            logger.warning("frame %s of %s not published: %s", frame.seq, frame.camera_id, exc)
            return None
        with self._lock:
            if budgeted and not self._budget.allow(len(jpeg.data)):
                self._counts["frames_budget_limited"] += 1
                return None
            if not budgeted:
                self._budget.spend(len(jpeg.data))
            sha = hashlib.sha256(jpeg.data).hexdigest()
            user = m.frame_properties(self._env, frame, verdict, role=role, event_id=event_id, jpeg=jpeg, sha256=sha)
            topic = self.topics.frames(frame.camera_id, event_id)
            if self._put("frame", topic, jpeg.data, props={"content_type": "image/jpeg", "user": user}) is None:
                return None
            self._counts["frames_published"] += 1
        return {"topic": topic, "sha256": sha, "bytes": len(jpeg.data), "width": jpeg.width, "height": jpeg.height}

    # -- connection callbacks (connection thread) --------------------------------------------
    def _will(self) -> Will:
        with self._lock:
            msg = m.node_status(self._env, "offline", "connection lost (last will)", self._started_ts,
                                self.conn.counts()["reconnects"])
        return Will(self.topics.node_status, msg.model_dump_json().encode())

    def _on_connected(self) -> list[int]:
        """(Re)connected: queue `online` and the camera statuses, to be sent before the backlog."""
        with self._lock:
            ids = [self._put_node_status("online", "connected")]
            # the same messages again: a restarted broker may have lost them, and a status still
            # queued from the outage is replaced by itself, not by a new seq (no gap at the collector)
            ids += [self._put_camera_status(cam, msg) for cam, msg in self._camera_status.items()]
        return [i for i in ids if i is not None]

    def _tick(self) -> None:
        """Once a second in the connection thread: end quiet episodes, expire old spool rows."""
        now = time.monotonic()
        jobs = []
        with self._lock:
            for tracker in self._trackers.values():
                for t in tracker.tick(now):
                    self._emit_event(t)
                    job = self._frame_job(t)
                    if job is not None:
                        jobs.append(job)
        for frame, role, event_id, verdict in jobs:
            self._publish_frame(frame, role, event_id, verdict)
        if now - self._last_expire >= 30.0:
            self._last_expire = now
            self.spool.expire()

    # -- commands ----------------------------------------------------------------------------
    def _on_command(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        with self._lock:
            self._counts["commands_received"] += 1
            if not self._cmd_bucket.take():
                self._counts["commands_ignored"] += 1  # flood: ignored by policy (no amplification)
                return
        name = topic.rsplit("/", 1)[-1]
        try:
            self._cmd_queue.put_nowait(IncomingCommand(topic, name, payload, correlation))
        except queue.Full:
            rid = request_id_of(payload, self.config.commands.max_payload_bytes)
            self._respond(name, correlation, "rejected", request_id=rid,
                          reason="rejected: busy, too many pending commands", result={})

    def _command_worker(self) -> None:
        while True:
            cmd = self._cmd_queue.get()
            if cmd is None:
                return
            try:
                out = self._processor.handle(cmd, self._target)
                if out.snapshot is not None:
                    rid = re.sub(r"[^A-Za-z0-9_.-]", "_", out.request_id or "x")
                    info = self._publish_frame(out.snapshot, "snapshot", f"snapshot-{rid}", None, budgeted=False)
                    if info is None:
                        out.status, out.reason = "error", "error: the frame could not be encoded or spooled"
                    else:
                        out.result.update(info)
                if cmd.name == "reload-profile" and out.status == "ok":
                    self.update_identity(profile_id=str(out.result["profile_id"]))
                self._respond(cmd.name, cmd.correlation, out.status, request_id=out.request_id,
                              reason=out.reason, result=out.result)
            except Exception:  # the worker must survive anything a command does
                logger.exception("command worker error")

    def _respond(self, name: str, correlation: bytes | None, status: str, *, request_id: str | None,
                 reason: str | None, result: dict[str, Any]) -> None:
        with self._lock:
            if status != "ok":
                self._counts["commands_rejected"] += 1
            msg: CommandResponse = m.command_response(
                self._env, name, status=status, request_id=request_id, reason=reason, result=result
            )
            # The name came through our cmd/+ subscription: one level, no wildcards.
            props: dict[str, object] = {"correlation": correlation.hex()} if correlation else {}
            self._put("response", f"{self.topics.base}/cmd/{name}/response", msg, props=props)

    def node_status_message(self, state: str, reason: str) -> NodeStatusMessage:
        """The node status payload as it would be published now (docs and tests)."""
        with self._lock:
            return m.node_status(self._env, state, reason, self._started_ts, self.conn.counts()["reconnects"])
