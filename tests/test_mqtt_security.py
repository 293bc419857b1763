"""TLS + password + ACL with a real mosquitto; wrong password; 1000 hostile command payloads."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from helpers import wait_until
from mosquitto import Collector, Mosquitto, Received, make_certs, mosquitto_available
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.errors import ConfigError
from agent.health import HealthSummary
from agent.sinks.mqtt.commands import sign_request
from agent.sinks.mqtt.config import MqttConfig
from agent.sinks.mqtt.identity import AgentIdentity
from agent.sinks.mqtt.loadgen import FakeTarget, synthetic
from agent.sinks.mqtt.sink import MqttSink
from agent.sinks.mqtt.topics import acl_example
from agent.verdict import Decision

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto / mosquitto_passwd not installed"),
]
PREFIX = "edge-guard/v1"
BASE = f"{PREFIX}/lab/n1"
USERS = {"n1": "agent-pw-123", "operator": "op-pw-456", "intruder": "in-pw-789", "viewer": "view-pw-0"}


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", tls=True, users=USERS, acl=acl_example()) as b:
        yield b


def pw_file(tmp_path: Path, user: str, password: str | None = None) -> Path:
    p = tmp_path / f"{user}.pw"
    p.write_text((password or USERS[user]) + "\n")
    p.chmod(0o600)
    return p


def sink_for(broker: Mosquitto, tmp_path: Path, **extra: Any) -> MqttSink:
    cfg = MqttConfig.model_validate({
        "host": "localhost", "port": broker.port, "reconnect_max_s": 1.0,
        "spool": {"path": str(tmp_path / "spool.sqlite")}, **extra,
    })
    ident = AgentIdentity.create("lab", "n1", ["cam0"], model_sha256="ab" * 32, profile_id="p", config_hash="c")
    return MqttSink(cfg, ident)


def client(broker: Mosquitto, user: str | None, *, tls: bool = True) -> mqtt.Client:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if user:
        c.username_pw_set(user, USERS[user])
    if tls:
        assert broker.certs is not None
        c.tls_set(ca_certs=str(broker.certs.ca))
    c.connect("localhost", broker.port)
    c.loop_start()
    return c


def send(c: mqtt.Client, topic: str, payload: bytes, corr: bytes | None = None) -> None:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if corr is not None:
        props.CorrelationData = corr
    c.publish(topic, payload, qos=1, properties=props).wait_for_publish(5)


def test_tls_password_acl(secure_broker: Mosquitto, tmp_path: Path) -> None:
    assert secure_broker.certs is not None
    ca = secure_broker.certs.ca
    viewer = Collector("localhost", secure_broker.port, f"{PREFIX}/#", username="viewer",
                       password=USERS["viewer"], ca_file=ca)
    sink = sink_for(secure_broker, tmp_path, username="n1", password_file=str(pw_file(tmp_path, "n1")),
                    tls={"ca_file": str(ca)})
    sink.attach(FakeTarget())
    try:
        assert sink.conn.wait_connected(10), sink.conn.last_error
        viewer.wait_for(lambda ms: any(m.topic == f"{BASE}/status" for m in ms), 5)
        # The operator may command the agent; the response comes back with the correlation data.
        op = client(secure_broker, "operator")
        send(op, f"{BASE}/cmd/ping", json.dumps({"id": "op1"}).encode(), b"op")
        def reply(ms: list[Received], corr: bytes) -> list[Received]:
            return [m for m in ms if m.correlation == corr and m.topic.endswith("/response")]

        msgs = viewer.wait_for(lambda ms: reply(ms, b"op"), 10)
        assert reply(msgs, b"op")[0].json()["status"] == "ok"
        # An intruder (and an anonymous-over-TLS viewer) cannot: the broker answers "not authorized"
        # and does not deliver. The connection may not survive the denial (mosquitto 2.0 with
        # MQTT 5 drops it shortly after), so each attempt gets its own connection.
        intruder = client(secure_broker, "intruder")
        send(intruder, f"{BASE}/cmd/ping", json.dumps({"id": "evil"}).encode(), b"evil")
        forger = client(secure_broker, "intruder")
        send(forger, f"{BASE}/status", b'{"state": "offline"}')  # nor forge the agent's status
        time.sleep(2.0)
        seen = viewer.snapshot()
        assert not any(m.correlation == b"evil" for m in seen), "the intruder's command was delivered"
        assert not reply(seen, b"evil")
        assert not any(b'"evil"' in m.payload or m.payload == b'{"state": "offline"}' for m in seen)
        assert sink.stats()["commands_received"] == 1.0
        for c in (op, intruder, forger):
            c.disconnect()
            c.loop_stop()
    finally:
        sink.close()
        viewer.close()
    assert "agent-pw-123" not in secure_broker.log()


def test_plain_client_cannot_reach_tls_listener(secure_broker: Mosquitto, tmp_path: Path) -> None:
    sink = sink_for(secure_broker, tmp_path, username="n1", password_file=str(pw_file(tmp_path, "n1")))
    try:
        assert not sink.conn.wait_connected(2.0)
        assert sink.conn.last_error is not None and "MQTT broker" in sink.conn.last_error
    finally:
        sink.close()


def test_wrong_password_is_a_clear_error_and_a_back_off(
    secure_broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert secure_broker.certs is not None
    caplog.set_level(logging.INFO, logger="agent.sinks.mqtt")
    wrong = "not-the-password"
    t0 = time.monotonic()
    sink = sink_for(secure_broker, tmp_path, username="n1", password_file=str(pw_file(tmp_path, "n1", wrong)),
                    tls={"ca_file": str(secure_broker.certs.ca)}, auth_backoff_s=1.0)
    try:
        # Refused, logged once per attempt at ERROR, retried after auth_backoff_s (not a hot loop).
        # Wait for the second refusal instead of counting them in a fixed window (TLS handshakes
        # slow down on a loaded machine); it cannot come before one back-off has passed.
        wait_until(lambda: sink.stats()["auth_failures"] >= 2, 30, "a second refused login")
        assert time.monotonic() - t0 >= 1.0, "retried before auth_backoff_s"
        time.sleep(1.5)  # keep watching: a hot loop would now show dozens of failures
        stats = sink.stats()
        assert 2 <= stats["auth_failures"] <= (time.monotonic() - t0) / 1.0 + 2, stats
        assert stats["connected"] == 0.0 and sink.conn.alive()
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors and "refused the login of user 'n1'" in errors[0] and "check the username/password" in errors[0]
        assert wrong not in caplog.text and USERS["n1"] not in caplog.text
        # The agent keeps running: publishing still works (into the spool).
        sink.publish_health(HealthSummary(camera_id="cam0", seq=0, window_start_ts=0, window_end_ts=1))
        assert sink.stats()["queued_msgs"] >= 1
    finally:
        sink.close()


def hostile_payloads(rng: random.Random, key: bytes) -> list[tuple[str, bytes, str]]:
    """1000 (command name, payload, category) tuples: none of them is a valid, signed command."""
    out: list[tuple[str, bytes, str]] = []
    names = ["ping", "snapshot", "set-thresholds", "reload-profile"]
    for i in range(1000):
        kind = i % 8
        name = rng.choice(names)
        if kind == 0:
            out.append((name, rng.randbytes(rng.randrange(1, 300)), "random bytes"))
        elif kind == 1 and i % 16 == 1:
            # Above the Maximum Packet Size the agent announces: the broker drops it, never delivered.
            out.append((name, b'{"id": "' + b"A" * 100_000 + b'"}', "oversized"))
        elif kind == 1:
            out.append((name, b'{"id": "' + b"A" * 20_000 + b'"}', "huge"))
        elif kind == 2:
            args = {"alpha_flag": rng.choice(["0.1", None, [1], {"x": 1}, -1, 7]), "alpha_block": "x"}
            out.append(("set-thresholds", json.dumps({"id": f"w{i}", "args": args}).encode(), "wrong types"))
        elif kind == 3:
            body = sign_request(b"attacker key", f"{BASE}/cmd/{name}", {"id": f"b{i}", "ts": time.time()})
            out.append((name, json.dumps(body).encode(), "bad signature"))
        elif kind == 4:
            out.append((name, json.dumps({"id": f"u{i}", "ts": time.time()}).encode(), "unsigned"))
        elif kind == 5:
            out.append((f"x{i}", json.dumps({"id": f"n{i}"}).encode(), "unknown command"))
        elif kind == 6:
            body = sign_request(key, f"{BASE}/cmd/{name}", {"id": f"s{i}", "ts": time.time() - 7200})
            out.append((name, json.dumps(body).encode(), "stale"))
        else:
            out.append((name, rng.choice([b"[]", b"null", b"42", b'"id"', b"{}", b'{"id": ""}']), "wrong shape"))
    return out


def test_1000_hostile_commands_are_rejected_and_frames_keep_flowing(broker: Mosquitto, tmp_path: Path) -> None:
    key = b"the real shared key"
    keyfile = tmp_path / "cmd-key"
    keyfile.write_bytes(key)
    sink = sink_for(broker, tmp_path, host=broker.host,
                    commands={"require_signature": True, "hmac_key_file": str(keyfile), "rate_per_s": 5000,
                              "burst": 5000, "queue_size": 1024})
    sink.attach(FakeTarget())
    col = Collector(broker.host, broker.port, f"{BASE}/cmd/+/response")
    assert sink.conn.wait_connected(10)
    frames = [0]
    stop = threading.Event()
    worst_ms = [0.0]

    def pipeline() -> None:  # the guard keeps processing frames at 25 fps during the barrage
        seq = 0
        while not stop.is_set():
            v, f = synthetic("cam0", seq, "dark" if seq % 50 < 5 else None, Decision.FLAG)
            t0 = time.perf_counter()
            sink.publish_verdict(v, f)
            worst_ms[0] = max(worst_ms[0], (time.perf_counter() - t0) * 1e3)
            frames[0] += 1
            seq += 1
            stop.wait(0.04)

    worker = threading.Thread(target=pipeline)
    worker.start()
    payloads = hostile_payloads(random.Random(7), key)
    attacker = client(broker, None, tls=False)
    try:
        time.sleep(0.3)
        before = frames[0]
        for i, (name, payload, _) in enumerate(payloads):
            send(attacker, f"{BASE}/cmd/{name}", payload, f"h{i}".encode())
        during = frames[0] - before
        oversized = sum(cat == "oversized" for _, _, cat in payloads)
        msgs = col.wait_for(lambda ms: len(ms) >= len(payloads) - oversized, 30)
        after_barrage = frames[0]
        time.sleep(0.5)
        assert frames[0] > after_barrage, "frames are still being processed after the barrage"
    finally:
        stop.set()
        worker.join()
        attacker.disconnect()
        attacker.loop_stop()
    by_corr: dict[bytes, Received] = {m.correlation: m for m in msgs if m.correlation}
    stats = sink.stats()
    sink.close()
    col.close()
    answered = sum(f"h{i}".encode() in by_corr for i in range(len(payloads)))
    ignored = int(stats["commands_ignored"])
    print(f"\n1000 hostile commands: {answered} rejected with a response, {ignored} ignored by the agent's rate "
          f"limit, {oversized} dropped by the broker (above the agent's Maximum Packet Size); "
          f"{during} frames processed while they were sent, slowest publish_verdict {worst_ms[0]:.1f} ms")
    assert stats["commands_received"] == len(payloads) - oversized
    assert answered + ignored + oversized == len(payloads) == 1000, (answered, ignored, oversized)
    assert all(m.json()["status"] == "rejected" and str(m.json()["reason"]).startswith("rejected: ")
               for m in by_corr.values())
    reasons = {cat: str(by_corr[f"h{i}".encode()].json()["reason"])
               for i, (_, _, cat) in enumerate(payloads) if f"h{i}".encode() in by_corr}
    assert "exceeds" in reasons["huge"] and "bad signature" in reasons["bad signature"]
    assert "missing signature" in reasons["unsigned"] and "stale" in reasons["stale"]
    assert "unknown command" in reasons["unknown command"]
    # Behaviour, not speed: frames flowed during and after the barrage (the slowest publish is printed above).
    assert during > 0, "the pipeline made progress while the barrage was being sent"


def test_command_flood_is_ignored_by_policy(broker: Mosquitto, tmp_path: Path) -> None:
    sink = sink_for(broker, tmp_path, host=broker.host, commands={"rate_per_s": 1, "burst": 5})
    sink.attach(FakeTarget())
    col = Collector(broker.host, broker.port, f"{BASE}/cmd/+/response")
    assert sink.conn.wait_connected(10)
    attacker = client(broker, None, tls=False)
    for i in range(100):
        send(attacker, f"{BASE}/cmd/ping", json.dumps({"id": f"f{i}"}).encode(), f"f{i}".encode())
    deadline = time.monotonic() + 10
    while sink.stats()["commands_received"] < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    msgs = col.wait_for(lambda ms: len(ms) >= 5, 5)
    time.sleep(0.3)
    stats = sink.stats()
    attacker.disconnect()
    attacker.loop_stop()
    sink.close()
    col.close()
    answered = len(col.snapshot())
    assert stats["commands_received"] == 100
    assert answered + stats["commands_ignored"] == 100 and 5 <= answered <= 20, (answered, stats)
    assert all(m.json()["status"] == "ok" for m in msgs)


def test_mutual_tls_with_a_client_certificate(tmp_path: Path) -> None:
    """A broker that requires client certificates: the configured pair gets the agent in, and
    without it the TLS handshake fails (retried with back-off, reported as the last error)."""
    with Mosquitto(tmp_path / "broker", tls=True, require_client_cert=True) as broker:
        certs = broker.certs
        assert certs is not None
        key = tmp_path / "client.key"
        key.write_bytes(certs.client_key.read_bytes())
        key.chmod(0o600)
        sink = sink_for(broker, tmp_path, tls={"ca_file": str(certs.ca), "cert_file": str(certs.client_cert),
                                               "key_file": str(key)})
        try:
            assert sink.conn.wait_connected(10), sink.conn.last_error
        finally:
            sink.close()
        anonymous = sink_for(broker, tmp_path / "no-cert", tls={"ca_file": str(certs.ca)})
        try:
            assert not anonymous.conn.wait_connected(2.0)
            assert anonymous.conn.last_error is not None
        finally:
            anonymous.close()
        log = broker.log()
        assert "as edge-guard-lab-n1" in log  # the agent's session, over the certificate
        assert "peer did not return a certificate" in log  # the attempt without one, refused


@pytest.mark.parametrize(
    ("broken", "match"),
    [
        ("empty_key", r"mqtt\.tls: the client certificate .* and key .* cannot be loaded together"),
        ("other_key", r"mqtt\.tls: the client certificate .* and key .* cannot be loaded together"),
        ("garbage_ca", r"mqtt\.tls\.ca_file: .* is not a usable PEM CA certificate"),
    ],
)
def test_unusable_tls_files_are_a_config_error_at_start(tmp_path: Path, broken: str, match: str) -> None:
    """Caught when the sink is built (exit 78), not retried forever in the connection thread."""
    certs = make_certs(tmp_path / "certs")
    key, ca = tmp_path / "client.key", certs.ca
    key.write_bytes(b"" if broken == "empty_key" else
                    certs.server_key.read_bytes() if broken == "other_key" else certs.client_key.read_bytes())
    if broken == "garbage_ca":
        ca = tmp_path / "ca.crt"
        ca.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    cfg = MqttConfig.model_validate({
        "host": "localhost", "port": 1, "spool": {"path": str(tmp_path / "spool.sqlite")},
        "tls": {"ca_file": str(ca), "cert_file": str(certs.client_cert), "key_file": str(key)},
    })
    ident = AgentIdentity.create("lab", "n1", ["cam0"], model_sha256="ab" * 32, profile_id="p", config_hash="c")
    with pytest.raises(ConfigError, match=match):
        MqttSink(cfg, ident, start=False)
