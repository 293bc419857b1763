"""Store-and-forward across broker outages, with a real mosquitto and a synthetic agent subprocess.

The agent (``python -m agent.sinks.mqtt.loadgen``) writes a ledger line for every message it
commits to its spool; a persistent-session collector records what the broker delivers. Every
health summary and event spooled during the outage must arrive, in order, with duplicates
only as QoS 1 allows (the collector de-duplicates by msg_id).
"""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from mosquitto import Collector, Mosquitto, Received, mosquitto_available, read_ledger, start_loadgen, stop_process

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto / mosquitto_passwd not installed"),
]
PREFIX = "edge-guard/v1"
OUTAGE_S = 60.0
AGENT: dict[str, object] = {"reconnect_min_s": 0.2, "reconnect_max_s": 2.0, "will_delay_s": 30}


def msg_id(m: Received) -> str:
    return m.user.get("msg_id", "")


def ids_received(msgs: list[Received]) -> set[str]:
    return {msg_id(m) for m in msgs}


def first_occurrences(msgs: list[Received], key: Any) -> list[Any]:
    seen: set[Any] = set()
    out: list[Any] = []
    for m in msgs:
        k = key(m)
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


def wait_for_ids(col: Collector, want: set[str], timeout: float) -> list[Received]:
    return col.wait_for(lambda ms: want <= ids_received(ms), timeout)


def in_window(ledger: list[dict[str, Any]], t0: float, t1: float, classes: tuple[str, ...]) -> list[dict[str, Any]]:
    return [r for r in ledger if t0 <= float(r["t"]) <= t1 and r["cls"] in classes]


def test_outage_60s_everything_arrives_in_order(broker: Mosquitto, tmp_path: Path) -> None:
    node = "fleet1"
    col = Collector(broker.host, broker.port, f"{PREFIX}/lab/{node}/#", client_id="fleet-collector", persistent=True)
    ledger_path = tmp_path / "ledger.jsonl"
    proc = start_loadgen(broker, tmp_path / "spool.sqlite", node, ledger=ledger_path, config=AGENT)
    try:
        col.wait_for(lambda ms: sum(m.topic.endswith("/health") for m in ms) >= 3, 15)
        t_down = time.time()
        broker.stop()
        time.sleep(OUTAGE_S)
        t_up = time.time()
        broker.start()
        during = in_window(read_ledger(ledger_path), t_down, t_up, ("health", "event", "frame"))
        msgs = wait_for_ids(col, {str(r["msg_id"]) for r in during}, 60)
        replay_s = time.time() - t_up
    finally:
        assert stop_process(proc, signal.SIGTERM) == 0
    msgs = col.wait_for(lambda ms: any(b'"stopped"' in m.payload for m in ms), 10)
    col.close()

    got = ids_received(msgs)
    sent = {c: [r for r in during if r["cls"] == c] for c in ("health", "event", "frame")}
    missing = {c: [r["msg_id"] for r in rs if r["msg_id"] not in got] for c, rs in sent.items()}
    received = {c: sum(r["msg_id"] in got for r in rs) for c, rs in sent.items()}
    dups = len(msgs) - len(ids_received(msgs))
    print(  # the closing note quotes these
        f"\noutage {OUTAGE_S:.0f} s at 25 fps: sent during outage health={len(sent['health'])} "
        f"events={len(sent['event'])} frames={len(sent['frame'])}; received after restart "
        f"health={received['health']} events={received['event']} frames={received['frame']}; "
        f"duplicates={dups}; backlog delivered {replay_s:.1f} s after the broker came back"
    )
    assert len(sent["health"]) >= OUTAGE_S - 2 and len(sent["event"]) >= 20
    assert missing == {"health": [], "event": [], "frame": []}
    # In order: first occurrences of health summary seqs and of event stream seqs are 0, 1, 2, ... with no gap.
    health = [m for m in msgs if m.topic.endswith("/cam0/health")]
    hseq = first_occurrences(health, lambda m: m.json()["summary"]["seq"])
    assert hseq == list(range(len(hseq))), "health summaries arrive in order without gaps"
    events = [m for m in msgs if m.topic.endswith("/cam0/events")]
    eseq = first_occurrences(events, lambda m: m.json()["seq"])
    assert eseq == list(range(len(eseq))), "events arrive in order without gaps"
    # Each episode: new, then updates, then end, in that order.
    for _, group in itertools.groupby(sorted((m.json() for m in events), key=lambda b: (b["event_id"], b["seq"])),
                                      key=lambda b: b["event_id"]):
        cycle = [b["lifecycle"] for b in group]
        assert cycle[0] == "new" and all(c == "update" for c in cycle[1:-1]), cycle
    # Messages spooled during the outage are marked as replayed.
    during_ids = {str(r["msg_id"]) for r in during}
    assert all(m.user.get("replayed") == "1" for m in msgs if msg_id(m) in during_ids)


def test_kill_9_during_outage_then_restart_delivers_the_spool(broker: Mosquitto, tmp_path: Path) -> None:
    node = "k9"
    col = Collector(broker.host, broker.port, f"{PREFIX}/lab/{node}/#", client_id="k9-collector", persistent=True)
    spool = tmp_path / "spool.sqlite"
    ledger1 = tmp_path / "ledger1.jsonl"
    proc = start_loadgen(broker, spool, node, ledger=ledger1, config=AGENT)
    try:
        col.wait_for(lambda ms: sum(m.topic.endswith("/health") for m in ms) >= 2, 15)
        t_down = time.time()
        broker.stop()
        time.sleep(5.0)
        stop_process(proc, signal.SIGKILL)
        pending = in_window(read_ledger(ledger1), t_down, time.time(), ("health", "event", "frame"))
        broker.start()
        proc = start_loadgen(broker, spool, node, ledger=tmp_path / "ledger2.jsonl", config=AGENT)
        msgs = wait_for_ids(col, {str(r["msg_id"]) for r in pending}, 30)
    finally:
        stop_process(proc, signal.SIGTERM)
        col.close()
    got = ids_received(msgs)
    lost = [r for r in pending if r["msg_id"] not in got]
    print(f"\nkill -9 during outage: {len(pending)} spooled by the killed agent, "
          f"{len(pending) - len(lost)} delivered by its successor")
    assert len(pending) >= 5 and lost == []
    first_run = {str(r["msg_id"]) for r in pending}
    assert all(m.user.get("replayed") == "1" for m in msgs if msg_id(m) in first_run)


def test_disk_cap_during_long_outage_follows_the_policy(broker: Mosquitto, tmp_path: Path) -> None:
    node = "capped"
    col = Collector(broker.host, broker.port, f"{PREFIX}/lab/{node}/#", client_id="cap-collector", persistent=True)
    ledger_path = tmp_path / "ledger.jsonl"
    config = {**AGENT, "spool": {"max_bytes": 64 * 1024},
              "frames": {"max_bytes": 8192, "per_minute": 600, "burst": 20}}
    proc = start_loadgen(broker, tmp_path / "spool.sqlite", node, ledger=ledger_path, health_s=0.1, period_s=2.0,
                         config=config)
    try:
        col.wait_for(lambda ms: sum(m.topic.endswith("/health") for m in ms) >= 3, 15)
        t_down = time.time()
        broker.stop()
        time.sleep(10.0)
        t_up = time.time()
        broker.start()

        def reported(ms: list[Received]) -> bool:  # a health summary written after the reconnect
            return any(m.topic.endswith("/health") and m.json()["ts"] > t_up + 1 for m in ms)

        msgs = col.wait_for(reported, 30)
    finally:
        stop_process(proc, signal.SIGTERM)
        col.close()
    ledger = read_ledger(ledger_path)
    during = in_window(ledger, t_down, t_up, ("health", "event", "frame"))
    got = ids_received(msgs)
    missing = [r for r in during if r["msg_id"] not in got]
    after = [m.json() for m in msgs if m.topic.endswith("/health") and m.json()["ts"] > t_up + 1]
    drops = after[0]["backlog"]["drops"]
    by_cause = after[0]["backlog"]["drops_by_cause"]
    print(f"\ndisk cap 64 KiB, 10 s outage: spooled {len(during)} "
          f"({sum(r['cls'] == 'health' for r in during)} health, {sum(r['cls'] == 'event' for r in during)} events, "
          f"{sum(r['cls'] == 'frame' for r in during)} frames); not delivered {len(missing)}; "
          f"reported drops {drops} by cause {by_cause}")
    # Events are kept; only frames and health were dropped, and every drop is counted and reported.
    assert {r["cls"] for r in missing} <= {"frame", "health"}
    assert [r for r in during if r["cls"] == "event"] and not [r for r in missing if r["cls"] == "event"]
    assert drops.get("event", 0) == 0 and drops.get("status", 0) == 0
    assert drops.get("health", 0) > 0 and drops.get("frame", 0) > 0
    assert set(by_cause) == {"cap"} and len(missing) <= sum(drops.values())
    # Health is thinned, not cut: the early part of the outage is still covered, the end is intact.
    h_during = [r for r in during if r["cls"] == "health"]
    third = len(h_during) // 3
    assert any(r["msg_id"] in got for r in h_during[:third]) and h_during[-1]["msg_id"] in got
    assert sum(r["msg_id"] in got for r in h_during[:third]) < third, "the oldest summaries were thinned"
    # Nothing else broke: the agent went on publishing (health after the outage, in order).
    seqs = [b["summary"]["seq"] for b in after]
    assert seqs == sorted(seqs) and len(seqs) >= 1
