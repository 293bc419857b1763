"""``edge-guard run`` (the real daemon, synthetic camera with faults) publishing to a real mosquitto."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mosquitto import Collector, Mosquitto, Received, mosquitto_available, stop_process

from agent.sinks.mqtt.config import SpoolConfig
from agent.sinks.mqtt.schemas import PAYLOAD_TYPES
from agent.sinks.mqtt.spool import Spool

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto / mosquitto_passwd not installed"),
]
BASE = "edge-guard/v1/lab/e2e"


def write_config(tmp_path: Path, broker: Mosquitto, *, realtime: bool) -> Path:
    cfg = tmp_path / "cam0.yaml"
    cfg.write_text(f"""
camera_id: cam0
site: lab
node: e2e
source:
  uri: synthetic://default
  realtime: {str(realtime).lower()}
health:
  interval_s: 1
mqtt:
  host: {broker.host}
  port: {broker.port}
  will_delay_s: 1
  spool:
    path: {tmp_path / "spool.sqlite"}
""")
    return cfg


def states(msgs: list[Received]) -> list[str]:
    return [str(m.json()["state"]) for m in msgs if m.topic == f"{BASE}/status"]


def test_edge_guard_run_publishes_status_health_events_and_flushes(broker: Mosquitto, tmp_path: Path) -> None:
    col = Collector(broker.host, broker.port, f"{BASE}/#")
    cfg = write_config(tmp_path, broker, realtime=False)
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg), "--max-frames", "900"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    msgs = col.wait_for(lambda ms: "stopped" in states(ms), 10)
    col.close()
    assert states(msgs)[0] == "online" and states(msgs)[-1] == "stopped"
    bodies = [m.json() for m in msgs if "/frames/" not in m.topic]
    for body in bodies:
        PAYLOAD_TYPES[body["type"]].model_validate(body)
    health = [b for b in bodies if b["type"] == "health"]
    assert [h["summary"]["seq"] for h in health] == list(range(len(health))) and health
    assert sum(h["summary"]["frames_processed"] for h in health) > 0
    events = [b for b in bodies if b["type"] == "event"]
    assert events and events[0]["lifecycle"] == "new" and events[-1]["lifecycle"] == "end"
    assert all(e["profile_id"] and e["model_sha256"] for e in events), "events name the profile that decided"
    assert [b["state"] for b in bodies if b["type"] == "camera_status"][-1] == "offline"
    frames = [m for m in msgs if "/frames/" in m.topic]
    assert frames and all(m.content_type == "image/jpeg" for m in frames)
    # Everything was acknowledged before the process exited: nothing is left in the spool.
    spool = Spool(tmp_path / "spool.sqlite", SpoolConfig())
    assert spool.queued_msgs == 0
    spool.close()


def test_edge_guard_run_kill_9_leaves_the_last_will(broker: Mosquitto, tmp_path: Path) -> None:
    col = Collector(broker.host, broker.port, f"{BASE}/#")
    cfg = write_config(tmp_path, broker, realtime=True)
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        col.wait_for(lambda ms: any(m.topic.endswith("/health") for m in ms) and "online" in states(ms), 60)
        assert "online" in states(col.snapshot())
        stop_process(proc, signal.SIGKILL)
        t0 = time.monotonic()
        msgs = col.wait_for(lambda ms: states(ms)[-1:] == ["offline"], 10)
    finally:
        stop_process(proc, signal.SIGKILL)
        col.close()
    assert states(msgs)[-1] == "offline", states(msgs)
    assert time.monotonic() - t0 < 10
    will = [m for m in msgs if m.topic == f"{BASE}/status"][-1]
    assert will.json()["reason"] == "connection lost (last will)" and will.json()["identity"]["cameras"] == ["cam0"]
