"""The frame-source contract and the bookkeeping every source shares.

A source's one verb is ``read()``: the next ``Frame``, or ``None`` when the stream has
ended for good (end of a non-looping file or folder, ``max_frames`` reached, or
``close()`` called). A live camera that fails never returns ``None``: it reconnects
with back-off inside ``read()`` while ``state`` says ``"down"``. ``close()`` may be
called from another thread; it wakes a back-off sleep at once, so a daemon can stop
within a second even while its camera is down.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol, cast, runtime_checkable

import cv2
import numpy as np
import numpy.typing as npt

from agent.frame import Frame

__all__ = ["Capture", "Source", "SourceBase", "SourceState", "to_bgr"]

logger = logging.getLogger(__name__)

SourceState = Literal["connecting", "up", "down", "ended"]
"""``connecting``: not delivered a frame yet; ``up``: delivering; ``down``: failed, retrying; ``ended``: done."""

Image = npt.NDArray[np.uint8]

# A realtime source more than this far behind its schedule re-anchors instead of bursting to catch up.
_MAX_LAG_S = 1.0


@runtime_checkable
class Source(Protocol):
    """What the pipeline needs from a frame source."""

    @property
    def uri(self) -> str:
        """Where frames come from (for logs and health)."""
        ...

    @property
    def state(self) -> SourceState: ...

    @property
    def nominal_fps(self) -> float:
        """Frames per second the source claims (container fps, camera fps, configured fps)."""
        ...

    @property
    def live(self) -> bool:
        """True for cameras (and the synthetic camera): frames are real time and never repeat legitimately."""
        ...

    @property
    def reconnects(self) -> int:
        """Reconnection attempts after failures so far."""
        ...

    @property
    def corrupt_frames(self) -> int:
        """Frames (or files) that could not be decoded or had an unusable shape or dtype, and were skipped."""
        ...

    @property
    def skipped_slots(self) -> int:
        """Frame slots a video file's timestamps skipped with no decode error so far (pauses, a
        variable frame rate, silent demuxer drops), and the frames a truncated file's container
        declares that never came: reported, not counted as corrupt. 0 elsewhere."""
        ...

    @property
    def frames_read(self) -> int:
        """Frames delivered by ``read()`` so far."""
        ...

    def read(self) -> Frame | None:
        """The next frame, or None when the stream has ended for good. Blocks while a live source is down."""
        ...

    def close(self) -> None:
        """Stop: wakes a blocked ``read()`` (which then returns None) and releases the device. Idempotent."""
        ...


def to_bgr(image: object) -> tuple[Image | None, bool]:
    """Turn what a decoder returned into a BGR uint8 (H, W, 3) array.

    Returns ``(image, converted)``; ``image`` is None when the input is unusable (None,
    empty, unsupported dtype or channel count). Grayscale, (H, W, 1), BGRA and 16-bit
    frames are converted (``converted`` is True).
    """
    if not isinstance(image, np.ndarray) or image.size == 0:
        return None, False
    converted = False
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)  # keep the 8 most significant bits
        converted = True
    if image.dtype != np.uint8:
        return None, False
    arr = cast(Image, image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return cast(Image, cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)), True
    if arr.ndim != 3:
        return None, False
    if arr.shape[2] == 4:
        return cast(Image, cv2.cvtColor(arr, cv2.COLOR_BGRA2BGR)), True
    if arr.shape[2] != 3:
        return None, False
    return np.ascontiguousarray(arr, dtype=np.uint8), converted


@dataclass(slots=True)
class Capture:
    """What a source's ``_next()`` produced: the decoder's image (converted by ``to_bgr``) and metadata."""

    image: object
    fault: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class SourceBase(ABC):
    """State, counters, pacing, ``max_frames`` and thread-safe stopping for concrete sources.

    Subclasses implement ``_next()`` (the next image, or None at the end; may block and
    must return promptly once ``self._stop`` is set; use ``self._sleep()``) and
    ``_release()`` (free the device; called once, from the reading thread or ``close()``).
    """

    def __init__(
        self,
        uri: str,
        camera_id: str,
        *,
        live: bool,
        nominal_fps: float,
        realtime: bool = False,
        max_frames: int | None = None,
    ) -> None:
        if not nominal_fps > 0:
            raise ValueError(f"nominal_fps must be > 0, but got {nominal_fps}")
        self._uri = uri
        self.camera_id = camera_id
        self._live = live
        self._fps = float(nominal_fps)
        self._realtime = realtime
        self._max_frames = max_frames
        self._state: SourceState = "connecting"
        self._stop = threading.Event()
        self._io_lock = threading.Lock()  # held while reading; close() releases only when it can take it
        self._released = False
        self._reconnects = 0
        self._corrupt = 0
        self._skipped = 0
        self._converted = 0
        self._frames = 0
        self._seq = 0
        self._pace_t0: float | None = None
        self._pace_n = 0

    # -- the contract ---------------------------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def nominal_fps(self) -> float:
        return self._fps

    @property
    def live(self) -> bool:
        return self._live

    @property
    def reconnects(self) -> int:
        return self._reconnects

    @property
    def corrupt_frames(self) -> int:
        return self._corrupt

    @property
    def skipped_slots(self) -> int:
        return self._skipped

    @property
    def converted_frames(self) -> int:
        """Frames delivered after a format conversion (grayscale, BGRA or 16-bit to BGR uint8)."""
        return self._converted

    @property
    def frames_read(self) -> int:
        return self._frames

    @property
    def stopped(self) -> bool:
        """True once ``close()`` was called."""
        return self._stop.is_set()

    def read(self) -> Frame | None:
        with self._io_lock:
            frame = self._read_locked()
            if self._stop.is_set():
                self._release_once()
                return None
            return frame

    def close(self) -> None:
        self._stop.set()
        if self._state != "ended":
            self._state = "ended"
        # If a reader is inside read() it releases on its way out; never free a device under its feet.
        if self._io_lock.acquire(blocking=False):
            try:
                self._release_once()
            finally:
                self._io_lock.release()

    def __enter__(self) -> SourceBase:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._uri!r}, camera_id={self.camera_id!r}, state={self._state!r})"

    # -- for subclasses -------------------------------------------------------------------------------------------

    @abstractmethod
    def _next(self) -> Capture | None:
        """The next image, or None when the stream has ended (or ``self._stop`` is set)."""

    @abstractmethod
    def _release(self) -> None:
        """Free the underlying device/file. Called exactly once."""

    def _sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False if woken by ``close()`` (the caller should give up)."""
        return not self._stop.wait(max(0.0, seconds))

    def _set_state(self, state: SourceState) -> None:
        if state != self._state and not self._stop.is_set():
            logger.debug("source %s: %s -> %s", self._uri, self._state, state)
            self._state = state

    def _count_corrupt(self, n: int = 1) -> None:
        self._corrupt += n

    def _count_skipped(self, n: int) -> None:
        self._skipped += n

    def _count_reconnect(self) -> None:
        self._reconnects += 1

    # -- internals ------------------------------------------------------------------------------------------------

    def _read_locked(self) -> Frame | None:
        if self._stop.is_set() or self._state == "ended":
            return None
        if self._max_frames is not None and self._frames >= self._max_frames:
            logger.info("source %s: max_frames=%d reached", self._uri, self._max_frames)
            self._end()
            return None
        while True:
            cap = self._next()
            if cap is None:
                self._end()
                return None
            image, converted = to_bgr(cap.image)
            if image is not None:
                break
            self._corrupt += 1  # subclasses normally filter these; never hand an invalid frame on
        if self._realtime and not self._pace():
            return None
        self._converted += int(converted)
        frame = Frame(
            image=image,
            camera_id=self.camera_id,
            seq=self._seq,
            capture_ts=time.time(),
            capture_mono=time.monotonic(),
            live=self._live,
            fault=cap.fault,
            extra=cap.extra,
        )
        self._seq += 1
        self._frames += 1
        self._set_state("up")
        return frame

    def _pace(self) -> bool:
        """Wait until this frame is due at ``nominal_fps``; False if stopped meanwhile."""
        now = time.monotonic()
        if self._pace_t0 is None or now - (self._pace_t0 + self._pace_n / self._fps) > _MAX_LAG_S:
            self._pace_t0, self._pace_n = now, 0
        due = self._pace_t0 + self._pace_n / self._fps
        self._pace_n += 1
        return self._sleep(due - now) if due > now else not self._stop.is_set()

    def _end(self) -> None:
        if self._state != "ended":
            logger.info("source %s ended after %d frames", self._uri, self._frames)
            self._state = "ended"
        self._release_once()

    def _release_once(self) -> None:
        if not self._released:
            self._released = True
            try:
                self._release()
            except Exception:  # a failing release must not mask the reason we stopped
                logger.exception("source %s: release failed", self._uri)
