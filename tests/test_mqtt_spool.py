"""The store-and-forward spool against real SQLite files: caps policy, ages, restarts, kill -9."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import agent.sinks.mqtt.spool as spool_module
from agent.errors import ConfigError, PublishError
from agent.sinks.mqtt.config import SpoolConfig
from agent.sinks.mqtt.spool import OutMessage, Spool

CAP = 64 * 1024


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def msg(cls: str, i: int, size: int = 1000, topic: str | None = None) -> OutMessage:
    return OutMessage(cls, topic or f"t/{cls}", bytes([i % 256]) * size, f"{cls}-{i}")


def ids_of(spool: Spool, cls: str) -> list[str]:
    return [r.msg_id for r in spool.fetch(0, 10_000) if r.cls == cls]


def test_put_fetch_ack_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    s = Spool(path, SpoolConfig())
    ids = [s.put(msg("event", i)) for i in range(5)]
    assert all(isinstance(i, int) for i in ids)
    rows = s.fetch(0, 3)
    assert [r.msg_id for r in rows] == ["event-0", "event-1", "event-2"]
    assert [r.msg_id for r in s.fetch(rows[-1].id, 10)] == ["event-3", "event-4"]
    assert s.ack([rows[0].id, rows[1].id]) == 2
    assert s.ack([rows[0].id]) == 0  # a duplicate PUBACK deletes nothing
    s.close()
    s2 = Spool(path, SpoolConfig())
    assert s2.queued_msgs == 3
    assert s2.queued_bytes == sum(len(r.payload) + len(r.topic) + 2 for r in s2.fetch(0, 10))
    assert [r.msg_id for r in s2.fetch(0, 10)] == ["event-2", "event-3", "event-4"]
    s2.close()


@pytest.mark.integration
def test_survives_kill_9(tmp_path: Path) -> None:
    """Rows committed before SIGKILL are there after it (WAL, synchronous=NORMAL)."""
    path = tmp_path / "k.sqlite"
    code = (
        "import os, signal, sys; from pathlib import Path\n"
        "from agent.sinks.mqtt.config import SpoolConfig\n"
        "from agent.sinks.mqtt.spool import OutMessage, Spool\n"
        f"s = Spool(Path({str(path)!r}), SpoolConfig())\n"
        "for i in range(200): s.put(OutMessage('health', 't/h', b'x' * 100, f'h-{i}'))\n"
        "print('written', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "written" in proc.stdout
    s = Spool(path, SpoolConfig())
    assert s.queued_msgs == 200
    assert ids_of(s, "health") == [f"h-{i}" for i in range(200)]
    s.close()


def test_cap_policy_frames_then_health_thinned_then_events(tmp_path: Path) -> None:
    s = Spool(tmp_path / "c.sqlite", SpoolConfig(max_bytes=CAP))
    for i in range(20):
        s.put(msg("frame", i))
    for i in range(20):
        s.put(msg("health", i))
    for i in range(20):
        s.put(msg("event", i))
    assert s.queued_msgs == 60 and s.queued_bytes <= CAP
    # More events: frames go first, oldest first.
    for i in range(20, 30):
        assert s.put(msg("event", i)) is not None
    frames = ids_of(s, "frame")
    assert frames == [f"frame-{i}" for i in range(20 - len(frames), 20)], "frames must be dropped oldest first"
    assert len(ids_of(s, "health")) == 20 and len(ids_of(s, "event")) == 30
    # Still more: all frames gone, then health is thinned (every second of the oldest half), events all kept.
    for i in range(30, 50):
        assert s.put(msg("event", i)) is not None
    assert ids_of(s, "frame") == []
    health = [int(h.split("-")[1]) for h in ids_of(s, "health")]
    assert ids_of(s, "event") == [f"event-{i}" for i in range(50)]
    assert health[0] == 0, "thinning keeps the oldest summary"
    assert health[-5:] == [15, 16, 17, 18, 19], "the newest summaries are intact"
    assert len(health) < 20 and all(b > a for a, b in itertools.pairwise(health))
    by_cls, by_cause = s.drops()
    assert by_cls["frame"] == 20 and by_cls["health"] == 20 - len(health)
    assert by_cause == {"cap": by_cls["frame"] + by_cls["health"]}
    # Top up with events until a message no longer fits without eviction.
    i = 50
    while CAP - s.queued_bytes >= 1100:
        s.put(msg("event", i))
        i += 1
    # A new frame may not evict health or events: it is dropped itself, and counted.
    assert s.put(msg("frame", 99)) is None
    assert s.drops()[0]["frame"] == 21
    assert s.queued_bytes <= CAP
    s.close()
    # Drop counters survive a restart (they are reported in the next health summary).
    assert Spool(tmp_path / "c.sqlite", SpoolConfig(max_bytes=CAP)).drops()[0]["frame"] == 21


def test_events_evict_oldest_events_when_only_events_remain(tmp_path: Path) -> None:
    s = Spool(tmp_path / "e.sqlite", SpoolConfig(max_bytes=CAP))
    for i in range(100):
        s.put(msg("event", i))
    events = ids_of(s, "event")
    assert events[-1] == "event-99" and events == [f"event-{i}" for i in range(100 - len(events), 100)]
    assert s.drops()[0]["event"] == 100 - len(events)
    s.close()


def test_status_is_coalesced_not_dropped(tmp_path: Path) -> None:
    s = Spool(tmp_path / "st.sqlite", SpoolConfig())
    s.put(msg("status", 0, 10, "n/status"), coalesce=True)
    s.put(msg("status", 1, 10, "n/cam/status"), coalesce=True)
    s.put(msg("status", 2, 10, "n/status"), coalesce=True)
    assert ids_of(s, "status") == ["status-1", "status-2"]
    assert s.counters().get("superseded") == 1 and s.drops() == ({}, {})
    s.close()


def test_too_large_and_age_expiry(tmp_path: Path) -> None:
    clock = Clock()
    cfg = SpoolConfig(max_bytes=CAP, frame_max_age_s=60, health_max_age_s=120, max_age_s=600)
    s = Spool(tmp_path / "a.sqlite", cfg, clock=clock)
    assert s.put(msg("frame", 0, CAP + 1)) is None
    assert s.drops() == ({"frame": 1}, {"too_large": 1})
    for cls in ("frame", "health", "event", "status"):
        s.put(msg(cls, 1, 10))
    clock.t += 61
    assert s.expire() == 1
    clock.t += 60
    assert s.expire() == 1
    assert sorted(r.cls for r in s.fetch(0, 10)) == ["event", "status"]
    clock.t += 600
    assert s.expire() == 2 and s.queued_msgs == 0
    assert s.drops()[1]["age"] == 4
    assert s.oldest_age_s() is None
    s.close()


def test_corrupt_spool_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "bad.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    s = Spool(path, SpoolConfig())
    assert s.queued_msgs == 0
    assert s.put(msg("event", 1)) is not None
    assert len(list(tmp_path.glob("bad.sqlite.corrupt-*"))) == 1
    s.close()


def test_a_spool_belongs_to_one_process(tmp_path: Path) -> None:
    """Two agents on one node and folder would share a spool file and ack each other's messages:
    the second one is refused, naming the holder, and the file is free again once it exits."""
    path = tmp_path / "shared.sqlite"
    code = (
        "import sys; from pathlib import Path\n"
        "from agent.sinks.mqtt.config import SpoolConfig\n"
        "from agent.sinks.mqtt.spool import Spool\n"
        f"s = Spool(Path({str(path)!r}), SpoolConfig())\n"
        "print('open', flush=True)\n"
        "sys.stdin.readline()\n"
        "s.close()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(ConfigError, match=rf"spool .*shared.sqlite is in use by another edge-guard process "
                                              rf"\(pid {holder.pid}\).*own mqtt.node"):
            Spool(path, SpoolConfig())
    finally:
        holder.communicate("\n", timeout=30)
    s = Spool(path, SpoolConfig())  # released when its owner closed it
    s.put(OutMessage("health", "t/h", b"x", "h-0"))
    assert s.queued_msgs == 1
    s.close()


def test_a_spool_path_that_cannot_be_a_file_is_a_config_error(tmp_path: Path) -> None:
    """Restarting would not help (exit 78), and a folder at the path is not 'corrupt': never moved aside."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"mqtt.spool.path .*s\.sqlite: a part of it is a file, not a folder"):
        Spool(blocker / "sub" / "s.sqlite", SpoolConfig())
    folder = tmp_path / "spool.sqlite"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"mqtt.spool.path .*spool\.sqlite is a folder"):
        Spool(folder, SpoolConfig())
    assert folder.is_dir() and not list(tmp_path.glob("*.corrupt-*"))


def test_a_spool_folder_this_user_cannot_write_is_a_config_error(tmp_path: Path) -> None:
    """Exit 78, not 1: systemd would restart a runtime failure every few seconds, and no restart makes
    the folder writable. (/proc refuses new entries even to root.)"""
    with pytest.raises(ConfigError, match=r"^mqtt.spool.path /proc/eg-spool/s\.sqlite: cannot create its lock file "
                                          r"s\.sqlite\.lock \(.+\); point it at a folder this user can write"):
        Spool(Path("/proc/eg-spool/s.sqlite"), SpoolConfig())


def test_a_full_disk_under_the_spool_is_a_runtime_failure() -> None:
    """A full disk may be freed: exit 1 (restart), with a message that says what to do."""
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is needed for a real ENOSPC")
    with pytest.raises(OSError) as caught, open("/dev/full", "wb", buffering=0) as full:
        full.write(b"x")
    err = spool_module._unusable(Path("/data/s.sqlite"), "write its lock file s.sqlite.lock", caught.value)
    assert isinstance(err, PublishError)
    assert str(err) == ("the MQTT spool /data/s.sqlite cannot write its lock file s.sqlite.lock: No space left on "
                        "device (free space on that disk, or point mqtt.spool.path at another one)")


def test_props_round_trip(tmp_path: Path) -> None:
    s = Spool(tmp_path / "p.sqlite", SpoolConfig())
    props: dict[str, object] = {"content_type": "image/jpeg", "user": [["event_id", "e1"]], "correlation": "ab01"}
    s.put(OutMessage("frame", "t/f", b"\xff\xd8", "m1", retain=False, props=props))
    row = s.fetch(0, 1)[0]
    assert row.props == json.loads(json.dumps(props)) and row.payload == b"\xff\xd8" and not row.retain
    s.close()

