"""agent.sdnotify against real AF_UNIX datagram sockets (path and abstract namespace)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until

from agent import sdnotify
from agent.sdnotify import Notifier, monotonic_usec, watchdog_interval_s, watchdog_timeout_s


class Listener:
    """A bound datagram socket playing systemd's side of NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # the NOTIFY_SOCKET value

    def recv(self, timeout: float = 2.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(65536).decode()

    def recv_all(self, quiet_s: float = 0.2) -> list[str]:
        msgs: list[str] = []
        with contextlib.suppress(TimeoutError):
            while True:
                msgs.append(self.recv(quiet_s))
        return msgs


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        sock.bind(path)
        address = path
    else:
        name = f"edge-guard-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        address = "@" + name
    try:
        yield Listener(sock, address)
    finally:
        sock.close()


@pytest.fixture
def notifiers() -> Iterator[list[Notifier]]:
    """Notifiers a test opened; closed at the end (an open socket is a ResourceWarning = error)."""
    made: list[Notifier] = []
    yield made
    for n in made:
        n.close()


def opened(made: list[Notifier], address: str | None) -> Notifier:
    n = Notifier(address)
    made.append(n)
    return n


def test_messages_arrive_as_systemd_expects(notifiers: list[Notifier], listener: Listener) -> None:
    n = opened(notifiers, listener.address)
    assert n.enabled and n.address == listener.address
    assert n.status("warming up")
    assert listener.recv() == "STATUS=warming up"
    assert n.ready("fps=25.0 PASS=1 FLAG=0 BLOCK=0")
    assert listener.recv() == "READY=1\nSTATUS=fps=25.0 PASS=1 FLAG=0 BLOCK=0"
    assert n.watchdog()
    assert listener.recv() == "WATCHDOG=1"
    assert n.extend_timeout(90)
    assert listener.recv() == "EXTEND_TIMEOUT_USEC=90000000"
    before = monotonic_usec()
    assert n.reloading()
    after = monotonic_usec()
    fields = listener.recv().split("\n")
    assert fields[0] == "RELOADING=1"
    key, _, value = fields[1].partition("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after
    assert n.stopping("draining")
    assert listener.recv() == "STOPPING=1\nSTATUS=draining"
    assert n.watchdog_trigger()
    assert listener.recv() == "WATCHDOG=trigger"
    assert (n.sent, n.errors) == (7, 0)


def test_monotonic_usec_is_clock_monotonic() -> None:
    # systemd compares MONOTONIC_USEC with its own CLOCK_MONOTONIC reading: bracket ours between two
    # readings of that clock (Python's monotonic clock is CLOCK_MONOTONIC on Linux), whatever runs between.
    before = time.monotonic_ns() // 1000
    ours = monotonic_usec()
    after = time.monotonic_ns() // 1000
    assert before <= ours <= after


def test_status_cannot_inject_fields(notifiers: list[Notifier], listener: Listener) -> None:
    # A newline in a status text would otherwise become a second assignment (e.g. READY=1).
    n = opened(notifiers, listener.address)
    n.status("camera down\nREADY=1\n")
    assert listener.recv() == "STATUS=camera down READY=1"


def test_disabled_outside_systemd_is_a_silent_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled and n.address is None
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False
    assert (n.sent, n.errors) == (0, 0)
    with n.extending(10):  # no thread, no error
        pass


def test_unsupported_address_is_disabled_with_a_warning(
    notifiers: list[Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.sdnotify"):
        n = opened(notifiers, "vsock:2:1234")
    assert not n.enabled
    assert "not supported" in caplog.text


def test_send_errors_are_counted_and_logged_once(
    notifiers: list[Notifier], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = opened(notifiers, str(tmp_path / "nobody-listens.sock"))
    with caplog.at_level(logging.WARNING, logger="agent.sdnotify"):
        results = [n.watchdog() for _ in range(5)]
    assert results == [False] * 5
    assert (n.sent, n.errors) == (0, 5)
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1


def test_from_env_reads_notify_socket(listener: Listener) -> None:
    with Notifier.from_env({"NOTIFY_SOCKET": listener.address}) as n:
        n.ready()
    assert listener.recv() == "READY=1"


def test_extending_sends_until_the_block_ends(notifiers: list[Notifier], listener: Listener) -> None:
    n = opened(notifiers, listener.address)
    t0 = time.monotonic()
    with n.extending(1.0, every_s=0.1):
        # Repeats while the block runs: wait for three datagrams rather than counting them in a
        # fixed window (a loaded machine delays the helper thread; the deadline only bounds a failure).
        in_block = [listener.recv(10.0) for _ in range(3)]
    elapsed = time.monotonic() - t0
    sent = in_block + listener.recv_all()
    # One at once, then at most one per every_s: a hot loop would send far more.
    assert 3 <= len(sent) <= elapsed / 0.1 + 2, (sent, elapsed)
    assert set(sent) == {"EXTEND_TIMEOUT_USEC=1000000"}
    time.sleep(0.3)
    assert listener.recv_all(0.1) == []  # the helper thread stopped
    assert not any(t.name == "sd-extend-timeout" for t in threading.enumerate())


def test_extending_gives_up_after_max_total(
    notifiers: list[Notifier], listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    n = opened(notifiers, listener.address)
    with caplog.at_level(logging.WARNING, logger="agent.sdnotify"), n.extending(1.0, every_s=0.05, max_total_s=0.12):
        # The step is still running: wait for the helper to give up (not a fixed sleep; a loaded
        # machine delays it), then check that nothing more is sent while the block goes on.
        wait_until(lambda: "stopped extending the systemd timeout" in caplog.text, 10, "the helper to give up")
        sent = listener.recv_all()
        assert listener.recv_all(0.3) == []
    # At most one per every_s within max_total_s (0, 0.05, 0.10), at least the first one.
    assert 1 <= len(sent) <= 4, sent
    assert set(sent) == {"EXTEND_TIMEOUT_USEC=1000000"}


@pytest.mark.parametrize(
    ("seconds", "every_s", "max_total_s"),
    [
        (0.0, None, 10.0),  # nothing to extend by
        (10.0, 10.0, 10.0),  # period must be shorter than the extension
        (10.0, None, 0.0),  # no total budget
    ],
)
def test_extending_rejects_bad_arguments(
    notifiers: list[Notifier],    listener: Listener, seconds: float, every_s: float | None, max_total_s: float
) -> None:
    n = opened(notifiers, listener.address)
    with pytest.raises(ValueError, match="must be"), n.extending(seconds, every_s=every_s, max_total_s=max_total_s):
        pass


def test_threads_share_one_notifier(notifiers: list[Notifier], listener: Listener) -> None:
    n = opened(notifiers, listener.address)
    got: list[str] = []
    # Receive while sending: the kernel queues only net.unix.max_dgram_qlen datagrams (often 10).
    reader = threading.Thread(target=lambda: got.extend(listener.recv_all(1.0)))
    reader.start()
    senders = [threading.Thread(target=lambda: [n.watchdog() for _ in range(50)]) for _ in range(4)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    reader.join()
    assert (n.sent, n.errors) == (200, 0)
    assert got == ["WATCHDOG=1"] * 200


def test_full_queue_does_not_block_the_sender(
    notifiers: list[Notifier], listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nobody reads: after the queue fills, each send waits at most SEND_TIMEOUT_S and is counted.
    monkeypatch.setattr(sdnotify, "SEND_TIMEOUT_S", 0.2)
    n = opened(notifiers, listener.address)
    qlen = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    if qlen > 200:
        pytest.skip(f"net.unix.max_dgram_qlen={qlen}: filling it takes too long for a unit test")
    results: list[bool] = []
    # In a thread, so that a sender that blocks for good fails the test instead of hanging it. The
    # deadline only catches that: it is not a speed check (each timed-out send waits about 0.2 s).
    sender = threading.Thread(target=lambda: results.extend(n.watchdog() for _ in range(qlen + 3)), daemon=True)
    sender.start()
    sender.join(60)
    assert not sender.is_alive(), "the sender blocked on the full queue"
    # The kernel admits qlen (+1) datagrams; the rest time out and are counted.
    assert len(results) == qlen + 3
    assert results.count(True) == n.sent and qlen <= n.sent <= qlen + 1
    assert n.errors == qlen + 3 - n.sent


@pytest.mark.parametrize(
    ("env", "pid", "timeout_s"),
    [
        ({}, 10, None),  # no watchdog configured
        ({"WATCHDOG_USEC": "30000000"}, 10, 30.0),  # no WATCHDOG_PID: meant for us
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "10"}, 10, 30.0),  # our pid
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "11"}, 10, None),  # another process's watchdog
        ({"WATCHDOG_USEC": "0"}, 10, None),  # disabled
        ({"WATCHDOG_USEC": "soon"}, 10, None),  # garbage
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "x"}, 10, None),  # garbage pid
    ],
)
def test_watchdog_timeout_follows_sd_watchdog_enabled(env: dict[str, str], pid: int, timeout_s: float | None) -> None:
    assert watchdog_timeout_s(env, pid) == timeout_s
    assert watchdog_interval_s(env, pid) == (None if timeout_s is None else timeout_s / 2)


def test_watchdog_pid_defaults_to_this_process() -> None:
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval_s(env) == 1.0
