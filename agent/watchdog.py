"""The progress rule: when the agent may tell systemd ``WATCHDOG=1``.

A watchdog ping says "restarting me would not help". The rule, checked in this order, with
``T = stall_after_s`` (config ``pipeline.stall_after_s``):

1. **Worker stuck** — the worker has been busy with one frame for longer than T (an inference or
   a stats kernel hangs): no ping, whatever else holds. A restart is the fix.
2. **Progress** — a frame was processed within the last T seconds: ping. (No frame for longer
   than T while the worker has been busy for at least half of that time: worker stuck too.)
3. **Camera down and being retried** — the source reports ``down``/``connecting``/
   ``reconnecting``: ping. The camera is degraded, not the agent wedged; a restart would only
   reopen the same dead camera, and the agent reports the outage itself (camera status
   ``degraded``) while it keeps retrying with back-off.
4. **Otherwise** — the source claims ``up`` (or anything else) but no frame was processed for T
   (a reader blocked in a driver call, a dead queue): no ping.

systemd restarts the service ``WatchdogSec`` after the last ping, so a wedge is acted on between
``T`` and ``T + WatchdogSec`` after the last processed frame.

Example::

    >>> wd = ProgressWatchdog(stall_after_s=10.0)
    >>> wd.should_ping(100.0, 95.0, "up", None)          # frame 5 s ago
    True
    >>> wd.should_ping(100.0, 80.0, "up", None)          # "up" but silent for 20 s
    False
    >>> wd.should_ping(100.0, 80.0, "reconnecting", None)  # camera down, being retried
    True
    >>> wd.should_ping(100.0, 99.0, "up", 85.0)          # stuck on one frame for 15 s
    False
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from agent.sdnotify import Notifier

__all__ = [
    "RETRYING_STATES",
    "ProgressWatchdog",
    "WatchdogDecision",
    "WatchdogPinger",
]

logger = logging.getLogger(__name__)

#: Source states that mean "camera down, being retried": degraded, still pinged.
RETRYING_STATES: frozenset[str] = frozenset({"down", "connecting", "reconnecting", "backoff"})


@dataclass(frozen=True, slots=True)
class WatchdogDecision:
    """Whether to ping, and why (``reason`` is one of the codes below, ``detail`` for logs).

    Codes: ``progress``, ``source_retrying`` (ping); ``worker_stuck``, ``no_progress`` (no ping).
    """

    ping: bool
    reason: str
    detail: str


def _state_name(source_state: object) -> str:
    # Accept a plain string or an Enum (str-valued or not) from the source stage.
    if isinstance(source_state, enum.Enum):
        source_state = source_state.value if isinstance(source_state.value, str) else source_state.name
    return str(source_state).strip().lower()


class ProgressWatchdog:
    """Pure decision function of the progress rule (module docstring). No clock, no I/O."""

    def __init__(self, stall_after_s: float) -> None:
        if not stall_after_s > 0:
            raise ValueError(f"stall_after_s must be > 0 seconds, but got {stall_after_s!r}")
        self.stall_after_s = float(stall_after_s)

    def evaluate(
        self,
        now_mono: float,
        last_frame_processed_mono: float | None,
        source_state: object,
        worker_busy_since_mono: float | None,
    ) -> WatchdogDecision:
        """Apply the rule. Times are ``time.monotonic()`` seconds; None = never / not busy."""
        limit = self.stall_after_s
        busy = None if worker_busy_since_mono is None else now_mono - worker_busy_since_mono
        if busy is not None and busy > limit:
            return WatchdogDecision(
                False, "worker_stuck", f"worker busy with one frame for {busy:.1f} s (limit {limit:g} s)"
            )
        if last_frame_processed_mono is not None:
            idle = now_mono - last_frame_processed_mono
            if idle <= limit:
                return WatchdogDecision(True, "progress", f"last frame processed {idle:.1f} s ago")
            if busy is not None and busy >= idle / 2:
                # The worker picks the next frame a few ms after finishing one, so a hang shows
                # here (idle > T) just before its busy time passes T: busy for most of the
                # silence means the silence is the worker's, not the source's.
                detail = f"worker busy with one frame for {busy:.1f} s, no frame done for {idle:.1f} s"
                return WatchdogDecision(False, "worker_stuck", detail)
        state = _state_name(source_state)
        if state in RETRYING_STATES:
            return WatchdogDecision(True, "source_retrying", f"camera {state}, being retried (degraded)")
        since = "ever" if last_frame_processed_mono is None else f"for {now_mono - last_frame_processed_mono:.1f} s"
        return WatchdogDecision(
            False, "no_progress", f"source {state!r} but no frame processed {since} (limit {limit:g} s)"
        )

    def should_ping(
        self,
        now_mono: float,
        last_frame_processed_mono: float | None,
        source_state: object,
        worker_busy_since_mono: float | None,
    ) -> bool:
        """True when ``WATCHDOG=1`` may be sent now (see `evaluate` for the reason)."""
        return self.evaluate(now_mono, last_frame_processed_mono, source_state, worker_busy_since_mono).ping


class WatchdogPinger:
    """Glue for the supervisor loop: call `tick` often (e.g. every 0.5 s); it pings when due.

    Sends ``WATCHDOG=1`` at most every ``interval_s`` (`agent.sdnotify.watchdog_interval_s`, half
    of ``WatchdogSec``) and only while the rule allows it; logs once when pings stop (with the
    reason) and once when they resume. ``interval_s=None`` (no systemd watchdog) still evaluates
    the rule, so `last` can drive the camera status, but sends nothing.
    """

    def __init__(self, notifier: Notifier, rule: ProgressWatchdog, interval_s: float | None) -> None:
        if interval_s is not None and not interval_s > 0:
            raise ValueError(f"interval_s must be > 0 or None, but got {interval_s!r}")
        self.notifier = notifier
        self.rule = rule
        self.interval_s = interval_s
        self.last: WatchdogDecision | None = None
        self.pings = 0
        self._last_ping_mono: float | None = None

    def tick(
        self,
        now_mono: float,
        last_frame_processed_mono: float | None,
        source_state: object,
        worker_busy_since_mono: float | None,
    ) -> WatchdogDecision:
        """Evaluate the rule and ping if allowed and due; returns the decision."""
        decision = self.rule.evaluate(now_mono, last_frame_processed_mono, source_state, worker_busy_since_mono)
        previous = self.last
        self.last = decision
        if not decision.ping:
            if previous is None or previous.ping:
                logger.error("watchdog: not pinging systemd: %s (%s)", decision.reason, decision.detail)
            return decision
        if previous is not None and not previous.ping:
            logger.warning("watchdog: pinging again: %s (%s)", decision.reason, decision.detail)
        due = self._last_ping_mono is None or now_mono - self._last_ping_mono >= (self.interval_s or 0.0)
        if self.interval_s is not None and due and self.notifier.watchdog():
            self._last_ping_mono = now_mono
            self.pings += 1
        return decision
