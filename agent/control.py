"""The daemon's progress snapshot, used by the watchdog rule, the status line, the demo and tests.

The daemon also implements the MQTT command target (``agent.sinks.mqtt.commands.CommandTarget``:
snapshot, set_alphas, reload_profile, ping); see `agent.daemon.Daemon`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Progress"]


@dataclass(frozen=True, slots=True)
class Progress:
    """A consistent snapshot of the pipeline's progress (all times are ``time.monotonic()``)."""

    frames_in: int
    frames_processed: int
    frames_dropped: int
    frames_corrupt: int
    frames_calibrated: int
    last_progress_mono: float | None
    worker_busy_since_mono: float | None
    source_state: str
    phase: str
    decisions: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    queue_len: int = 0
    ready: bool = False
    finished: bool = False
