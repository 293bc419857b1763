"""What the supervisor reports: camera status changes, health summaries, the status line.

`Reporter` turns the pipeline's counters into the three outputs operators see: a camera status
(online / degraded / offline with a reason) published to every sink on each change, one
`HealthSummary` per interval (with the source's own counters and every sink's backlog folded
in), and the one-line ``STATUS=`` text for systemd.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from agent.gpu.nvml import gpu_health
from agent.health import HealthSummary
from agent.healthagg import HealthAggregator
from agent.scoring.drift import DriftSnapshot
from agent.sinks.base import CameraState, Sink
from agent.sources.base import Source

__all__ = ["ROUTINE_REASONS", "DriftProvider", "Reporter"]

logger = logging.getLogger(__name__)

#: Offline reasons that are the normal end of a run (logged at INFO, not WARNING).
ROUTINE_REASONS: frozenset[str] = frozenset({"stopped", "source ended"})


#: Returns the guard's current drift scores and alarms (None while calibrating): ``Scorer.drift_snapshot``.
DriftProvider = Callable[[], DriftSnapshot | None]


class Reporter:
    """Publishes camera status and health for one camera (called from the supervisor only).

    ``drift``, when given, is asked for the drift scores and alarms of each health summary (the
    scorer is built after the reporter and owned by the daemon, so it is reached through a callable).
    """

    def __init__(
        self, camera_id: str, agg: HealthAggregator, sinks: Sequence[Sink], drift: DriftProvider | None = None
    ) -> None:
        self.camera_id = camera_id
        self.agg = agg
        self.sinks = sinks
        self.drift = drift
        self.camera_state: tuple[CameraState, str] | None = None
        self._start_mono = time.monotonic()
        self._seen: dict[str, int] = {}  # source counters (totals since start) at the last summary

    def _since_last(self, counter: str, total: int) -> int:
        """How much a source counter (``total`` since start) grew since the last summary."""
        grown = total - self._seen.get(counter, 0)
        self._seen[counter] = total
        return grown

    def restart_clock(self) -> None:
        """Uptime and fps count from now (when the workers start)."""
        self._start_mono = time.monotonic()

    def set_camera_state(self, state: CameraState, reason: str) -> None:
        """Publish ``state`` with ``reason`` to every sink if it differs from the last one."""
        if self.camera_state == (state, reason):
            return
        self.camera_state = (state, reason)
        routine = state == "online" or reason in ROUTINE_REASONS
        (logger.info if routine else logger.warning)("camera %s: %s (%s)", self.camera_id, state, reason)
        for sink in self.sinks:
            sink.publish_camera_status(self.camera_id, state, reason)

    def publish_health(
        self,
        source: Source | None,
        backend: Mapping[str, str],
        ids: Callable[[], Mapping[str, str | None]],
        phase: str,
    ) -> HealthSummary:
        """Close the health window and publish its summary to every sink."""
        reconnects = 0
        source_state = "unknown"
        if source is not None:
            source_state = str(source.state)
            # frames the source itself could not decode, slots its timestamps skipped, and its
            # reconnects, since the last summary
            if (corrupt := self._since_last("corrupt", source.corrupt_frames)) > 0:
                self.agg.corrupt(corrupt)
            if (skipped := self._since_last("skipped", source.skipped_slots)) > 0:
                self.agg.skipped(skipped)
            reconnects = self._since_last("reconnects", source.reconnects)
        publisher: dict[str, float] = {}
        for sink in self.sinks:
            publisher.update(sink.stats())
        now_ids = ids()
        snap = self.drift() if self.drift is not None else None
        summary = self.agg.summarize(
            source_state=source_state, source_reconnects=reconnects, backend=backend,
            model_sha256=now_ids.get("model_sha256"), profile_id=now_ids.get("profile_id"),
            config_hash=now_ids.get("config_hash"), publisher=publisher, phase=phase,
            uptime_s=time.monotonic() - self._start_mono, gpu=gpu_health(),
            drift=snap.scores if snap is not None else None, drift_alarms=snap.alarms if snap is not None else (),
        )
        decisions = " ".join(f"{k}={v}" for k, v in sorted(summary.decisions.items())) or summary.phase
        logger.info("health #%d: fps=%.1f in=%d processed=%d dropped=%d %s", summary.seq, summary.fps,
                    summary.frames_in, summary.frames_processed, summary.frames_dropped, decisions)
        for sink in self.sinks:
            sink.publish_health(summary)
        return summary

    def status_line(self, phase: str, calibrated: int = 0, calibration_target: int = 0) -> str:
        """``fps=25.0 PASS=.. FLAG=.. BLOCK=.. dropped=..`` (or the calibration progress)."""
        t = self.agg.totals()
        fps = t.frames_processed / max(time.monotonic() - self._start_mono, 1e-9)
        if phase == "calibrating":
            return f"calibrating {calibrated}/{calibration_target} fps={fps:.1f}"
        counts = " ".join(f"{d}={t.decisions.get(d, 0)}" for d in ("PASS", "FLAG", "BLOCK"))
        return f"fps={fps:.1f} {counts} dropped={t.frames_dropped}"
