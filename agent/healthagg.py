"""Aggregates per-frame measurements into one `HealthSummary` per interval.

The reader thread counts frames in and drops, the worker records each processed frame, and the
supervisor calls `HealthAggregator.summarize` once per ``health.interval_s``, which closes the
window and starts the next one. Quantiles come from fixed-size reservoirs (Algorithm R, seeded),
so a day-long interval at 60 fps costs the same memory as a one-minute one.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from agent.health import HealthSummary, LatencySummary, Quantiles
from agent.model.types import ModelOutput
from agent.stats.types import SCALAR_FIELDS, FrameStats

__all__ = ["LATENCY_STAGES", "HealthAggregator", "Reservoir", "Totals"]

#: Stages whose latency is summarised. ``queue`` is the wait between reader and worker;
#: ``total`` is capture -> verdict published (so it includes the queue wait).
LATENCY_STAGES: tuple[str, ...] = ("read", "queue", "stats", "model", "score", "publish", "total")


class Reservoir:
    """Uniform sample of at most ``capacity`` values from a stream (Algorithm R)."""

    def __init__(self, capacity: int = 4096, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, but got {capacity}")
        self.capacity = capacity
        self._rng = random.Random(seed)
        self._values: list[float] = []
        self.count = 0

    def add(self, value: float) -> None:
        """Offer one value; NaN is ignored (e.g. diff_prev of the first frame)."""
        if math.isnan(value):
            return
        self.count += 1
        if len(self._values) < self.capacity:
            self._values.append(value)
            return
        j = self._rng.randrange(self.count)
        if j < self.capacity:
            self._values[j] = value

    def quantiles(self, qs: Iterable[float]) -> list[float] | None:
        """The requested quantiles (0..1) of the sample, or None when empty."""
        if not self._values:
            return None
        arr = np.asarray(self._values, dtype=np.float64)
        return [float(v) for v in np.quantile(arr, list(qs))]


@dataclass
class Totals:
    """Counters since start (the window counters are reset by each summary)."""

    frames_in: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    frames_corrupt: int = 0
    frames_calibrated: int = 0
    frames_skipped: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def copy(self) -> Totals:
        return replace(self, decisions=Counter(self.decisions), reasons=Counter(self.reasons),
                       errors=Counter(self.errors))


class _Window:
    def __init__(self, start_ts: float, start_mono: float, capacity: int) -> None:
        self.start_ts = start_ts
        self.start_mono = start_mono
        self.counts = Totals()
        self.latency = {stage: Reservoir(capacity, seed=i) for i, stage in enumerate(LATENCY_STAGES)}
        self.stats = {name: Reservoir(capacity, seed=100 + i) for i, name in enumerate(SCALAR_FIELDS)}
        self.confidence = Reservoir(capacity, seed=999)
        self.classes: Counter[str] = Counter()


class HealthAggregator:
    """Thread-safe collector of one camera's measurements; see the module docstring."""

    def __init__(self, camera_id: str, capacity: int = 4096) -> None:
        self.camera_id = camera_id
        self._capacity = capacity
        self._lock = threading.Lock()
        self._seq = 0
        self._window = _Window(time.time(), time.monotonic(), capacity)
        self._totals = Totals()

    # -- producers -----------------------------------------------------------------------------
    def frame_in(self, read_ms: float | None = None) -> None:
        """The reader got a frame from the source (``read_ms``: how long read() took)."""
        with self._lock:
            self._window.counts.frames_in += 1
            self._totals.frames_in += 1
            if read_ms is not None:
                self._window.latency["read"].add(read_ms)

    def dropped(self, n: int = 1) -> None:
        """``n`` frames were dropped because the queue was full (oldest first)."""
        with self._lock:
            self._window.counts.frames_dropped += n
            self._totals.frames_dropped += n

    def corrupt(self, n: int = 1) -> None:
        """``n`` frames were rejected as invalid (FrameError)."""
        with self._lock:
            self._window.counts.frames_corrupt += n
            self._totals.frames_corrupt += n

    def skipped(self, n: int) -> None:
        """The source's timestamps skipped ``n`` frame slots with no decode error (not corrupt)."""
        with self._lock:
            self._window.counts.frames_skipped += n
            self._totals.frames_skipped += n

    def error(self, kind: str) -> None:
        """Count an error by kind (reported in ``errors``)."""
        with self._lock:
            self._window.counts.errors[kind] += 1
            self._totals.errors[kind] += 1

    def record(
        self,
        stats: FrameStats,
        output: ModelOutput | None,
        latency_ms: Mapping[str, float],
        decision: str | None = None,
        reasons: Iterable[str] = (),
    ) -> None:
        """One processed frame. ``decision=None`` means it was used for calibration."""
        reasons = list(reasons)
        with self._lock:
            w = self._window
            for counts in (w.counts, self._totals):
                counts.frames_processed += 1
                if decision is None:
                    counts.frames_calibrated += 1
                else:
                    counts.decisions[decision] += 1
                    counts.reasons.update(reasons)
            for stage, value in latency_ms.items():
                if stage in w.latency:
                    w.latency[stage].add(value)
            for name, value in stats.scalars().items():
                w.stats[name].add(value)
            if output is not None:
                w.confidence.add(output.confidence)
                w.classes[output.label if output.label else str(output.top1)] += 1

    # -- readers -------------------------------------------------------------------------------
    def totals(self) -> Totals:
        """A copy of the counters since start."""
        with self._lock:
            return self._totals.copy()

    def summarize(
        self,
        *,
        source_state: str = "unknown",
        source_reconnects: int = 0,
        backend: Mapping[str, str] | None = None,
        model_sha256: str | None = None,
        profile_id: str | None = None,
        config_hash: str | None = None,
        publisher: Mapping[str, float] | None = None,
        phase: str = "guarding",
        errors: Mapping[str, int] | None = None,
        uptime_s: float = 0.0,
        gpu: Mapping[str, float] | None = None,
        drift: Mapping[str, float] | None = None,
        drift_alarms: Sequence[str] = (),
    ) -> HealthSummary:
        """Close the current window, return its summary and start the next window.

        ``drift`` / ``drift_alarms`` come from the guard's drift monitor (``Scorer.drift_snapshot``).
        """
        now_ts, now_mono = time.time(), time.monotonic()
        with self._lock:
            w = self._window
            self._window = _Window(now_ts, now_mono, self._capacity)
            seq = self._seq
            self._seq += 1
        elapsed = max(now_mono - w.start_mono, 1e-9)
        err = Counter(w.counts.errors)
        if errors:
            err.update(errors)
        return HealthSummary(
            camera_id=self.camera_id,
            seq=seq,
            window_start_ts=w.start_ts,
            window_end_ts=now_ts,
            frames_in=w.counts.frames_in,
            frames_processed=w.counts.frames_processed,
            frames_dropped=w.counts.frames_dropped,
            frames_corrupt=w.counts.frames_corrupt,
            frames_skipped=w.counts.frames_skipped,
            frames_calibrated=w.counts.frames_calibrated,
            fps=w.counts.frames_processed / elapsed,
            source_state=source_state,
            source_reconnects=source_reconnects,
            latency={stage: _latency(r) for stage, r in w.latency.items() if r.count},
            decisions=dict(w.counts.decisions),
            reasons=dict(w.counts.reasons),
            stats={name: _quantiles(r) for name, r in w.stats.items() if r.count},
            confidence=_quantiles(w.confidence),
            class_counts=dict(w.classes.most_common(20)),
            errors=dict(err),
            backend=dict(backend or {}),
            model_sha256=model_sha256,
            profile_id=profile_id,
            config_hash=config_hash,
            publisher=dict(publisher or {}),
            phase=phase,
            uptime_s=uptime_s,
            gpu=dict(gpu) if gpu is not None else None,
            drift=dict(drift or {}),
            drift_alarms=list(drift_alarms),
        )


def _latency(r: Reservoir) -> LatencySummary:
    q = r.quantiles((0.5, 0.95, 0.99))
    if q is None:
        return LatencySummary(count=r.count)
    return LatencySummary(p50_ms=q[0], p95_ms=q[1], p99_ms=q[2], count=r.count)


def _quantiles(r: Reservoir) -> Quantiles:
    q = r.quantiles((0.05, 0.5, 0.95))
    if q is None:
        return Quantiles()
    return Quantiles(p5=q[0], p50=q[1], p95=q[2])
