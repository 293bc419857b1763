"""The progress rule (agent.watchdog), table-driven, and the pinger against a real socket."""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
from pathlib import Path

import pytest

from agent.sdnotify import Notifier
from agent.watchdog import ProgressWatchdog, WatchdogPinger


class State(enum.Enum):
    UP = "up"
    RECONNECTING = "reconnecting"


T = 10.0  # stall_after_s in every case below; now = 100.0

CASES = [
    # (last frame processed, source state, worker busy since) -> ping, reason
    pytest.param(99.0, "up", None, True, "progress", id="frames-flowing"),
    pytest.param(90.0, "up", None, True, "progress", id="last-frame-exactly-T-ago"),
    pytest.param(89.9, "up", None, False, "no_progress", id="up-but-silent-longer-than-T"),
    pytest.param(None, "up", None, False, "no_progress", id="up-never-a-frame"),
    pytest.param(50.0, "down", None, True, "source_retrying", id="camera-down-retried"),
    pytest.param(50.0, "connecting", None, True, "source_retrying", id="camera-connecting"),
    pytest.param(None, "reconnecting", None, True, "source_retrying", id="reconnecting-never-a-frame"),
    pytest.param(50.0, State.RECONNECTING, None, True, "source_retrying", id="enum-state"),
    pytest.param(50.0, "  Down ", None, True, "source_retrying", id="state-case-and-space"),
    pytest.param(50.0, State.UP, None, False, "no_progress", id="enum-up-silent"),
    pytest.param(50.0, "ended", None, False, "no_progress", id="ended-and-silent"),
    pytest.param(99.0, "up", 95.0, True, "progress", id="worker-busy-5s-ok"),
    pytest.param(99.0, "up", 90.0, True, "progress", id="worker-busy-exactly-T"),
    pytest.param(99.0, "up", 85.0, False, "worker_stuck", id="worker-stuck-beats-recent-frame"),
    pytest.param(50.0, "reconnecting", 85.0, False, "worker_stuck", id="worker-stuck-beats-retrying"),
    # the worker took the next frame just after the last one finished and hangs on it: idle
    # passes T a few ms before busy does, and the silence is still the worker's
    pytest.param(89.9, "up", 90.05, False, "worker_stuck", id="worker-hangs-idle-passes-T-first"),
    # a worker that only just started (after a long outage) does not own the silence
    pytest.param(50.0, "up", 99.0, False, "no_progress", id="worker-just-started-up-silent"),
    pytest.param(50.0, "reconnecting", 99.0, True, "source_retrying", id="worker-just-started-retrying"),
]


@pytest.mark.parametrize(("last", "state", "busy", "ping", "reason"), CASES)
def test_progress_rule(last: float | None, state: object, busy: float | None, ping: bool, reason: str) -> None:
    wd = ProgressWatchdog(stall_after_s=T)
    decision = wd.evaluate(100.0, last, state, busy)
    assert (decision.ping, decision.reason) == (ping, reason), decision.detail
    assert wd.should_ping(100.0, last, state, busy) is ping


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_stall_after_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="stall_after_s must be > 0"):
        ProgressWatchdog(bad)


def test_pinger_pings_at_the_interval_and_stops_on_a_stall(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "n.sock")
    sock.bind(path)
    sock.setblocking(False)
    notifier = Notifier(path)
    pinger = WatchdogPinger(notifier, ProgressWatchdog(2.0), interval_s=1.0)
    timeline: list[tuple[float, bool]] = []
    with caplog.at_level(logging.WARNING, logger="agent.watchdog"):
        # Frames every 0.25 s until t=3, then the worker hangs on the frame taken at t=3.
        for step in range(41):
            now = step * 0.25
            last = min(now, 3.0)
            busy = 3.0 if now > 3.0 else None
            pinger.tick(now, last, "up", busy)
            sent = False
            with contextlib.suppress(BlockingIOError):
                sent = sock.recv(100) == b"WATCHDOG=1"
            timeline.append((now, sent))
    sock.close()
    notifier.close()
    ping_times = [t for t, sent in timeline if sent]
    # Every 1 s while progressing; the worker-stuck rule fires once busy > 2 s (after t=5).
    assert ping_times == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert pinger.pings == 6
    assert pinger.last is not None and pinger.last.reason == "worker_stuck"
    stops = [r for r in caplog.records if "not pinging" in r.getMessage()]
    assert len(stops) == 1 and "worker_stuck" in stops[0].getMessage()


def test_pinger_without_systemd_watchdog_only_evaluates(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "n.sock")
    sock.bind(path)
    notifier = Notifier(path)
    pinger = WatchdogPinger(notifier, ProgressWatchdog(2.0), interval_s=None)
    assert pinger.tick(1.0, 1.0, "up", None).ping
    assert pinger.pings == 0
    sock.settimeout(0.1)
    with pytest.raises(TimeoutError):
        sock.recv(100)
    sock.close()
    notifier.close()


def test_pinger_logs_when_pings_resume(caplog: pytest.LogCaptureFixture) -> None:
    pinger = WatchdogPinger(Notifier(None), ProgressWatchdog(1.0), interval_s=0.5)
    with caplog.at_level(logging.WARNING, logger="agent.watchdog"):
        pinger.tick(10.0, 5.0, "up", None)  # stalled
        pinger.tick(10.5, 5.0, "up", None)  # still stalled: no second log line
        pinger.tick(11.0, 11.0, "up", None)  # progress again
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2
    assert "not pinging" in msgs[0] and "pinging again" in msgs[1]
