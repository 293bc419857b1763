"""OpenCV ``VideoCapture`` sources: video files, network streams and camera devices.

Files are not live: they end (or loop) and may be paced at their fps with ``realtime``.
A damaged stretch in the middle of a file is read through: FFmpeg fails ``read()`` while
it cannot decode and then goes on, so the reader keeps reading; the frames lost on the way
(from the timestamps' jump after the failed reads, or the failed reads where timestamps
cannot tell: file_gaps.FrameLedger) are counted as corrupt, with a warning naming them.
Timestamp jumps with no failed read (pauses, variable frame rates, silent demuxer drops)
are reported (a log line per file, and ``skipped_slots`` for health's ``frames_skipped``), not
counted as corrupt. A truncated file (the container promises more frames than
decode) ends cleanly at the last decodable frame, with a warning. Network streams (rtsp,
http, ...) and devices are live: if they cannot be opened or stop delivering, ``read()`` keeps reconnecting with
capped exponential back-off (state ``down``) until it gets frames again or ``close()``
is called; it never returns None for a failure.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from agent.errors import SourceConfigError, SourceError
from agent.sources.backoff import Backoff
from agent.sources.base import Capture, SourceBase, to_bgr
from agent.sources.config import SourceConfig
from agent.sources.file_gaps import FrameLedger, Gap

__all__ = ["LIVE_SCHEMES", "OpenCVSource", "is_live_uri"]

logger = logging.getLogger(__name__)

LIVE_SCHEMES: tuple[str, ...] = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")
_DEFAULT_FPS = 25.0
# Consecutive undecodable frames after which a live stream is considered broken and reopened,
# and after which a file is considered finished (once past the frame count it declares).
_MAX_CORRUPT_RUN = 25
# A file's failed reads cost microseconds each; reading on to the declared frame count finds frames
# after a long damaged stretch, but a bogus count must not keep a finished file spinning.
_MAX_FILE_GAP = 10_000
# Containers whose frame count comes from an index (exact); elsewhere (mkv, webm, ts, mpg) FFmpeg
# estimates it from the duration, which audio or a start offset make longer than the video.
_COUNTED_SUFFIXES = (".mp4", ".m4v", ".mov", ".3gp", ".avi")


def is_live_uri(uri: str) -> bool:
    """True for device indices ("0"), network stream URLs and /dev/video* paths."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    return uri.isdigit() or scheme in LIVE_SCHEMES or uri.startswith("/dev/video")


class OpenCVSource(SourceBase):
    """Frames from ``cv2.VideoCapture``; ``cfg.uri`` is a file path, a stream URL or a device index."""

    def __init__(self, cfg: SourceConfig, camera_id: str) -> None:
        live = is_live_uri(cfg.uri)
        self._cfg = cfg
        self._target: str | int = int(cfg.uri) if cfg.uri.isdigit() else cfg.uri
        self._cap: cv2.VideoCapture | None = None
        self._pending: Capture | None = None  # first frame of a file, decoded at open to prove it decodes
        self._backoff = Backoff.from_config(cfg.reconnect)
        self._ever_opened = False
        self._down_since_attempts = 0
        self._corrupt_run = 0
        self.declared_frames: int | None = None
        """Frame count the container claims (files only; None when unknown)."""
        self.declared_exact = Path(cfg.uri).suffix.lower() in _COUNTED_SUFFIXES
        """Whether the container counts its frames (mp4, mov, avi) rather than FFmpeg estimating them."""
        self.truncated = False
        """True once a file ended before the frame count its container declares (mp4, mov, avi: not an estimate)."""
        self.passes = 0
        """Completed passes over a looping file."""
        self.skipped_frames = 0
        """Frames in the middle of a file that did not decode and were read past (counted as corrupt)."""
        self._pass_frames = 0  # frames delivered in this pass
        self._ledger = FrameLedger(None, 0.0)  # which frames of this pass were lost
        self._pts_fps = 0.0  # the container's frame rate, to turn timestamps into frame indices
        self._pts0 = 0.0  # the first frame's timestamp (ms)
        fps = cfg.fps or _DEFAULT_FPS
        if not live:
            self._open_file()
            assert self._cap is not None
            container_fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
            if cfg.fps is None and 0.0 < container_fps <= 1000.0:
                fps = container_fps
        super().__init__(
            cfg.uri,
            camera_id,
            live=live,
            nominal_fps=fps,
            realtime=cfg.realtime and not live,  # a camera paces itself
            max_frames=cfg.max_frames,
        )
        if not live:
            self._set_state("up")
        elif cfg.loop:
            logger.warning("source.loop has no effect on %s: a live camera does not end (loop restarts video "
                           "files, folders and synthetic sources)", cfg.uri)

    # -- files ----------------------------------------------------------------------------------------------------

    def _open_file(self) -> None:
        path = Path(self._cfg.uri)
        if not path.is_file():
            raise SourceConfigError(f"cannot open video file {path}: no such file")
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            cap.release()
            raise SourceConfigError(
                f"cannot open video file {path}: OpenCV found no demuxer/decoder for it "
                "(expected a video container such as .avi, .mp4, .mkv)"
            )
        ok, image = cap.read()
        bgr, _ = to_bgr(image if ok else None)
        if bgr is None:
            cap.release()
            raise SourceConfigError(f"cannot open video file {path}: it opened but its first frame does not decode")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.declared_frames = count if count > 0 else None
        rate = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._pts_fps = rate if 0.0 < rate <= 1000.0 else 0.0
        self._pts0 = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
        self._cap = cap
        self._pending = Capture(image)
        self._pass_frames = 0
        self._ledger = FrameLedger(self.declared_frames, self._pts_fps)

    def _gap_limit(self) -> int:
        """Failed reads in a row after which this pass of the file is over."""
        if self.declared_frames is None:
            return _MAX_CORRUPT_RUN
        return min(max(_MAX_CORRUPT_RUN, self.declared_frames - self._ledger.pos), _MAX_FILE_GAP)

    def _next_file(self) -> Capture | None:
        if self._pending is not None:
            cap, self._pending = self._pending, None
            self._pass_frames += 1
            return cap
        assert self._cap is not None
        failed = 0  # reads in a row that gave no frame
        invalid = 0  # frames in a row that decoded to something that is not an image
        while not self._stop.is_set():
            ok, image = self._cap.read()
            if ok:
                silent = self._ledger.silent_slots
                for gap in self._ledger.frame(self._pts_index(), failed):
                    self._note_gap(gap)
                self._count_skipped(self._ledger.silent_slots - silent)
                failed = 0
            if ok and to_bgr(image)[0] is not None:
                self._pass_frames += 1
                return Capture(image)
            if ok:  # counted at once: it is a frame, and the file goes on
                self._count_corrupt()
                invalid += 1
                if invalid < _MAX_CORRUPT_RUN:
                    continue
            else:
                failed += 1
                if failed < self._gap_limit():
                    continue
            # End of this pass (the trailing failed reads are the end of the file, not lost frames).
            self._end_pass()
            if not self._cfg.loop:
                return None
            self.passes += 1
            self._cap.release()
            self._cap = None
            try:
                self._open_file()
            except SourceError as exc:  # the file changed or vanished while we looped over it
                logger.warning("source %s: cannot reopen for the next loop: %s", self._cfg.uri, exc)
                return None
            return self._next_file()
        return None

    def _pts_index(self) -> int | None:
        """The frame just read's index from its timestamp (None where the container has no frame rate)."""
        assert self._cap is not None
        if self._pts_fps <= 0.0:
            return None
        ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
        return round((ms - self._pts0) * self._pts_fps / 1000.0)

    def _note_gap(self, gap: Gap) -> None:
        self._count_corrupt(gap.count)
        self.skipped_frames += gap.count
        if gap.evidence == "failed reads":  # where they were is known only roughly
            what = f"{gap.count} frame(s) from about frame {gap.first}"
        else:
            what = f"frame {gap.first}" if gap.count == 1 else f"frames {gap.first}-{gap.first + gap.count - 1}"
        (logger.warning if self.passes == 0 else logger.debug)(
            "video file %s: %s did not decode (%s); read past %s (counted as corrupt)",
            self._cfg.uri, what, gap.evidence, "it" if gap.count == 1 else "them",
        )

    def _end_pass(self) -> None:
        """Count what the ledger still held, and report silent jumps and a short file, once per pass."""
        ledger = self._ledger
        for gap in ledger.end():
            self._note_gap(gap)
        if ledger.silent_slots and self.passes == 0:
            slots, before = ledger.largest_jump
            # A second or more of video the guard never saw is worth a warning; a variable frame rate's
            # small steps are not.
            (logger.warning if slots >= max(1.0, self._pts_fps) else logger.info)(
                "video file %s: its timestamps skip %d frame slots in %d jump%s (the largest: %d after frame %d) "
                "with no decode error: pauses in the recording, a variable frame rate, frames the capture "
                "dropped, or packets the demuxer dropped; %d frames delivered, the slots not counted as corrupt",
                self._cfg.uri, ledger.silent_slots, ledger.silent_jumps, "" if ledger.silent_jumps == 1 else "s",
                slots, before, self._pass_frames,
            )
        short = ledger.shortfall()
        if short and (not self.declared_exact or short <= ledger.slack) and self.passes == 0:
            logger.info(
                "video file %s: %d frames read, %d fewer than the %d its container declares (%s)", self._cfg.uri,
                ledger.pos, short, self.declared_frames,
                "a few: an edit list or start offset hides them" if self.declared_exact else
                "FFmpeg estimates the count from the duration, which audio or a start offset make longer",
            )
        elif short > ledger.slack and not self.truncated:
            self.truncated = True
            self._count_skipped(short)  # frames the guard never saw: health's frames_skipped carries them
            logger.warning(
                "video file %s is truncated or damaged: the container declares %d frames, %d were read (%d "
                "counted as lost among them) and the other %d are missing: cut off at the end, or dropped "
                "without a trace where timestamps count packets (AVI); treating that as the end (the missing "
                "frames are counted in health's frames_skipped)",
                self._cfg.uri, self.declared_frames, ledger.pos, self.skipped_frames, short,
            )

    # -- live streams and devices ---------------------------------------------------------------------------------

    def _open_live(self) -> cv2.VideoCapture | None:
        if isinstance(self._target, int):
            cap = cv2.VideoCapture(self._target)
        else:
            ms = int(self._cfg.timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            cap = cv2.VideoCapture(self._target, cv2.CAP_ANY, params)
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def _fail(self, why: str) -> bool:
        """Record a live failure and wait out the back-off; False if stopped meanwhile."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self.state != "down":
            logger.warning("camera %s (%s) is down: %s; reconnecting with back-off", self.camera_id, self.uri, why)
        self._set_state("down")
        self._down_since_attempts += 1
        return self._sleep(self._backoff.next_delay())

    def _next_live(self) -> Capture | None:
        while not self._stop.is_set():
            if self._cap is None:
                if self._ever_opened or self._down_since_attempts:
                    self._count_reconnect()
                self._cap = self._open_live()
                if self._cap is None:
                    if not self._fail("cannot open the stream/device"):
                        return None
                    continue
                self._ever_opened = True
            ok, image = self._cap.read()
            if not ok:
                if not self._fail("stopped delivering frames"):
                    return None
                continue
            if to_bgr(image)[0] is None:
                self._count_corrupt()
                self._corrupt_run += 1
                if self._corrupt_run >= _MAX_CORRUPT_RUN and not self._fail(
                    f"{self._corrupt_run} undecodable frames in a row"
                ):
                    return None
                continue
            self._corrupt_run = 0
            if self.state == "down":
                logger.info("camera %s (%s) is back up after %d attempts", self.camera_id, self.uri,
                            self._down_since_attempts)
            self._down_since_attempts = 0
            self._backoff.reset()
            return Capture(image)
        return None

    # -- SourceBase -----------------------------------------------------------------------------------------------

    def _next(self) -> Capture | None:
        return self._next_live() if self.live else self._next_file()

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
