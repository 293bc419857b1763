"""The two pipeline threads of one camera: the reader and the worker.

* **reader** (``eg-reader``): ``source.read()`` into a `DropOldestQueue`. For a paced source (a
  live camera, or ``source.realtime``) a full queue drops the OLDEST frame, counted, so the
  camera is never blocked; a source read faster than real time (a file, an unpaced synthetic
  camera) waits for room instead, so nothing is lost.
* **worker** (``eg-worker``): stats -> model (one batched call per ``batch_size`` frames) ->
  calibrator or guard -> every sink (verdicts, and the guard's ``drift`` events via ``publish_event``).

After a live camera reconnects (its ``reconnects`` counter moved during a ``read()``), the
frames that follow carry a new *connection epoch*; the worker resets the statistics backend's
previous frame for the camera before the first of them, so ``diff_prev`` never compares a
frame with one from before the gap (it is NaN for that frame, as for the very first one).

Each thread runs inside `_guarded`, which puts ``(name, exception or None)`` on the error
queue in ``finally``: the supervisor learns of every thread's end at once and never waits on a
thread that died silently.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from agent.frame import Frame
from agent.framequeue import DropOldestQueue
from agent.healthagg import HealthAggregator
from agent.logsetup import sparse
from agent.pipeline import Measurer, Scorer
from agent.sinks.base import Sink
from agent.sources.base import Source

__all__ = ["ErrorQueue", "Item", "Workers"]

logger = logging.getLogger(__name__)

Item = tuple[Frame, float, int]  # frame, time.monotonic() when queued, source connection epoch
ErrorQueue = queue.Queue[tuple[str, BaseException | None]]

_WAIT_S = 0.25


class Workers:
    """Runs and tracks the reader and worker threads (see the module docstring)."""

    def __init__(
        self,
        source: Source,
        measurer: Measurer,
        scorer: Scorer,
        sinks: Sequence[Sink],
        agg: HealthAggregator,
        *,
        errors: ErrorQueue,
        queue_size: int,
        batch_size: int,
        paced: bool,
    ) -> None:
        self.source = source
        self.measurer = measurer
        self.scorer = scorer
        self.sinks = sinks
        self.agg = agg
        self.errors = errors
        self.queue: DropOldestQueue[Item] = DropOldestQueue(queue_size)
        self.batch_size = batch_size
        self.paced = paced
        self.threads: dict[str, threading.Thread] = {}
        self.latest: Frame | None = None
        self.last_progress: float | None = None
        self.busy_since: float | None = None
        self.first_done = threading.Event()
        self._stop_reading = threading.Event()
        self._corrupt_logged = 0
        self._epoch = 0  # the connection epoch of the last frame the worker measured

    def start(self) -> None:
        """Start both threads; the first frame gets a grace period from now."""
        self.last_progress = time.monotonic()
        for name, target in (("reader", self._read_loop), ("worker", self._work_loop)):
            thread = threading.Thread(target=self._guarded, args=(name, target), name=f"eg-{name}", daemon=True)
            self.threads[name] = thread
            thread.start()

    def stop_reading(self) -> None:
        """Stop the reader: no new frames; the worker drains what is queued and then ends."""
        self._stop_reading.set()
        # close() also wakes a read() blocked in a reconnect back-off (camera down).
        self.source.close()

    def drain(self, stall_after_s: float) -> bool:
        """Wait for the worker to finish the queue; False if it stopped making progress."""
        worker = self.threads.get("worker")
        while worker is not None and worker.is_alive():
            worker.join(_WAIT_S)
            now = time.monotonic()
            busy, last = self.busy_since, self.last_progress or now
            if busy is not None and now - busy > stall_after_s and now - last > stall_after_s:
                logger.error("worker stuck for %.0f s while draining; giving up on %d queued frame(s)",
                             now - busy, len(self.queue))
                return False
        return True

    # -- threads -------------------------------------------------------------------------------
    def _guarded(self, name: str, target: Callable[[], None]) -> None:
        error: BaseException | None = None
        try:
            target()
        except BaseException as exc:  # handed to the supervisor, never swallowed
            error = exc
        finally:
            self.errors.put((name, error))

    def _read_loop(self) -> None:
        epoch, reconnects = 0, self.source.reconnects
        try:
            while not self._stop_reading.is_set():
                t0 = time.perf_counter()
                frame = self.source.read()
                if frame is None:  # ended for good (end of file, max_frames, close())
                    if not self._stop_reading.is_set():
                        logger.info("source ended after %d frames", self.agg.totals().frames_in)
                    return
                if self.source.reconnects != reconnects:  # the camera was down during this read
                    epoch, reconnects = epoch + 1, self.source.reconnects
                self.latest = frame
                self.agg.frame_in((time.perf_counter() - t0) * 1e3)
                item = (frame, time.monotonic(), epoch)
                if self.paced:
                    dropped = self.queue.put(item)
                    if dropped:
                        self.agg.dropped(dropped)
                    continue
                while not self.queue.put_wait(item, timeout=_WAIT_S):
                    if self._stop_reading.is_set():
                        return
        finally:
            self.queue.close()

    def _work_loop(self) -> None:
        while True:
            items = self.queue.get_many(self.batch_size, timeout=_WAIT_S)
            if not items:
                if self.queue.finished:
                    return
                continue
            self.busy_since = time.monotonic()
            try:
                self._process(items)
            finally:
                self.busy_since = None

    def _process(self, items: list[Item]) -> None:
        # Split the batch where the connection epoch changes (rare): the backend's previous frame
        # must be forgotten exactly before the first frame after a reconnect.
        start = 0
        for i, (frame, _, epoch) in enumerate(items):
            if epoch != self._epoch:
                if i > start:
                    self._process_run(items[start:i])
                start, self._epoch = i, epoch
                self.measurer.stats.reset(frame.camera_id)
                logger.info("camera reconnected: frame %d is not compared with the frame before the gap", frame.seq)
        if start < len(items):
            self._process_run(items[start:])

    def _process_run(self, items: list[Item]) -> None:
        t_get = time.monotonic()
        measured, bad = self.measurer.measure([f for f, _, _ in items])
        for frame, exc in bad:
            self.agg.corrupt()
            self._corrupt_logged += 1
            if sparse(self._corrupt_logged):
                logger.warning("frame %d rejected (%d so far): %s", frame.seq, self._corrupt_logged, exc)
        queued = {id(f): q for f, q, _ in items}
        for m in measured:
            m.latency_ms["queue"] = (t_get - queued[id(m.frame)]) * 1e3
            if m.model_error is not None:
                self.agg.error("model_output")  # the Scorer logs it and keeps the run of them
            verdict = self.scorer.update(m)
            # Sequential drift alarms raised/cleared by this frame (rare): one event each, to every sink.
            for event in self.scorer.drift_events():
                record = event.to_dict()
                for sink in self.sinks:
                    sink.publish_event(record)
            if verdict is None:  # calibrating
                self.agg.record(m.stats, m.output, m.latency_ms)
            else:
                t0 = time.perf_counter()
                for sink in self.sinks:
                    sink.publish_verdict(verdict, m.frame)
                m.latency_ms["publish"] = (time.perf_counter() - t0) * 1e3
                m.latency_ms["total"] = (time.monotonic() - m.frame.capture_mono) * 1e3
                self.agg.record(m.stats, m.output, m.latency_ms, str(verdict.decision), verdict.reason_codes)
            self.last_progress = time.monotonic()
            self.first_done.set()
