"""The agent as systemd sees it: a real ``edge-guard run`` subprocess, a real NOTIFY_SOCKET.

The test plays systemd's part: it binds an AF_UNIX datagram socket (a path, or a name in the
abstract namespace), starts the agent with ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and
``WATCHDOG_PID`` set the way systemd sets them (WATCHDOG_PID is the main process: the shell that
sets it ``exec``s the agent, keeping its pid), and records every datagram with its arrival time.

The stall test makes inference hang on purpose *inside the child*: a small launcher wraps the
daemon's model loader so that ``infer`` blocks forever after N frames, then runs the normal CLI.
No test hook is compiled into the agent. Its timeline is printed (``pytest -s``) and written to
``watchdog-timeline.txt`` in the test's tmp dir.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import read_jsonl, wait_until

from agent import REPO_ROOT, exitcodes

pytestmark = pytest.mark.integration

CONFIG = """\
camera_id: svc
node: test
source:
  uri: "synthetic://clean?size=96x64&fps=30"
  realtime: true
calibration:
  frames: 20
policy:
  alpha_flag: {alpha}
pipeline:
  stall_after_s: {stall_after_s}
health:
  interval_s: 60
file_sink:
  dir: {out}
"""

WATCHDOG_USEC = 1_000_000  # WatchdogSec=1: the agent pings every 0.5 s
STALL_AFTER_S = 1.0  # the stall test only: short, so that it is quick
# Every other test: the shipped value (systemd/edge-guard.example.yaml). With 1 s, the worker's
# calibration fit (over 1 s on a loaded machine) rightly counts as a stall and pauses the pings,
# which the cadence checks would then report as a late ping (seen: gaps of 1.05 and 1.28 s).
STALL_AFTER_NORMAL_S = 10.0

# Runs in the child: the real CLI, with the model's infer() hanging after N frames (like a stuck
# GPU kernel). Prints the CLOCK_MONOTONIC time of the hang, which is system-wide, to stderr.
STALL_LAUNCHER = """\
import sys, threading, time
import agent.daemon as daemon
from agent.cli import main

AFTER = int(sys.argv.pop(1))
real_load = daemon.load_model

class Stalling:
    def __init__(self, inner):
        self._inner, self._calls = inner, 0
    def __getattr__(self, name):
        return getattr(self._inner, name)
    def warmup(self):
        return self._inner.warmup()
    def infer(self, images):
        self._calls += len(images)
        if self._calls > AFTER:
            print(f"EG-TEST inference hangs now mono={time.monotonic():.6f} wall={time.time():.6f}",
                  file=sys.stderr, flush=True)
            threading.Event().wait()
        return self._inner.infer(images)

daemon.load_model = lambda cfg, *args, **kwargs: Stalling(real_load(cfg, *args, **kwargs))
sys.exit(main(sys.argv[1:]))
"""


class NotifyListener:
    """systemd's end of NOTIFY_SOCKET: every datagram with its CLOCK_MONOTONIC arrival time."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if kind == "path":
            path = str(tmp_path / "notify.sock")
            self.sock.bind(path)
            self.address = path
        else:
            name = f"edge-guard-test-{uuid.uuid4().hex}"
            self.sock.bind(b"\0" + name.encode())
            self.address = "@" + name
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._record(self.sock.recv(65536))
            except TimeoutError:
                continue

    def _record(self, data: bytes) -> None:
        with self._lock:
            self.messages.append((time.monotonic(), data.decode()))

    def snapshot(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.messages)

    def times(self, field: str, since: float = 0.0) -> list[float]:
        """Arrival times of messages with the assignment ``field`` ('WATCHDOG=1'; 'STATUS=': any)."""

        def has(message: str) -> bool:
            return any(a == field or (field.endswith("=") and a.startswith(field)) for a in message.split("\n"))

        return [t for t, m in self.snapshot() if t >= since and has(m)]

    def wait_for(
        self, field: str, timeout_s: float, since: float = 0.0, alive: Callable[[], str | None] | None = None
    ) -> float:
        """First arrival time of ``field`` after ``since``; ``alive`` returns why to give up early."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.times(field, since)
            if got:
                return got[0]
            dead = alive() if alive is not None else None
            if dead is not None:
                raise AssertionError(f"no {field!r}: {dead}")
            time.sleep(0.02)
        raise AssertionError(f"no {field!r} within {timeout_s} s; got {self.snapshot()}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        # Whatever is still queued in the socket arrived before close(): record it too, so that a
        # receiving thread the scheduler left behind does not lose the last datagrams (STOPPING=1).
        self.sock.setblocking(False)
        while True:
            try:
                self._record(self.sock.recv(65536))
            except BlockingIOError:
                break
        self.sock.close()


class Agent:
    """``edge-guard run`` started the way systemd starts it (Type=notify, WatchdogSec=1)."""

    def __init__(self, tmp_path: Path, kind: str = "path", *, stall_after_frames: int | None = None) -> None:
        self.tmp = tmp_path
        self.stall_after_s = STALL_AFTER_NORMAL_S if stall_after_frames is None else STALL_AFTER_S
        self.out = tmp_path / "out"
        self.config = tmp_path / "svc.yaml"
        self.write_config()
        self.notify = NotifyListener(kind, tmp_path)
        self.log_path = tmp_path / "stderr.log"
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in finish())
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("EDGE_GUARD_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_"))
        }
        env.update(NOTIFY_SOCKET=self.notify.address, WATCHDOG_USEC=str(WATCHDOG_USEC), ORT_DISABLE_TELEMETRY="1")
        # The child runs in tmp_path (like WorkingDirectory=); find the package from this checkout
        # even while the editable install is being rewritten by a concurrent `pip install -e`.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        python = [sys.executable, "-m", "agent.cli"]
        if stall_after_frames is not None:
            python = [sys.executable, "-c", STALL_LAUNCHER, str(stall_after_frames)]
        # systemd sets WATCHDOG_PID to the main pid; `exec` keeps the shell's pid for the agent.
        argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", *python, "run", "--config", str(self.config)]
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=self._log)

    def wait_notify(self, field: str, timeout_s: float, since: float = 0.0) -> float:
        """Like NotifyListener.wait_for, failing at once (with the log) if the agent exited."""
        return self.notify.wait_for(field, timeout_s, since, alive=self._exited)

    def _exited(self) -> str | None:
        rc = self.proc.poll()
        return None if rc is None else f"the agent exited with status {rc}:\n{self.log[-3000:]}"

    def write_config(self, alpha: float | str = 0.01) -> None:
        text = CONFIG.format(alpha=alpha, stall_after_s=self.stall_after_s, out=self.out)
        self.config.write_text(text, encoding="utf-8")

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def wait_log(self, text: str, timeout_s: float, after: int = 0) -> None:
        try:
            wait_until(lambda: text in self.log[after:], timeout_s, repr(text))
        except AssertionError as exc:  # the log as it is now, not as it was when the wait began
            raise AssertionError(f"{exc} in the log:\n{self.log[-3000:]}") from None

    def timeline(self) -> list[tuple[float, str]]:
        """(seconds since start, message) for every datagram, plus the child's test markers."""
        events = [(t - self.t0, m.replace("\n", " | ")) for t, m in self.notify.snapshot()]
        for match in re.finditer(r"EG-TEST (.*) mono=([0-9.]+)", self.log):
            events.append((float(match.group(2)) - self.t0, f"[test] {match.group(1)}"))
        return sorted(events)

    def finish(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            return self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            time.sleep(0.1)  # let the last datagrams in
            self.notify.close()
            self._log.close()


def _group(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not found in {text[-2000:]!r}"
    return match.group(1)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for a in started:
        if a.proc.poll() is None or not a.notify._stop.is_set():
            a.finish(signal.SIGKILL)


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_ready_watchdog_status_and_clean_stop(tmp_path: Path, agents: list[Agent], kind: str) -> None:
    agent = Agent(tmp_path, kind)
    agents.append(agent)
    n = agent.notify

    # Start-up: status while loading, READY only once a frame went through the pipeline.
    ready_t = agent.wait_notify("READY=1", 60)
    before = [m for t, m in n.snapshot() if t < ready_t]
    assert "STATUS=starting" in before
    assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for m in before)  # during the model warm-up
    ready_msg = next(m for t, m in n.snapshot() if t == ready_t and "READY=1" in m)
    processed = re.search(r"calibrating (\d+)/20", ready_msg) or re.search(r"PASS=(\d+)", ready_msg)
    assert processed is not None and int(processed.group(1)) >= 1, ready_msg
    assert "ready: the first frame went through the pipeline" in agent.log

    # WATCHDOG=1 keeps coming while frames flow; a STATUS line with fps and counts. The exact cadence
    # (every WATCHDOG_USEC/2, never a late ping) is unit-tested with an injected clock in
    # test_watchdog.py; arrival times here carry the scheduling delays of a loaded machine, so these
    # bounds only catch a real breakage: pings that stop, or a cadence off by a large factor.
    interval_s = WATCHDOG_USEC / 2e6
    wait_until(lambda: any("PASS=" in m for _, m in n.snapshot()), 60, "a STATUS line with PASS/FLAG/BLOCK")
    wait_until(lambda: len(n.times("WATCHDOG=1", since=ready_t)) >= 7, 60, "seven watchdog pings")
    status = [m for _, m in n.snapshot() if "PASS=" in m][-1]
    assert re.search(r"STATUS=fps=\d+\.\d PASS=\d+ FLAG=\d+ BLOCK=\d+", status), status
    pings = n.times("WATCHDOG=1", since=ready_t)
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    mean_gap = (pings[-1] - pings[0]) / (len(pings) - 1)
    # Not every tick (0.25 s) or faster, not a small fraction of the pings either.
    assert interval_s / 2 <= mean_gap <= 4 * interval_s, gaps
    # Still pinging after that: one more ping arrives.
    agent.wait_notify("WATCHDOG=1", 60, since=pings[-1] + 1e-6)

    # SIGTERM: STOPPING=1, exit 0 within TimeoutStopSec (30 s in the shipped unit: finish() waits
    # that long, then fails), outputs flushed.
    t_term = time.monotonic()
    assert agent.finish(signal.SIGTERM, timeout_s=30.0) == 0, agent.log
    assert n.times("STOPPING=1", since=t_term)
    status_records = read_jsonl(agent.out / "status.jsonl")
    assert (status_records[-1]["state"], status_records[-1]["reason"]) == ("offline", "stopped")
    assert read_jsonl(agent.out / "health.jsonl"), "the final health summary is written on stop"
    assert "Traceback" not in agent.log


def test_sighup_reload_valid_and_invalid(tmp_path: Path, agents: list[Agent]) -> None:
    agent = Agent(tmp_path, "abstract")
    agents.append(agent)
    n = agent.notify
    agent.wait_notify("READY=1", 60)

    # Valid change: RELOADING=1 (with MONOTONIC_USEC) then READY=1, and the new alpha applies.
    agent.write_config(alpha=0.02)
    t_hup = time.monotonic()
    agent.proc.send_signal(signal.SIGHUP)
    t_reloading = agent.wait_notify("RELOADING=1", 10, since=t_hup)
    msg = next(m for t, m in n.snapshot() if t == t_reloading and "RELOADING=1" in m)
    usec = int(_group(r"MONOTONIC_USEC=(\d+)", msg))
    assert t_hup * 1e6 - 1e5 <= usec <= t_reloading * 1e6 + 1e5
    assert agent.wait_notify("READY=1", 10, since=t_reloading) >= t_reloading
    agent.wait_log("config reloaded: applied policy.alpha_flag=0.02", 10)
    assert agent.proc.poll() is None

    # Invalid change: rejected with the reason in the log; still running, still pinging.
    log_len = len(agent.log)
    agent.config.write_text("policy:\n  alpha_flag: 7\n", encoding="utf-8")
    t_hup = time.monotonic()
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_log("reload rejected, keeping the running config", 10, after=log_len)
    assert "policy.alpha_flag: Input should be less than 1 (got 7)" in agent.log[log_len:]
    assert agent.wait_notify("READY=1", 10, since=t_hup) >= t_hup  # back out of "reloading"
    # Still pinging: wait for three pings (about 1.5 s) rather than counting them in a fixed
    # window, which a loaded machine can stretch; the deadline only bounds a failure.
    wait_until(lambda: len(n.times("WATCHDOG=1", since=t_hup + 0.5)) >= 3 or agent.proc.poll() is not None, 30,
               "three watchdog pings after the rejected reload")
    assert agent.proc.poll() is None, agent.log
    assert len(n.times("WATCHDOG=1", since=t_hup + 0.5)) >= 3
    assert agent.finish() == 0, agent.log


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("camera_id: svc\nsource:\n  fps: -1\nsorce: {}\n", "source.fps: Input should be greater than 0"),
        ("camera_id: svc\nmodel:\n  path: /nonexistent/model.onnx\n", "/nonexistent/model.onnx"),
    ],
    ids=["invalid-yaml-values", "missing-model"],
)
def test_bad_config_exits_78_without_ready(tmp_path: Path, agents: list[Agent], config: str, message: str) -> None:
    agent = Agent(tmp_path, "path")
    agents.append(agent)
    agent.config.write_text(config, encoding="utf-8")  # before the child reads it (it is still importing)
    rc = agent.proc.wait(60)
    log = agent.log
    agent.finish()
    assert rc == exitcodes.CONFIG == 78, log
    assert message in log
    assert "edge-guard: error:" in log and "Traceback" not in log
    assert not agent.notify.times("READY=1")


def test_stalled_inference_stops_watchdog_pings(tmp_path: Path, agents: list[Agent]) -> None:
    frames_before_stall = 100  # 20 calibration frames, then 80 guarded ones (~3 s at 30 fps)
    agent = Agent(tmp_path, "path", stall_after_frames=frames_before_stall)
    agents.append(agent)
    n = agent.notify
    ready_t = agent.wait_notify("READY=1", 60)
    agent.wait_log("EG-TEST inference hangs now", 60)
    hang_at = agent.log.index("EG-TEST inference hangs now")
    stall_t = float(_group(r"EG-TEST inference hangs now mono=([0-9.]+)", agent.log))
    stall_wall = float(_group(r"EG-TEST inference hangs now mono=[0-9.]+ wall=([0-9.]+)", agent.log))
    # The rule needs STALL_AFTER_S: wait for its verdict on *this* hang (a slow calibration fit on a
    # loaded machine may have tripped it once already). The reason is worker_stuck even when the
    # supervisor's tick falls in the few ms between the last processed frame and the worker taking
    # the hanging one ("no frame done for T" is then reached first, but the worker has been busy for
    # most of that time: agent/watchdog.py).
    agent.wait_log("watchdog: not pinging systemd: ", 60, after=hang_at)
    verdict_at = agent.log.index("watchdog: not pinging systemd: ", hang_at)
    assert agent.log[verdict_at:].startswith("watchdog: not pinging systemd: worker_stuck "), agent.log[hang_at:]
    # From the verdict on, the agent sends no ping: wait for a silent stretch of quiet_s after the
    # last ping that arrived (a ping sent just before the verdict may still be on its way; a ping
    # that keeps coming restarts the stretch, and the deadline then fails the test).
    quiet_s = 3.0

    def quiet() -> bool:
        return time.monotonic() - max(n.times("WATCHDOG=1"), default=stall_t) >= quiet_s

    silent = True
    try:
        wait_until(lambda: quiet() or agent.proc.poll() is not None, 60, f"{quiet_s} s without a watchdog ping")
    except AssertionError:
        silent = False
    end_t = time.monotonic()
    pings_before = [t for t in n.times("WATCHDOG=1", since=ready_t) if t <= stall_t]
    pings_after = [t for t in n.times("WATCHDOG=1") if t > stall_t]
    alive_while_stalled = agent.proc.poll() is None
    log_while_stalled = agent.log
    status_stalled = False
    with contextlib.suppress(AssertionError):
        wait_until(lambda: ("degraded", "pipeline stalled") in [
            (s["state"], s["reason"]) for s in read_jsonl(agent.out / "status.jsonl") if s["ts"] >= stall_wall
        ], 30, "the stalled status record")
        status_stalled = True
    status_records = read_jsonl(agent.out / "status.jsonl")

    # SIGTERM while stuck: the drain gives up after stall_after_s, the process still exits (within
    # the shipped TimeoutStopSec=30: finish() waits that long, then fails).
    t_term = time.monotonic()
    rc = agent.finish(signal.SIGTERM, timeout_s=30.0)
    t_exit = time.monotonic()

    events = agent.timeline()
    events += [
        (end_t - agent.t0, f"[test] end of observation, {end_t - stall_t:.1f} s after the hang"),
        (t_term - agent.t0, "[test] SIGTERM sent"),
        (t_exit - agent.t0, f"[test] agent exited with status {rc}"),
    ]
    report = "watchdog timeline (WatchdogSec=1 s, stall_after_s=1 s; t = seconds since the agent started)\n"
    report += "\n".join(f"{t:7.3f}s  {m}" for t, m in sorted(events))
    (tmp_path / "watchdog-timeline.txt").write_text(report + "\n", encoding="utf-8")
    print("\n" + report)

    assert len(pings_before) >= 2, report  # pings flowed before the hang
    assert alive_while_stalled, report  # the agent does not exit by itself; the watchdog is the remedy
    # Pings stopped and stayed stopped: systemd would restart the service WatchdogSec after the last one.
    assert silent, report
    assert "watchdog: pinging again" not in log_while_stalled[verdict_at:], report
    # Nominally the last ping comes within stall_after_s (+ a tick) of the hang; the margin is only
    # for a loaded machine's scheduling delays. Pings going on well past it mean the rule is not applied.
    assert all(t - stall_t <= STALL_AFTER_S + 5.0 for t in pings_after), report
    assert status_stalled, status_records
    assert rc == 0, report
