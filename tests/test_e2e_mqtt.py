"""The daemon publishing to a real Mosquitto: status, health, events, and commands acting on it."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from mosquitto import Collector, Mosquitto, Received, mosquitto_available
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import load_config
from agent.daemon import Daemon
from agent.sdnotify import Notifier

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto / mosquitto_passwd not installed"),
]
BASE = "edge-guard/v1/lab/n1"


def _command(broker: Mosquitto, name: str, body: dict[str, Any]) -> None:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.CorrelationData = name.encode()
    props.ResponseTopic = f"{BASE}/cmd/{name}/response"
    c.publish(f"{BASE}/cmd/{name}", json.dumps(body).encode(), qos=1, properties=props).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def _of_type(msgs: list[Received], kind: str) -> list[dict[str, Any]]:
    out = []
    for m in msgs:
        if "/frames/" in m.topic or ("/cmd/" in m.topic and not m.topic.endswith("/response")):
            continue
        body = m.json()
        if body.get("type") == kind:
            out.append(body)
    return out


def _node_states(msgs: list[Received]) -> list[str]:
    """The states published on the node status topic, in order."""
    return [str(m.json()["state"]) for m in msgs if m.topic == f"{BASE}/status"]


def test_daemon_over_mqtt(broker: Mosquitto, tmp_path: Path) -> None:
    col = Collector(broker.host, broker.port, "edge-guard/v1/#")
    cfg = load_config(None, {
        "camera_id": "cam0", "site": "lab", "node": "n1",
        # clean, then a dark window from frame 150 on, paced at 50 fps so commands meet a live agent
        "source": {"uri": "synthetic://custom?faults=dark:150:100000&size=96x64&fps=50", "realtime": True},
        "calibration": {"frames": 100},
        "health": {"interval_s": 1.0},
        "mqtt": {"host": broker.host, "port": broker.port, "will_delay_s": 1, "reconnect_max_s": 1.0,
                 "spool": {"path": str(tmp_path / "spool.sqlite")}},
    })
    daemon = Daemon(cfg, notifier=Notifier(None))
    runner = threading.Thread(target=lambda: daemon.run(install_signals=False))
    runner.start()
    try:
        msgs = col.wait_for(lambda ms: any(b'"lifecycle":"new"' in m.payload for m in ms), 30)
        assert _of_type(msgs, "event"), "a FLAG/BLOCK episode for the dark window"
        _command(broker, "ping", {"id": "p1"})
        _command(broker, "set-thresholds", {"id": "t1", "args": {"alpha_flag": 0.02, "alpha_block": 0.002}})
        _command(broker, "snapshot", {"id": "s1"})
        _command(broker, "reload-profile", {"id": "r1"})
        _command(broker, "limits", {"id": "l1"})
        msgs = col.wait_for(lambda ms: sum(m.topic.endswith("/response") for m in ms) >= 5, 15)
    finally:
        daemon.stop()
        runner.join(30)
    assert not runner.is_alive()
    # The node's own status says "stopped" last of all (the camera's "offline"/"stopped" comes first).
    msgs = col.wait_for(lambda ms: "stopped" in _node_states(ms), 30)
    col.close()
    assert "stopped" in _node_states(msgs), _node_states(msgs)

    responses = {m.correlation: m.json() for m in msgs if m.topic.endswith("/response")}
    ping = responses[b"ping"]
    assert ping["status"] == "ok" and ping["result"]["phase"] == "guarding"
    assert ping["result"]["frames_processed"] > 100
    assert responses[b"set-thresholds"]["status"] == "ok" and daemon.cfg.policy.alpha_flag == 0.02
    assert responses[b"snapshot"]["status"] == "ok"
    assert any("/frames/" in m.topic and m.user.get("role") == "snapshot" for m in msgs)
    # calibrated at start-up: there is no profile file to reload, and the agent says so
    assert responses[b"reload-profile"]["status"] == "error"
    assert "no policy.profile is configured" in responses[b"reload-profile"]["reason"]
    # what the start-up profile flags on each test (limits.py), at the alphas of the moment
    limits = responses[b"limits"]
    assert limits["status"] == "ok" and limits["result"]["alpha_flag"] in (0.01, 0.02)
    dark = next(lim for lim in limits["result"]["limits"] if lim["test"] == "dark")
    assert dark["quantity"] == "mean luma" and dark["side"] == "below" and dark["value"] < dark["median"]

    camera = [(b["state"], b["reason"]) for b in _of_type(msgs, "camera_status")]
    assert camera[0][0] == "online" and camera[-1] == ("offline", "stopped")
    health = _of_type(msgs, "health")
    assert health and all(h["summary"]["camera_id"] == "cam0" for h in health)
    guarding = [h for h in health if h["summary"]["phase"] == "guarding"]
    assert guarding and guarding[-1]["profile_id"] and guarding[-1]["model_sha256"] == daemon.ids()["model_sha256"]
    events = _of_type(msgs, "event")
    assert events[0]["lifecycle"] == "new" and events[0]["worst"]["reasons"]
    node = [b["state"] for b in _of_type(msgs, "node_status")]
    assert node[0] == "online" and node[-1] == "stopped"
