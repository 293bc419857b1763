"""sd_notify without libsystemd: one datagram per message to ``$NOTIFY_SOCKET``.

systemd passes the socket's address in ``NOTIFY_SOCKET`` when the unit has ``Type=notify``: a
filesystem path, or an abstract-namespace name written with a leading ``@`` (the ``@`` stands for
the NUL byte). A message is newline-separated ``KEY=VALUE`` assignments. Outside systemd the
variable is unset and every call is a no-op, so the agent runs the same in a terminal.

Watchdog: ``WATCHDOG_USEC`` is the timeout systemd enforces (``WatchdogSec=``); ``WATCHDOG_PID``,
when set, names the process it is meant for (a child that inherited the environment must not
ping). sd_watchdog_enabled(3) recommends pinging at half the timeout: `watchdog_interval_s`.

Sending never raises into the pipeline: a failed send is logged once, counted in `Notifier.errors`
and the agent carries on (a lost READY/ping is systemd's business to time out, not a crash).

Example (the datagram is what systemd receives)::

    n = Notifier.from_env()
    n.status("warming up model")      # STATUS=warming up model
    n.extend_timeout(120)             # EXTEND_TIMEOUT_USEC=120000000
    n.ready("25.0 fps")               # READY=1\\nSTATUS=25.0 fps
    n.watchdog()                      # WATCHDOG=1
    n.reloading()                     # RELOADING=1\\nMONOTONIC_USEC=<CLOCK_MONOTONIC in us>
    n.stopping()                      # STOPPING=1
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping

__all__ = [
    "Notifier",
    "monotonic_usec",
    "watchdog_interval_s",
    "watchdog_timeout_s",
]

logger = logging.getLogger(__name__)

#: Longest wait for room in the notify socket's queue before a message counts as failed.
SEND_TIMEOUT_S = 1.0
#: STATUS= texts longer than this are cut (systemd shows one line in `systemctl status`).
MAX_STATUS_CHARS = 512


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd expects in ``MONOTONIC_USEC=``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_timeout_s(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The watchdog timeout systemd enforces for this process, in seconds, or None if none.

    None when ``WATCHDOG_USEC`` is unset, not a positive integer, or when ``WATCHDOG_PID`` is set
    to another process (the same rule as sd_watchdog_enabled(3)).
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        logger.warning("ignoring WATCHDOG_USEC=%r: expected a positive integer of microseconds", raw)
        return None
    if usec <= 0:
        return None
    want_pid = env.get("WATCHDOG_PID")
    if want_pid:
        me = os.getpid() if pid is None else pid
        try:
            if int(want_pid) != me:
                return None
        except ValueError:
            logger.warning("ignoring the watchdog: WATCHDOG_PID=%r is not a process id", want_pid)
            return None
    return usec / 1e6


def watchdog_interval_s(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """How often to send ``WATCHDOG=1``: half of `watchdog_timeout_s`, or None without a watchdog."""
    timeout = watchdog_timeout_s(env, pid)
    return None if timeout is None else timeout / 2.0


def _socket_address(raw: str) -> str | bytes | None:
    """``NOTIFY_SOCKET`` value -> an AF_UNIX address, or None if unusable."""
    if raw.startswith("@"):
        # Abstract namespace: the name starts with a NUL byte and is not NUL-terminated.
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    # systemd >= 254 may also pass "vsock:CID:PORT" (VMs); the agent runs on the host.
    return None


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; a no-op when there is none.

    Thread-safe: the supervisor loop pings while a start-up helper extends the timeout.
    """

    def __init__(self, notify_socket: str | None) -> None:
        self._raw = notify_socket or None
        self._address = _socket_address(notify_socket) if notify_socket else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._error_logged = False
        self.sent = 0
        self.errors = 0
        if notify_socket and self._address is None:
            logger.warning(
                "NOTIFY_SOCKET=%r is not supported (expected an absolute path or '@abstract-name'); "
                "systemd notifications are off",
                notify_socket,
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for ``NOTIFY_SOCKET`` from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        """True when messages are actually sent somewhere."""
        return self._address is not None

    @property
    def address(self) -> str | None:
        """The ``NOTIFY_SOCKET`` value this notifier sends to (None: disabled)."""
        return self._raw if self.enabled else None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments as one datagram; True if sent, False if off or failed."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8", errors="replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    # A full receive queue (net.unix.max_dgram_qlen, 10 on some hosts) blocks
                    # sendto; bound the wait so a busy systemd never stalls the supervisor.
                    self._sock.settimeout(SEND_TIMEOUT_S)
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                self.errors += 1
                if not self._error_logged:
                    self._error_logged = True
                    logger.warning(
                        "sd_notify to %s failed (%s); further failures are only counted", self._raw, exc
                    )
                return False
            self.sent += 1
            return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up finished (model warm, first frame through the pipeline)."""
        return self.notify("READY=1", *self._status_field(status))

    def status(self, text: str) -> bool:
        """``STATUS=text``, the one line `systemctl status` shows (newlines become spaces)."""
        return self.notify(*self._status_field(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the pipeline made progress (see agent.watchdog for when)."""
        return self.notify("WATCHDOG=1")

    def watchdog_trigger(self) -> bool:
        """``WATCHDOG=trigger``: ask systemd to act as if the watchdog timed out now."""
        return self.notify("WATCHDOG=trigger")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown began (draining queues, flushing the spool)."""
        return self.notify("STOPPING=1", *self._status_field(status))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=`` (systemd >= 253 wants both); end with `ready`."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", *self._status_field(status))

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: grant ``seconds`` more from now for start-up/stop (systemd >= 236)."""
        usec = max(1, round(seconds * 1e6))
        return self.notify(f"EXTEND_TIMEOUT_USEC={usec}")

    @contextlib.contextmanager
    def extending(
        self, seconds: float = 90.0, *, every_s: float | None = None, max_total_s: float = 3600.0
    ) -> Iterator[None]:
        """Keep extending the start/stop timeout while a long step runs (engine build, warm-up).

        A helper thread sends ``EXTEND_TIMEOUT_USEC`` for ``seconds`` every ``every_s`` (default a
        third of ``seconds``) until the block ends or ``max_total_s`` passed, so a step that truly
        hangs still hits systemd's timeout eventually.
        """
        if seconds <= 0 or max_total_s <= 0:
            raise ValueError(f"seconds and max_total_s must be > 0, but got {seconds} and {max_total_s}")
        if not self.enabled:
            yield
            return
        period = every_s if every_s is not None else seconds / 3.0
        if not 0 < period < seconds:
            raise ValueError(f"every_s must be in (0, seconds={seconds}), but got {period}")
        done = threading.Event()
        deadline = time.monotonic() + max_total_s

        def _run() -> None:
            while not done.is_set() and time.monotonic() < deadline:
                self.extend_timeout(seconds)
                done.wait(period)
            if not done.is_set():
                logger.warning("stopped extending the systemd timeout after %.0f s; step still running", max_total_s)

        thread = threading.Thread(target=_run, name="sd-extend-timeout", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=5.0)

    def close(self) -> None:
        """Close the socket (later calls reopen it)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _status_field(text: str | None) -> tuple[str, ...]:
        if text is None:
            return ()
        flat = " ".join(text.splitlines()).strip()
        return (f"STATUS={flat[:MAX_STATUS_CHARS]}",)

    def __repr__(self) -> str:
        return f"Notifier({self._raw!r}, sent={self.sent}, errors={self.errors})"
