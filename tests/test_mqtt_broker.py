"""MqttSink against a real mosquitto: every topic and schema, retained status, last will, replay."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from helpers import wait_until
from mosquitto import Collector, Mosquitto, Received, mosquitto_available, start_loadgen, stop_process
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.cli import main
from agent.frame import Frame
from agent.health import HealthSummary
from agent.scoring.drift import DriftEvent
from agent.sinks.mqtt.config import MqttConfig
from agent.sinks.mqtt.identity import AgentIdentity
from agent.sinks.mqtt.loadgen import FakeTarget, synthetic
from agent.sinks.mqtt.schemas import PAYLOAD_TYPES, FrameProperties, LimitsResult
from agent.sinks.mqtt.sink import MqttSink
from agent.verdict import Decision, Reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto / mosquitto_passwd not installed"),
]
PREFIX = "edge-guard/v1"
BASE = f"{PREFIX}/lab/n1"
AGENT: dict[str, object] = {"will_delay_s": 1, "reconnect_max_s": 1.0}


def make_sink(broker: Mosquitto, tmp_path: Path, node: str = "n1", **extra: Any) -> MqttSink:
    cfg = MqttConfig.model_validate({
        "host": broker.host, "port": broker.port, "reconnect_max_s": 1.0, "will_delay_s": 1,
        "spool": {"path": str(tmp_path / f"spool-{node}.sqlite")}, **extra,
    })
    ident = AgentIdentity.create("lab", node, ["cam0"], model_sha256="ab" * 32, profile_id="p1", config_hash="c1")
    return MqttSink(cfg, ident)


def publish_cmd(broker: Mosquitto, name: str, payload: bytes, corr: bytes) -> None:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.CorrelationData = corr
    props.ResponseTopic = f"{BASE}/cmd/{name}/response"
    c.publish(f"{BASE}/cmd/{name}", payload, qos=1, properties=props).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_round_trip_of_every_topic_and_schema(broker: Mosquitto, tmp_path: Path) -> None:
    col = Collector(broker.host, broker.port, f"{PREFIX}/#")
    sink = make_sink(broker, tmp_path, frames={"per_minute": 600, "burst": 5, "reference_per_hour": 1},
                     events={"end_after_clean_frames": 2, "gap_s": 30, "update_interval_s": 0.5})
    target = FakeTarget()
    sink.attach(target)
    assert sink.conn.wait_connected(10)
    sink.publish_camera_status("cam0", "online", "source up")
    hour = 3600.0 * (int(time.time() // 3600) - 1)
    # A clean frame in the previous hour (the reference reservoir), a BLOCK episode, clean frames now.
    clean_img = np.full((480, 640, 3), 128, np.uint8)
    v, _ = synthetic("cam0", 0, None, Decision.PASS)
    sink.publish_verdict(v, Frame(clean_img, "cam0", 0, hour + 10, 0.0))
    for seq, fault in enumerate(["dark", "dark", "dark", None, None, None], start=1):
        v, f = synthetic("cam0", seq, fault, Decision.BLOCK)
        target.last = f
        sink.publish_verdict(v, f)
        time.sleep(0.3)
    sink.publish_health(HealthSummary(camera_id="cam0", seq=0, window_start_ts=time.time() - 1,
                                      window_end_ts=time.time(), frames_processed=7, fps=25.0,
                                      decisions={"PASS": 4, "BLOCK": 3}))
    cmds = {
        "ping": {"id": "p1"},
        "set-thresholds": {"id": "t1", "args": {"alpha_flag": 0.02, "alpha_block": 0.002}},
        "reload-profile": {"id": "r1"},
        "snapshot": {"id": "s1"},
        "limits": {"id": "l1"},
    }
    for name, body in cmds.items():
        publish_cmd(broker, name, json.dumps(body).encode(), f"corr-{name}".encode())
    publish_cmd(broker, "ping", b"\x00\x01 not json", b"corr-bad")

    def done(ms: list[Received]) -> bool:
        return sum(m.topic.endswith("/response") for m in ms) >= 6 and any("snapshot-" in m.topic for m in ms)

    col.wait_for(done, 15)
    sink.close()
    msgs = col.wait_for(lambda ms: any(b'"stopped"' in m.payload for m in ms), 10)
    col.close()

    kinds: dict[str, list[dict[str, Any]]] = {}
    frames: list[Received] = []
    for m in msgs:
        if "/frames/" in m.topic:
            frames.append(m)
            continue
        if "/cmd/" in m.topic and not m.topic.endswith("/response"):
            continue  # the requests this test sent
        body = m.json()
        model = PAYLOAD_TYPES[str(body["type"])]
        model.model_validate(body)  # every JSON payload validates against its versioned schema
        assert m.content_type == "application/json" and m.user["msg_id"] == body["msg_id"]
        assert body["site"] == "lab" and body["node"] == "n1" and body["model_sha256"] == "ab" * 32
        assert body["config_hash"] == "c1" and body["agent_version"] and body["ts"] > 0
        kinds.setdefault(str(body["type"]), []).append(body)
    # Node status: online first, stopped last; camera status; health with backlog; events.
    states = [b["state"] for b in kinds["node_status"]]
    assert states[0] == "online" and states[-1] == "stopped"
    assert kinds["node_status"][0]["identity"]["boot_id"] and kinds["node_status"][0]["identity"]["pid"] == os.getpid()
    assert kinds["camera_status"][0]["state"] == "online" and kinds["camera_status"][0]["camera_id"] == "cam0"
    (health,) = kinds["health"]
    assert health["summary"]["seq"] == 0 and "queued_msgs" in health["backlog"]
    assert health["summary"]["publisher"]["connected"] == 1.0
    events = kinds["event"]
    assert events[0]["lifecycle"] == "new" and events[-1]["lifecycle"] == "end"
    assert len({e["event_id"] for e in events}) == 1 and events[-1]["end_reason"] == "clean"
    assert events[-1]["frames"] == 3 and events[-1]["worst"]["reasons"][0]["code"] == "dark"
    assert events[-1]["worst"]["stats"]["brightness"] == 20.0
    # Commands: one response each, correlation data echoed, the bad one rejected.
    responses = {m.correlation: m.json() for m in msgs if m.topic.endswith("/response")}
    assert {k: v["status"] for k, v in responses.items()} == {
        b"corr-ping": "ok", b"corr-set-thresholds": "ok", b"corr-reload-profile": "ok", b"corr-snapshot": "ok",
        b"corr-limits": "ok", b"corr-bad": "rejected",
    }
    assert responses[b"corr-bad"]["reason"].startswith("rejected: ")
    limits = LimitsResult.model_validate(responses[b"corr-limits"]["result"])
    assert limits.limits[0].quantity == "mean luma" and limits.alpha_flag in (0.01, 0.02)
    assert target.alphas == (0.02, 0.002) and responses[b"corr-reload-profile"]["result"]["profile_id"] == "profile-1"
    assert kinds["command_response"][-1]["profile_id"] == "profile-1", "a reload updates the identity"
    # Frames: raw JPEG, content type, user properties linking them to the event; snapshot; reference.
    roles = {m.user["role"] for m in frames}
    assert {"first", "snapshot", "reference"} <= roles
    for m in frames:
        assert m.content_type == "image/jpeg" and len(m.payload) <= 128 * 1024
        FrameProperties.model_validate(m.user)
        assert hashlib.sha256(m.payload).hexdigest() == m.user["sha256"]
        assert cv2.imdecode(np.frombuffer(m.payload, np.uint8), cv2.IMREAD_COLOR) is not None
        assert m.topic.endswith(f"/frames/{m.user['event_id']}")
    first = next(m for m in frames if m.user["role"] == "first")
    assert first.user["event_id"] == events[0]["event_id"] and first.user["decision"] == "BLOCK"
    assert responses[b"corr-snapshot"]["result"]["sha256"] == next(
        m.user["sha256"] for m in frames if m.user["role"] == "snapshot")


def test_reference_sample_of_a_partial_hour_is_published_at_shutdown(broker: Mosquitto, tmp_path: Path) -> None:
    """The hour's clean reference frames are held until the hour is over; a clean stop publishes
    what it holds (before ``stopped``) instead of dropping it."""
    col = Collector(broker.host, broker.port, f"{PREFIX}/#")
    sink = make_sink(broker, tmp_path, frames={"per_minute": 600, "burst": 5, "reference_per_hour": 2})
    assert sink.conn.wait_connected(10)
    now = time.time()
    for seq in range(5):
        v, _ = synthetic("cam0", seq, None, Decision.PASS)
        sink.publish_verdict(v, Frame(np.full((120, 160, 3), 100 + seq, np.uint8), "cam0", seq, now, 0.0))
    time.sleep(0.5)
    assert not [m for m in col.snapshot() if "/frames/" in m.topic], "the hour is not over yet"
    sink.close()
    msgs = col.wait_for(lambda ms: any(b'"stopped"' in m.payload for m in ms), 10)
    col.close()
    refs = [m for m in msgs if "/frames/" in m.topic]
    hour = time.strftime("%Y%m%d%H", time.gmtime(now))
    assert len(refs) == 2 and {m.user["role"] for m in refs} == {"reference"}
    assert {m.topic.rsplit("/", 1)[1] for m in refs} == {f"ref-cam0-{hour}"}
    assert all(m.user["decision"] == "PASS" and m.user["reasons"] == "" for m in refs)
    stopped = next(i for i, m in enumerate(msgs) if b'"stopped"' in m.payload)
    assert max(msgs.index(m) for m in refs) < stopped


def test_a_status_queued_during_an_outage_arrives_without_a_seq_gap(broker: Mosquitto, tmp_path: Path) -> None:
    """A reconnect sends each camera's latest status again: where that status was still queued from
    the outage, it replaces itself (same msg_id and seq), so the collector sees no gap in the stream."""
    col = Collector(broker.host, broker.port, f"{BASE}/cam0/status", client_id="fleet", persistent=True)
    sink = make_sink(broker, tmp_path)
    try:
        assert sink.conn.wait_connected(10)
        sink.publish_camera_status("cam0", "online", "calibrating")
        col.wait_for(lambda ms: len(ms) >= 1, 10)
        broker.stop()
        wait_until(lambda: not sink.conn.connected, 10, "the sink to notice the outage")
        sink.publish_camera_status("cam0", "online", "guarding")  # queued while the broker is away
        broker.start()
        assert sink.conn.wait_connected(20)
        msgs = col.wait_for(lambda ms: any(b'"guarding"' in m.payload for m in ms), 20)
    finally:
        sink.close()
        col.close()
    bodies = {m.json()["msg_id"]: m.json() for m in msgs}  # QoS 1 may deliver one twice
    assert sorted(b["seq"] for b in bodies.values()) == [0, 1], [(b["seq"], b["reason"]) for b in bodies.values()]
    assert [bodies[k]["reason"] for k in sorted(bodies, key=lambda k: bodies[k]["seq"])] == ["calibrating", "guarding"]


def test_a_command_rejected_as_busy_keeps_its_request_id(broker: Mosquitto, tmp_path: Path) -> None:
    """The worker is stuck on one command and the queue holds one more: the third is rejected as
    busy, and its response still carries the request's id (the operator's key to match it)."""
    entered, release = threading.Event(), threading.Event()

    class SlowTarget(FakeTarget):
        def ping(self) -> dict[str, object]:
            entered.set()
            release.wait(10)
            return super().ping()

    col = Collector(broker.host, broker.port, f"{BASE}/cmd/ping/response")
    sink = make_sink(broker, tmp_path, commands={"queue_size": 1})
    sink.attach(SlowTarget())
    try:
        assert sink.conn.wait_connected(10)
        publish_cmd(broker, "ping", json.dumps({"id": "first"}).encode(), b"first")
        assert entered.wait(10), "the worker took the first command"
        for rid in ("queued", "third"):  # one connection after the other: they arrive in this order
            publish_cmd(broker, "ping", json.dumps({"id": rid}).encode(), rid.encode())
        busy = col.wait_for(lambda ms: len(ms) >= 1, 10)
        release.set()
        msgs = col.wait_for(lambda ms: len(ms) >= 3, 10)
    finally:
        release.set()
        sink.close()
        col.close()
    assert [m.json()["status"] for m in busy] == ["rejected"]
    assert busy[0].json()["request_id"] == "third" and "busy" in busy[0].json()["reason"]
    assert {m.correlation: m.json()["status"] for m in msgs} == {b"first": "ok", b"queued": "ok", b"third": "rejected"}


def test_drift_event_round_trip(broker: Mosquitto, tmp_path: Path) -> None:
    col = Collector(broker.host, broker.port, f"{BASE}/cam0/events")
    sink = make_sink(broker, tmp_path)
    assert sink.conn.wait_connected(10)
    start = DriftEvent("cam0", "model", "start", 812, 1700000000.25, 21.5, 19.0).to_dict()
    sink.publish_event(start)
    sink.publish_event({**start, "lifecycle": "end", "seq": 990, "statistic": math.inf})
    msgs = col.wait_for(lambda ms: len(ms) >= 2, 10)
    sink.close()
    col.close()
    bodies = [m.json() for m in msgs]
    for m, body in zip(msgs, bodies, strict=True):
        assert m.topic == f"{BASE}/cam0/events" and m.content_type == "application/json"
        assert PAYLOAD_TYPES["drift_event"].model_validate(body) and m.user["msg_id"] == body["msg_id"]
    assert [(b["type"], b["lifecycle"], b["frame_seq"], b["seq"]) for b in bodies] == [
        ("drift_event", "start", 812, 0), ("drift_event", "end", 990, 1)]
    assert bodies[0]["detector"] == "model" and bodies[0]["statistic"] == 21.5 and bodies[0]["threshold"] == 19.0
    assert bodies[1]["statistic"] is None, "JSON has no inf: null"
    assert bodies[0]["camera_id"] == "cam0" and bodies[0]["profile_id"] == "p1"
    assert sink.spool.queued_msgs == 0, "acknowledged (QoS 1) before close returned"


def test_flickering_reason_is_one_event_through_the_broker(broker: Mosquitto, tmp_path: Path) -> None:
    col = Collector(broker.host, broker.port, f"{BASE}/cam0/events")
    sink = make_sink(broker, tmp_path, frames={"enabled": False},
                     events={"end_after_clean_frames": 2, "gap_s": 30, "update_interval_s": 3600})
    assert sink.conn.wait_connected(10)
    # A blur incident whose secondary ood_model reason flickers every other frame, then clean.
    for seq in range(8):
        v, f = synthetic("cam0", seq, "blur", Decision.FLAG)
        if seq % 2:
            v = replace(v, reasons=(*v.reasons, Reason("ood_model", Decision.FLAG, 4.0, 1e-3)))
        sink.publish_verdict(v, f)
    for seq in (8, 9):
        sink.publish_verdict(*synthetic("cam0", seq, None, Decision.PASS))
    col.wait_for(lambda ms: any(b'"end"' in m.payload for m in ms), 10)
    sink.close()  # nothing is open any more: close adds no event
    msgs = col.snapshot()
    col.close()
    bodies = [m.json() for m in msgs]
    for body in bodies:
        PAYLOAD_TYPES["event"].model_validate(body)
    assert [(b["lifecycle"], b["reason_codes"], b["update_seq"], b["frames"], b["end_reason"]) for b in bodies] == [
        ("new", ["blur"], 0, 1, None),
        ("update", ["blur", "ood_model"], 1, 2, None),  # the added reason, announced at once
        ("end", ["blur", "ood_model"], 2, 8, "clean"),
    ]
    assert len({b["event_id"] for b in bodies}) == 1 and bodies[-1]["start_seq"] == 0 and bodies[-1]["last_seq"] == 7

def test_retained_status_for_late_subscribers(broker: Mosquitto, tmp_path: Path) -> None:
    sink = make_sink(broker, tmp_path)
    assert sink.conn.wait_connected(10)
    sink.publish_camera_status("cam0", "degraded", "source down: reconnecting")
    sink.close()
    late = Collector(broker.host, broker.port, f"{BASE}/#")
    msgs = late.wait_for(lambda ms: len(ms) >= 2, 5)
    late.close()
    got = {m.topic: (m.retain, m.json()["state"]) for m in msgs}
    assert got == {f"{BASE}/status": (True, "stopped"), f"{BASE}/cam0/status": (True, "degraded")}


def node_states(msgs: list[Received], node: str) -> list[str]:
    return [str(m.json()["state"]) for m in msgs if m.topic == f"{PREFIX}/lab/{node}/status"]


def test_last_will_after_kill_9(broker: Mosquitto, tmp_path: Path) -> None:
    col = Collector(broker.host, broker.port, f"{PREFIX}/lab/+/status")
    proc = start_loadgen(broker, tmp_path / "victim.sqlite", "victim", config=AGENT)
    try:
        assert "online" in node_states(col.wait_for(lambda ms: "online" in node_states(ms, "victim"), 15), "victim")
        stop_process(proc)
        t0 = time.monotonic()
        msgs = col.wait_for(lambda ms: node_states(ms, "victim")[-1:] == ["offline"], 10)
        assert node_states(msgs, "victim")[-1] == "offline"
        will = next(m for m in reversed(msgs) if m.topic.endswith("victim/status")).json()
        assert will["reason"] == "connection lost (last will)" and will["identity"]["node"] == "victim"
        assert time.monotonic() - t0 >= 0.5, "the will waits for its delay"
    finally:
        stop_process(proc)
    late = Collector(broker.host, broker.port, f"{PREFIX}/lab/victim/status")
    retained = late.wait_for(lambda ms: len(ms) >= 1, 5)
    late.close()
    col.close()
    assert retained[0].retain and retained[0].json()["state"] == "offline"


def test_will_delay_rides_out_a_quick_restart(broker: Mosquitto, tmp_path: Path) -> None:
    """kill -9 and restart within will_delay_s: no `offline` flap (same client id resumes the session).

    The will delay is long (a restarted subprocess on a loaded machine has plenty of time to
    reconnect), and the check runs until well past the moment the first connection's will would
    have been published, measured from the kill and at least a few seconds after the reconnect.
    """
    will_delay_s = 15
    config = {**AGENT, "will_delay_s": will_delay_s}
    col = Collector(broker.host, broker.port, f"{PREFIX}/lab/+/status")
    proc = start_loadgen(broker, tmp_path / "blip.sqlite", "blip", config=config)
    try:
        msgs = col.wait_for(lambda ms: "online" in node_states(ms, "blip"), 30)
        assert "online" in node_states(msgs, "blip"), node_states(msgs, "blip")
        stop_process(proc)  # returns once the process is gone: its will delay starts about now
        killed = time.monotonic()
        proc = start_loadgen(broker, tmp_path / "blip.sqlite", "blip", config=config)
        msgs = col.wait_for(lambda ms: node_states(ms, "blip").count("online") >= 2, 2 * will_delay_s)
        reconnected = time.monotonic()
        assert node_states(msgs, "blip").count("online") >= 2, node_states(msgs, "blip")
        took = reconnected - killed
        assert took < will_delay_s, f"the restart took {took:.1f} s, longer than the will delay: nothing to test"
        # Until past the first connection's will delay (+ 2 s slack for the broker), and at least 2 s
        # after the reconnect: a will that was not cancelled by the resumed session shows up by then.
        time.sleep(max(killed + will_delay_s + 2.0, reconnected + 2.0) - time.monotonic())
        assert "offline" not in node_states(col.snapshot(), "blip"), node_states(col.snapshot(), "blip")
    finally:
        stop_process(proc)
        col.close()


def test_short_outage_is_replayed_in_order_and_marked(broker: Mosquitto, tmp_path: Path) -> None:
    col = Collector(broker.host, broker.port, f"{BASE}/cam0/health", client_id="col-short", persistent=True)
    sink = make_sink(broker, tmp_path)
    assert sink.conn.wait_connected(10)

    def health(seq: int) -> None:
        sink.publish_health(HealthSummary(camera_id="cam0", seq=seq, window_start_ts=0, window_end_ts=1))

    health(0)
    col.wait_for(lambda ms: len(ms) >= 1, 5)
    broker.stop()
    wait_until(lambda: sink.stats()["connected"] == 0.0, 30, "the sink to notice the broker is gone")
    for seq in range(1, 21):
        health(seq)
    assert sink.stats()["queued_msgs"] >= 20 and sink.stats()["connected"] == 0.0
    broker.start()
    msgs = col.wait_for(lambda ms: len({m.json()["summary"]["seq"] for m in ms}) >= 21, 20)
    sink.close()
    col.close()
    seqs: list[int] = []
    for m in msgs:
        s = int(m.json()["summary"]["seq"])
        if s not in seqs:
            seqs.append(s)
    assert seqs == list(range(21)), "every summary arrives, in order"
    replayed = [m for m in msgs if int(m.json()["summary"]["seq"]) >= 1]
    assert all(m.user.get("replayed") == "1" and float(m.user["queued_s"]) > 0 for m in replayed)
    assert sink.stats()["queued_msgs"] == 0


def test_two_agents_with_one_client_id_are_reported_not_a_hot_loop(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two cameras on one box without their own mqtt.node: the broker hands the session to whichever
    # connected last (mosquitto 2.0.11 just closes the old socket; newer brokers send DISCONNECT
    # 0x8E "session taken over"). Each side must say why and back off, not kick the other 5 times
    # a second as it did before.
    caplog.set_level(logging.INFO, logger="agent.sinks.mqtt")
    backoff = 2.0

    def kicked(sink: MqttSink) -> float:
        st = sink.stats()
        return st["short_sessions"] + st["session_taken_over"]

    first = make_sink(broker, tmp_path, client_id="eg-same", reconnect_max_s=backoff,
                      spool={"path": str(tmp_path / "first.sqlite")})
    second: MqttSink | None = None
    try:
        assert first.conn.wait_connected(10)
        t0 = time.monotonic()
        second = make_sink(broker, tmp_path, client_id="eg-same", reconnect_max_s=backoff,
                           spool={"path": str(tmp_path / "second.sqlite")})
        wait_until(lambda: kicked(first) >= 2, 20, "the first agent kicked out twice")
        time.sleep(2 * backoff)
        elapsed = time.monotonic() - t0
        # back-off 0.5, 1, 2, 2, ... s per side: a handful of sessions, not dozens
        for sink in (first, second):
            assert kicked(sink) <= 3 + elapsed / backoff, (kicked(sink), elapsed)
            assert sink.conn.alive()
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("'eg-same'" in e and "mqtt.node" in e for e in errors), errors
    finally:
        first.close()
        if second is not None:
            second.close()


def test_tail_shows_the_fleet_and_saves_frames(broker: Mosquitto, tmp_path: Path) -> None:
    sink = make_sink(broker, tmp_path, frames={"per_minute": 600, "burst": 10})
    assert sink.conn.wait_connected(10)
    sink.publish_camera_status("cam0", "online", "guarding")
    tail = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "tail", "--host", broker.host, "--port", str(broker.port), "--once",
         "--duration", "4", "--save-frames", str(tmp_path / "frames"), "--save-health", str(tmp_path / "health")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Publish only once the CLI has subscribed (its last filter is the frames one): importing can
    # take far longer than usual on a loaded machine, and messages sent before are not delivered.
    wait_until(lambda: "/+/frames/+" in broker.log() or tail.poll() is not None, 60, "edge-guard tail to subscribe")
    for seq in range(12):
        v, f = synthetic("cam0", seq, "dark" if seq < 3 else None, Decision.BLOCK)
        sink.publish_verdict(v, f)
        if seq % 4 == 0:
            sink.publish_health(HealthSummary(camera_id="cam0", seq=seq // 4, window_start_ts=0, window_end_ts=1,
                                              frames_processed=100, fps=25.0, decisions={"PASS": 97, "BLOCK": 3},
                                              drift_alarms=["brightness"]))
        time.sleep(0.05)
    out, err = tail.communicate(timeout=30)
    sink.close()
    assert tail.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["SITE/NODE", "CAMERA", "STATE", "FPS", "PASS%", "FLAG%", "BLOCK%", "EVENTS",
                                "DRIFT", "BACKLOG", "DROPS", "HEALTH"]
    cam = next(ln for ln in lines if " cam0 " in ln).split()
    assert cam[:6] == ["cam0", "online", "25.0", "97.0", "0.0", "3.0"] and "brightness" in cam
    assert any(ln.startswith("lab/n1") and "online" in ln for ln in lines)
    saved = list((tmp_path / "frames" / "lab" / "n1" / "cam0").glob("*.jpg"))
    assert saved and f"{len(saved)} frame(s) saved" in out
    # The health summaries as edge-guard report reads them: one line each, in order.
    saved_health = (tmp_path / "health" / "lab" / "n1" / "cam0" / "health.jsonl").read_text().splitlines()
    health = [json.loads(ln) for ln in saved_health]
    assert [h["seq"] for h in health] == [0, 1, 2] and "3 health summaries saved" in out
    assert main(["report", str(tmp_path / "health"), "--camera", "cam0"]) == 0
