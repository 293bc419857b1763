"""A real ``edge-guard run`` subprocess: SIGTERM stops cleanly, SIGHUP reloads or rejects."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import read_jsonl, wait_until

from agent import REPO_ROOT
from agent.health import HealthSummary

pytestmark = pytest.mark.integration

CONFIG = """\
camera_id: sig
node: test
source:
  uri: "synthetic://clean?size=96x64&fps=30"
  realtime: true
calibration:
  frames: 40
policy:
  alpha_flag: {alpha}
health:
  interval_s: {interval}
file_sink:
  dir: {out}
"""


class Agent:
    """``edge-guard run`` in a subprocess with its stderr in a file."""

    def __init__(self, tmp_path: Path, alpha: float = 0.01, interval: float = 60.0) -> None:
        self.out = tmp_path / "out"
        self.config = tmp_path / "cam.yaml"
        self.write_config(alpha, interval)
        self.log_path = tmp_path / "stderr.log"
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in stop())
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_GUARD_") and k != "NOTIFY_SOCKET"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=self._log, env={**env, "ORT_DISABLE_TELEMETRY": "1"},
        )

    def write_config(self, alpha: float, interval: float) -> None:
        self.config.write_text(CONFIG.format(alpha=alpha, interval=interval, out=self.out), encoding="utf-8")

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def wait_guarding(self) -> None:
        status = self.out / "status.jsonl"
        wait_until(lambda: ("online", "guarding") in [(s["state"], s["reason"]) for s in read_jsonl(status)],
                   60, "the agent to guard")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = Agent(tmp_path)
    yield a
    if a.proc.poll() is None:
        a.stop(signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_exits_zero_with_outputs_flushed(agent: Agent, sig: int) -> None:
    agent.wait_guarding()
    t0 = time.monotonic()
    assert agent.stop(sig) == 0, agent.log
    assert time.monotonic() - t0 < 10
    status = read_jsonl(agent.out / "status.jsonl")
    assert (status[-1]["state"], status[-1]["reason"]) == ("offline", "stopped")
    health = [HealthSummary.model_validate(h) for h in read_jsonl(agent.out / "health.jsonl")]
    assert health, "the final health summary is written on stop"
    assert sum(h.frames_in for h in health) == sum(h.frames_processed + h.frames_dropped for h in health)
    assert f"{signal.Signals(sig).name} received: stopping" in agent.log
    assert "Traceback" not in agent.log


def test_sighup_applies_live_fields_and_rejects_invalid_config(agent: Agent) -> None:
    agent.wait_guarding()
    # valid: alpha and health interval apply live; a source change needs a restart
    text = agent.config.read_text().replace("clean?size=96x64", "clean?size=128x64")
    agent.config.write_text(text.replace("alpha_flag: 0.01", "alpha_flag: 0.02").replace("interval_s: 60.0",
                                                                                           "interval_s: 1.0"))
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "config reloaded" in agent.log, 10, "the reload")
    assert "policy.alpha_flag=0.02" in agent.log and "applied health.interval_s=1.0" in agent.log
    assert "restart needed to apply source.uri" in agent.log
    wait_until(lambda: len(read_jsonl(agent.out / "health.jsonl")) >= 2, 10, "health every second")

    # invalid: logged with the reason, the old config keeps running
    agent.config.write_text("policy:\n  alpha_flag: 7\n")
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload rejected" in agent.log, 10, "the rejection")
    assert "policy.alpha_flag: Input should be less than 1 (got 7)" in agent.log
    seen = len(read_jsonl(agent.out / "health.jsonl"))
    wait_until(lambda: len(read_jsonl(agent.out / "health.jsonl")) > seen, 10, "the agent to keep running")
    assert agent.proc.poll() is None
    # ... and the fleet sees it too: the next health summaries count the rejection
    wait_until(lambda: any(h["errors"].get("reload_rejected") == 1 for h in read_jsonl(agent.out / "health.jsonl")),
               10, "reload_rejected in a health summary")
    assert agent.stop() == 0


#: Agents aborted at most before the stack dump must have come through whole (see the test).
ABORT_TRIES = 3


def test_watchdog_abort_dumps_every_thread_stack(agent: Agent, tmp_path: Path) -> None:
    """systemd's watchdog kills a wedged agent with SIGABRT: faulthandler puts the stacks in the journal.

    faulthandler reads the other threads' frames while they run, which CPython documents as
    unsafe: this agent is busy (30 fps), not wedged, and 6 of 120 aborts here ended in a SIGSEGV
    partway through the dump, after its header. Such a run is retried with a fresh agent."""
    for attempt in range(ABORT_TRIES):
        if attempt:
            (tmp_path / f"retry{attempt}").mkdir()
            agent = Agent(tmp_path / f"retry{attempt}")
        try:
            agent.wait_guarding()
            resource.prlimit(agent.proc.pid, resource.RLIMIT_CORE, (0, 0))  # no core file in the repository
            code = agent.stop(signal.SIGABRT)
        finally:
            if agent.proc.poll() is None:
                agent.stop(signal.SIGKILL)
        assert "Fatal Python error: Aborted" in agent.log  # the handler ran, whatever came after
        if code == -signal.SIGABRT:
            break
        assert code == -signal.SIGSEGV, code  # the unsafe read, and nothing else
    assert code == -signal.SIGABRT, f"{ABORT_TRIES} aborts in a row crashed while dumping"
    log = agent.log
    assert log.count("(most recent call first)") >= 3  # main (supervisor), reader and worker threads
    assert "agent/workers.py" in log and "agent/daemon.py" in log
