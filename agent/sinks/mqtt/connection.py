"""The one thread that owns the paho client: connect with back-off, replay the spool in order
with a small in-flight window, delete rows on PUBACK, hand incoming commands to the sink.

A fresh paho ``Client`` is made for every connection attempt so paho never re-sends
messages from its own in-memory queue: the spool is the only source of truth, and after a
reconnect everything not yet acknowledged is re-sent from it, oldest first, with the user
property ``replayed=1``. Producer threads never call paho: they commit to the spool, and this
thread polls it (``Spool.last_id``, cheap) between network loops of at most 50 ms.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.credentials import configured_secret_path
from agent.sinks.mqtt.config import MqttConfig
from agent.sinks.mqtt.spool import Spool, SpoolRow

__all__ = ["Connection", "Will"]

logger = logging.getLogger(__name__)

#: CONNACK reason codes that mean "your credentials are not accepted".
_AUTH_CODES = {0x86: "bad user name or password", 0x87: "not authorized", 0x8A: "banned", 0x8C: "bad auth method"}
#: DISCONNECT reason code the broker sends when another client connected with our client id
#: (brokers that close the socket without a DISCONNECT show up as short sessions instead).
SESSION_TAKEN_OVER = 0x8E
#: A connection that ends sooner than this after CONNACK does not reset the reconnect back-off.
STABLE_SESSION_S = 5.0


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes


def _props(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def _publish_props(row: SpoolRow, replayed: bool, now: float) -> Properties:
    p = _props(PacketTypes.PUBLISH)
    ct = row.props.get("content_type")
    if isinstance(ct, str):
        p.ContentType = ct
        if ct.startswith("application/json"):
            p.PayloadFormatIndicator = 1
    user = [(str(k), str(v)) for k, v in row.props.get("user", [])]  # type: ignore[attr-defined]
    if row.msg_id:
        user.append(("msg_id", row.msg_id))
    if replayed:
        user += [("replayed", "1"), ("queued_s", f"{max(0.0, now - row.created):.3f}")]
    p.UserProperty = user
    corr = row.props.get("correlation")
    if isinstance(corr, str) and corr:
        p.CorrelationData = bytes.fromhex(corr)
    return p


class Connection:
    """Owns the paho client in its own thread. Start with :meth:`start`, end with :meth:`stop`."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        client_id: str,
        spool: Spool,
        will: Callable[[], Will],
        on_connected: Callable[[], list[int]],
        on_message: Callable[[str, bytes, bytes | None], None],
        on_tick: Callable[[], None],
        command_filter: str | None,
        password: str | None,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.spool = spool
        self._will = will
        self._on_connected = on_connected
        self._on_message = on_message
        self._on_tick = on_tick
        self._command_filter = command_filter
        self._password = password
        self._stop = threading.Event()
        self._flush_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._counts = {
            "sent": 0, "acked": 0, "replayed": 0, "reconnects": 0, "connects": 0,
            "connect_failures": 0, "auth_failures": 0, "broker_rejected": 0, "session_taken_over": 0,
            "short_sessions": 0,
        }
        self._inflight_n = 0
        self.last_error: str | None = None
        # Per-connection state, touched only by the connection thread.
        self._acks: list[tuple[int, ReasonCode]] = []
        self._connack: ReasonCode | None = None
        self._server_disconnect: ReasonCode | None = None
        self._connected_at = 0.0
        self._short_in_a_row = 0  # consecutive sessions that ended within STABLE_SESSION_S

    # -- public, any thread ---------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-connection", daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def counts(self) -> dict[str, int]:
        with self._lock:
            out = dict(self._counts)
        out["inflight"] = self._inflight_n
        return out

    def stop(self, flush_timeout_s: float) -> None:
        """Drain the spool for up to ``flush_timeout_s`` if connected, then disconnect cleanly."""
        self._flush_deadline = time.monotonic() + flush_timeout_s
        self._stop.set()
        if self._thread is not None:
            self._thread.join(flush_timeout_s + self.config.connect_timeout_s + 5.0)
            if self._thread.is_alive():
                logger.error("MQTT connection thread did not stop in time")
        if not self._connected.is_set() and self.spool.queued_msgs:  # (connected: _disconnect said so)
            logger.warning("stopping without an MQTT connection: %d messages stay in the spool %s and go out "
                           "at the next connection", self.spool.queued_msgs, self.spool.path)

    # -- the thread -----------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _run(self) -> None:
        delay = self.config.reconnect_min_s
        while not self._stop.is_set():
            try:
                outcome = self._session()
            except Exception as exc:  # never die silently: log, count, back off, retry
                logger.exception("MQTT connection thread error")
                self.last_error = f"{type(exc).__name__}: {exc}"
                outcome = "failed"
            self._connected.clear()
            self._inflight_n = 0
            if self._stop.is_set():
                break
            if outcome == "served":
                delay = self.config.reconnect_min_s
            wait = self.config.auth_backoff_s if outcome == "auth" else delay
            if outcome == "taken_over":
                # Reconnecting at once would take the session back from the other client, which
                # does the same: wait long, so that the two alternate slowly and the log stays readable.
                self._count("session_taken_over")
                wait = self.config.reconnect_max_s
            elif outcome == "short":
                # Accepted, then dropped at once: reconnecting at the minimum delay would be a hot loop.
                self._count("short_sessions")
                delay = min(self.config.reconnect_max_s, delay * 2)
            elif outcome != "served":
                self._count("auth_failures" if outcome == "auth" else "connect_failures")
                delay = min(self.config.reconnect_max_s, delay * 2)
            logger.debug("MQTT reconnect in %.1f s", wait)
            self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        """Back-off wait that keeps the periodic work going (episode gaps, spool age caps)."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(1.0, left))
            self._tick()

    def _tick(self) -> None:
        try:
            self._on_tick()
        except Exception:  # periodic work must not kill the connection thread
            logger.exception("MQTT periodic task failed")

    def _new_client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        client.connect_timeout = cfg.connect_timeout_s
        client.max_inflight_messages_set(cfg.max_inflight)
        client.suppress_exceptions = False
        if cfg.username is not None:
            client.username_pw_set(cfg.username, self._password)
        if cfg.tls is not None:
            key = configured_secret_path(cfg.tls.key_file, cfg.tls.key_credential, what="TLS client key")
            client.tls_set(
                ca_certs=str(cfg.tls.ca_file),
                certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
                keyfile=str(key) if key else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            client.tls_insecure_set(not cfg.tls.check_hostname)
        will = self._will()
        wp = _props(PacketTypes.WILLMESSAGE)
        wp.WillDelayInterval = cfg.will_delay_s
        wp.ContentType = "application/json"
        client.will_set(will.topic, will.payload, qos=1, retain=True, properties=wp)
        client.on_connect = self._cb_connect
        client.on_publish = self._cb_publish
        client.on_message = self._cb_message
        client.on_subscribe = self._cb_subscribe
        client.on_disconnect = self._cb_disconnect
        return client

    def _cb_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        self._connack = rc

    def _cb_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        self._acks.append((mid, rc))

    def _cb_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if flags.is_disconnect_packet_from_server:
            self._server_disconnect = rc

    def _cb_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any) -> None:
        for rc in codes:
            if rc.value >= 0x80:
                logger.error("broker refused the command subscription %s: %s (check the ACL: the agent must "
                             "be allowed to read its cmd/+)", self._command_filter, rc)

    def _cb_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None) if msg.properties is not None else None
        try:
            self._on_message(msg.topic, bytes(msg.payload), bytes(corr) if corr else None)
        except Exception:  # a bad command must never take the connection down
            logger.exception("error handling a message on %s", msg.topic)

    def _connect(self, client: mqtt.Client) -> str:
        cfg = self.config
        cp = _props(PacketTypes.CONNECT)
        cp.SessionExpiryInterval = cfg.session_expiry_s
        # Packets bigger than this are dropped by the broker instead of being sent to us.
        cp.MaximumPacketSize = cfg.commands.max_payload_bytes * 4 + 4096
        self._connack = None
        self._server_disconnect = None
        where = f"{cfg.host}:{cfg.port}"
        try:
            client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=False, properties=cp)
        except (OSError, ValueError) as exc:
            return self._failed(f"cannot connect to MQTT broker {where}: {type(exc).__name__}: {exc}")
        deadline = time.monotonic() + cfg.connect_timeout_s
        while self._connack is None and time.monotonic() < deadline and not self._stop.is_set():
            if client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS and self._connack is None:
                return self._failed(f"MQTT broker {where} closed the connection before CONNACK")
        if self._connack is None:
            return self._failed(f"no CONNACK from MQTT broker {where} within {cfg.connect_timeout_s} s")
        code = self._connack.value
        if code in _AUTH_CODES:
            self.last_error = (
                f"MQTT broker {where} refused the login of user {cfg.username!r}: {_AUTH_CODES[code]} "
                f"(reason code 0x{code:02X}); check the username/password (file or credential) and the ACL; "
                f"retrying in {cfg.auth_backoff_s:.0f} s"
            )
            logger.error("%s", self.last_error)
            return "auth"
        if code >= 0x80:
            return self._failed(f"MQTT broker {where} refused the connection: {self._connack} (0x{code:02X})")
        return "ok"

    def _failed(self, why: str) -> str:
        if why != self.last_error:
            logger.warning("%s; retrying with back-off", why)
        self.last_error = why
        return "failed"

    def _session(self) -> str:
        client = self._new_client()
        try:
            state = self._connect(client)
            if state != "ok":
                return state
            return self._serve(client)
        finally:
            client._reset_sockets()  # close the socket and paho's wake-up socket pair now, not at GC

    def _serve(self, client: mqtt.Client) -> str:
        """Publish from the spool until stopped or the connection ends; the outcome for the back-off."""
        cfg = self.config
        self._connected_at = time.monotonic()
        with self._lock:
            self._counts["connects"] += 1
            if self._counts["connects"] > 1:
                self._counts["reconnects"] += 1
        boundary = self.spool.max_id()  # rows up to here were written before this connection: a replay
        self._acks = []
        self.last_error = None
        if self._command_filter is not None:
            client.subscribe(self._command_filter, qos=1)
        priority: deque[int] = deque(self._on_connected())
        self._connected.set()
        logger.info("connected to MQTT broker %s:%d as %s (%d queued)", cfg.host, cfg.port,
                    self.client_id, self.spool.queued_msgs)
        inflight: dict[int, SpoolRow] = {}
        sent_early: set[int] = set(priority)
        buffer: deque[SpoolRow] = deque()
        cursor = 0
        last_tick = 0.0
        while True:
            now_m = time.monotonic()
            if self._stop.is_set() and (now_m > self._flush_deadline or (not inflight and not buffer
                                                                          and self.spool.queued_msgs == 0)):
                self._disconnect(client)
                return "served"
            # Fill the in-flight window: status rows of this connection first, then the spool in order.
            while len(inflight) < cfg.max_inflight:
                row: SpoolRow | None = None
                from_priority = bool(priority)
                if priority:
                    row = self.spool.get(priority.popleft())
                    if row is None:
                        continue
                else:
                    if not buffer:
                        buffer.extend(self.spool.fetch(cursor, max(64, cfg.max_inflight)))
                        if buffer:
                            cursor = buffer[-1].id
                    if not buffer:
                        break
                    row = buffer.popleft()
                    if row.id in sent_early:
                        continue
                replayed = row.id <= boundary
                info = client.publish(row.topic, row.payload, qos=1, retain=row.retain,
                                      properties=_publish_props(row, replayed, time.time()))
                if info.rc != mqtt.MQTT_ERR_SUCCESS:  # not sent: try again (or replay after the reconnect)
                    if from_priority:
                        priority.appendleft(row.id)
                    else:
                        buffer.appendleft(row)
                    break
                inflight[info.mid] = row
                with self._lock:
                    self._counts["sent"] += 1
                    self._counts["replayed"] += replayed
            self._inflight_n = len(inflight)
            busy = bool(buffer) or bool(priority) or self.spool.last_id > cursor
            rc = client.loop(0.0 if busy and len(inflight) < cfg.max_inflight else 0.05)
            self._settle(inflight)
            if rc != mqtt.MQTT_ERR_SUCCESS or not client.is_connected():
                return self._lost(rc)
            if now_m - last_tick >= 1.0:
                last_tick = now_m
                self._tick()

    def _lost(self, rc: int) -> str:
        """Log and classify a connection the broker or the network ended: served, short or taken_over."""
        cfg = self.config
        sent = self._server_disconnect
        lasted = time.monotonic() - self._connected_at
        if sent is not None and sent.value == SESSION_TAKEN_OVER:
            self.last_error = (
                f"another MQTT client connected to {cfg.host}:{cfg.port} with this agent's client id "
                f"{self.client_id!r} and took its session over: two agents share one mqtt.node/client_id "
                f"(give each camera's agent its own mqtt.node, e.g. <host>-<camera>); retrying in "
                f"{cfg.reconnect_max_s:g} s"
            )
            logger.error("%s; %d messages stay spooled", self.last_error, self.spool.queued_msgs)
            return "taken_over"
        why = mqtt.error_string(rc) if sent is None else f"the broker disconnected us: {sent} (0x{sent.value:02X})"
        if lasted >= STABLE_SESSION_S:
            self._short_in_a_row = 0
            logger.warning("lost the MQTT connection to %s:%d (%s); %d messages stay spooled",
                           cfg.host, cfg.port, why, self.spool.queued_msgs)
            self.last_error = f"connection lost: {why}"
            return "served"
        self._short_in_a_row += 1
        self.last_error = (
            f"the MQTT connection to {cfg.host}:{cfg.port} ended {lasted:.1f} s after the broker accepted it "
            f"({why}; {self._short_in_a_row} time(s) in a row)"
        )
        if self._short_in_a_row >= 2:
            self.last_error += (
                f": most likely another agent connects with the same client id {self.client_id!r} (give each "
                f"camera's agent its own mqtt.node, e.g. <host>-<camera>), else a broker limit closes it "
                f"(see the broker log); reconnecting with back-off"
            )
            logger.error("%s; %d messages stay spooled", self.last_error, self.spool.queued_msgs)
        else:
            logger.warning("%s; %d messages stay spooled", self.last_error, self.spool.queued_msgs)
        return "short"

    def _settle(self, inflight: dict[int, SpoolRow]) -> None:
        if not self._acks:
            return
        acks, self._acks = self._acks, []
        ok: list[int] = []
        for mid, rc in acks:
            row = inflight.pop(mid, None)
            if row is None:
                continue
            if rc.value >= 0x80:
                logger.warning("broker rejected a %s message on %s: %s", row.cls, row.topic, rc)
                self.spool.reject([row.id], "broker_rejected")
                self._count("broker_rejected")
            else:
                ok.append(row.id)
        self.spool.ack(ok)
        self._count("acked", len(ok))
        self._inflight_n = len(inflight)

    def _disconnect(self, client: mqtt.Client) -> None:
        props = _props(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0  # clean exit: end the session (the will is discarded too)
        client.disconnect(ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection"), props)
        deadline = time.monotonic() + 1.0
        while client.socket() is not None and time.monotonic() < deadline:
            client.loop(0.05)
        self._connected.clear()
        logger.info("disconnected from MQTT broker (%d messages stay spooled)", self.spool.queued_msgs)
