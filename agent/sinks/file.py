"""The file sink: JSON lines and sampled JPEGs in one folder (used when no broker is configured).

Layout under ``file_sink.dir``::

    verdicts.jsonl   one line per FLAG/BLOCK verdict (PASS too with write_pass)
    health.jsonl     one HealthSummary per health interval
    status.jsonl     camera status changes (online / degraded / offline, with a reason)
    events.jsonl     pipeline events other than verdicts (``drift`` alarms start / end)
    frames/          JPEGs of sampled risky frames: <camera>_<seq>_<DECISION>.jpg

Every line is flushed when written. Risky frames are sampled with a token bucket of
``frames_per_minute`` (burst: 10 s worth, at least one; 0 saves none); each frame not saved is
counted.
A failing write (disk full, permissions) is counted (``write_errors``, in every health summary's
``publisher``) and logged: the first one, then what failed since at most once every
``FAILURE_LOG_S`` (60 s), and at close the run's total per file; it is never raised into the
pipeline: the guard keeps guarding when its log disk fills up. A line is
written whole or not at all (a failed write is truncated away, so the next line does not glue
onto half of it). A file deleted, moved or replaced while open is noticed at the next line, which
goes to the path again (folder recreated, counted as ``files_reopened``, logged once).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from agent.errors import ConfigError
from agent.frame import Frame
from agent.fsutil import write_atomic
from agent.health import HealthSummary
from agent.sinks.base import CameraState
from agent.sinks.config import FileSinkConfig
from agent.tokenbucket import TokenBucket
from agent.verdict import Decision, Verdict

__all__ = ["FileSink", "jsonable"]

logger = logging.getLogger(__name__)

IdsProvider = Callable[[], Mapping[str, str | None]]

#: Write failures after the first are logged together, at most once per this many seconds.
FAILURE_LOG_S: float = 60.0


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python ones and NaN/inf into None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


class FileSink:
    """Writes verdicts, health and status as JSON lines and samples risky frames as JPEGs.

    ``ids`` is called for every verdict line and adds the model/profile/config identities to it
    (so a line can be audited without the health file).
    """

    def __init__(self, cfg: FileSinkConfig, camera_id: str, ids: IdsProvider | None = None) -> None:
        self.cfg = cfg
        self.camera_id = camera_id
        self.dir = Path(cfg.dir)
        self.frames_dir = self.dir / "frames"
        try:
            self.frames_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"file_sink.dir: cannot create output folder {exc.filename or self.frames_dir}: "
                f"{exc.strerror or exc}; choose a writable folder"
            ) from exc
        self._ids = ids
        self._lock = threading.Lock()
        self._files: dict[str, BinaryIO] = {}
        fpm = cfg.frames_per_minute  # 0 saves no frames (each one is still counted)
        self._bucket = TokenBucket(fpm / 60.0, max(1.0, fpm / 6.0) if fpm > 0 else 0.0)
        self._counts: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()  # failed writes per file ("frames" for the JPEGs)
        self._unlogged: Counter[str] = Counter()  # ... of them not logged yet
        self._logged_at = -math.inf
        self._closed = False

    # -- Sink protocol -------------------------------------------------------------------------
    def publish_verdict(self, verdict: Verdict, frame: Frame) -> None:
        """Write the verdict line (FLAG/BLOCK, PASS with write_pass) and maybe sample the frame."""
        if verdict.decision == Decision.PASS and not self.cfg.write_pass:
            with self._lock:
                self._counts["verdicts_pass_skipped"] += 1
            return
        line = verdict.to_dict()
        if self._ids is not None:
            line.update(self._ids())
        self._write_line("verdicts.jsonl", line, "verdicts_written")
        if verdict.decision != Decision.PASS:
            self._sample_frame(verdict, frame)

    def publish_health(self, summary: HealthSummary) -> None:
        """Append the summary to health.jsonl."""
        self._write_line("health.jsonl", summary.model_dump(mode="json"), "health_written")

    def publish_camera_status(self, camera_id: str, state: CameraState, reason: str) -> None:
        """Append a status change to status.jsonl."""
        line = {"camera_id": camera_id, "state": state, "reason": reason, "ts": time.time()}
        self._write_line("status.jsonl", line, "status_written")

    def publish_event(self, event: dict[str, object]) -> None:
        """Append the event (e.g. a ``drift`` alarm start/end) to events.jsonl, with the ids and ``ts``."""
        line: dict[str, object] = {**event}
        if self._ids is not None:
            line.update(self._ids())
        line.setdefault("ts", time.time())
        self._write_line("events.jsonl", line, "events_written")

    def stats(self) -> dict[str, float]:
        """Counters: lines written, frames saved / rate-limited, write errors (backlog is always 0)."""
        with self._lock:
            out = {k: float(v) for k, v in self._counts.items()}
        out["backlog"] = 0.0
        return out

    def close(self) -> None:
        """Flush and close the files (idempotent); say what this run failed to write."""
        with self._lock:
            if self._failures and not self._closed:
                logger.error(
                    "file sink: %d write(s) in %s failed during this run (%s): those records are missing from "
                    "the files (free space or fix permissions there)", sum(self._failures.values()), self.dir,
                    _per_file(self._failures),
                )
            self._closed = True
            for fh in self._files.values():
                try:
                    fh.close()
                except OSError as exc:
                    self._counts["write_errors"] += 1
                    logger.warning("closing %s failed: %s", getattr(fh, "name", "?"), exc)
            self._files.clear()

    # -- internals -----------------------------------------------------------------------------
    def _write_line(self, name: str, record: Mapping[str, Any], counter: str) -> None:
        data = (json.dumps(jsonable(dict(record)), separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
        with self._lock:
            if self._closed:
                self._counts["writes_after_close"] += 1
                logger.warning("file sink is closed; %s line not written (counted)", name)
                return
            fh: BinaryIO | None = None
            start = 0
            try:
                fh = self._handle(name)
                start = os.fstat(fh.fileno()).st_size
                view = memoryview(data)
                while view:  # unbuffered: a short write (disk nearly full) continues or raises
                    view = view[fh.write(view) or 0:]
            except OSError as exc:
                self._failed(name, exc)
                if fh is not None:  # no half line stays behind for the next one to glue onto
                    with contextlib.suppress(OSError):
                        os.ftruncate(fh.fileno(), start)
                # Reopen next time: the handle may be in a bad state after e.g. ENOSPC.
                bad = self._files.pop(name, None)
                if bad is not None:
                    with contextlib.suppress(OSError):
                        bad.close()
                return
            self._counts[counter] += 1

    def _handle(self, name: str) -> BinaryIO:
        """The open file ``name`` (lock held), reopened when the path no longer leads to it."""
        path = self.dir / name
        fh = self._files.get(name)
        if fh is not None:
            try:
                same = os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
            except OSError:
                same = False
            if not same:  # deleted, moved away or replaced since it was opened
                self._counts["files_reopened"] += 1
                if self._counts["files_reopened"] == 1:
                    logger.warning("file sink: %s was deleted, moved or replaced while open; writing to the path "
                                   "again (counted as files_reopened)", path)
                del self._files[name]
                with contextlib.suppress(OSError):
                    fh.close()
                fh = None
        if fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            fh = open(path, "ab", buffering=0)  # noqa: SIM115 (kept open)
            self._files[name] = fh
        return fh

    def _sample_frame(self, verdict: Verdict, frame: Frame) -> None:
        if not self._bucket.take():
            with self._lock:
                self._counts["frames_rate_limited"] += 1
            return
        ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
        if not ok:
            with self._lock:
                self._counts["frames_encode_errors"] += 1
            logger.warning("JPEG encoding of frame %d failed; not saved (counted)", frame.seq)
            return
        name = f"{frame.camera_id}_{frame.seq:08d}_{verdict.decision}.jpg"
        try:
            write_atomic(self.frames_dir / name, buf.tobytes())  # readers never see half a JPEG
        except OSError as exc:
            with self._lock:
                self._failed(name, exc)
            return
        with self._lock:
            self._counts["frames_saved"] += 1

    def _failed(self, what: str, exc: OSError) -> None:
        """Count a write error (lock held); log the first one, then the new ones every FAILURE_LOG_S."""
        self._counts["write_errors"] += 1
        key = "frames" if what.endswith(".jpg") else what
        self._failures[key] += 1
        self._unlogged[key] += 1
        now = time.monotonic()
        if now - self._logged_at < FAILURE_LOG_S:
            return
        logger.warning(
            "file sink: writing %s in %s failed (%s); not written%s: %s; the guard keeps running",
            what, self.dir, exc.strerror or exc,
            "" if self._logged_at == -math.inf else " since the last such warning", _per_file(self._unlogged),
        )
        self._logged_at = now
        self._unlogged.clear()


def _per_file(counts: Counter[str]) -> str:
    """``health.jsonl 6, verdicts.jsonl 7`` (most first)."""
    return ", ".join(f"{name} {n}" for name, n in counts.most_common())
