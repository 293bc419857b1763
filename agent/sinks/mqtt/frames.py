"""Sampled frames: JPEG under a byte cap, a daily byte budget and an hourly reservoir of clean
reference frames (the per-camera rate limit is `agent.tokenbucket.TokenBucket`)."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import PublishError
from agent.frame import Frame

__all__ = ["DailyBudget", "EncodedJpeg", "Reservoir", "encode_jpeg"]


@dataclass(frozen=True, slots=True)
class EncodedJpeg:
    data: bytes
    width: int
    height: int
    quality: int


def encode_jpeg(
    image: npt.NDArray[np.uint8], max_bytes: int, max_width: int, quality: int, min_quality: int
) -> EncodedJpeg:
    """Encode BGR ``image`` as JPEG of at most ``max_bytes``.

    Downscale to ``max_width`` first, then lower the quality in steps of 10 down to
    ``min_quality``; if it is still too big, shrink by the square root of the size ratio
    (JPEG size is roughly proportional to the pixel count) and start again.
    """
    h, w = image.shape[:2]
    scale = min(1.0, max_width / w)
    last = 0
    for _ in range(12):
        tw, th = max(1, round(w * scale)), max(1, round(h * scale))
        img = image if (tw, th) == (w, h) else cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
        q = quality
        while True:
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
            if not ok:
                raise PublishError(f"JPEG encoding failed for a {tw}x{th} frame")
            last = int(buf.size)
            if last <= max_bytes:
                return EncodedJpeg(buf.tobytes(), tw, th, q)
            if q <= min_quality:
                break
            q = max(min_quality, q - 10)
        scale *= max(0.25, min(0.9, math.sqrt(max_bytes / last) * 0.9))
    raise PublishError(f"could not encode a frame under {max_bytes} bytes (last try {last} bytes)")


class DailyBudget:
    """Bytes per UTC day; ``load``/``save`` persist the running total (the spool's meta table)."""

    def __init__(
        self,
        limit: int,
        load: Callable[[], str | None],
        save: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self._save = save
        self._clock = clock
        self.day, self.used = self._today(), 0
        stored = load()
        if stored:
            day, _, used = stored.partition(":")
            if day == self.day and used.isdigit():
                self.used = int(used)

    def _today(self) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(self._clock()))

    def allow(self, nbytes: int) -> bool:
        """Spend ``nbytes`` if today's budget has room (limit 0 = unlimited)."""
        today = self._today()
        if today != self.day:
            self.day, self.used = today, 0
        if self.limit and self.used + nbytes > self.limit:
            return False
        self.spend(nbytes)
        return True

    def spend(self, nbytes: int) -> None:
        """Count ``nbytes`` without checking (operator-requested snapshots)."""
        today = self._today()
        if today != self.day:
            self.day, self.used = today, 0
        self.used += nbytes
        self._save(f"{self.day}:{self.used}")


class Reservoir:
    """Uniform sample of ``k`` clean frames per camera and hour (Vitter's algorithm R)."""

    def __init__(self, k: int, rng: random.Random | None = None) -> None:
        self.k = k
        self._rng = rng or random.Random()
        self.hour: int | None = None
        self.seen = 0
        self.frames: list[Frame] = []

    def offer(self, frame: Frame) -> list[Frame]:
        """Offer a PASS frame; returns the previous hour's sample when the hour changed."""
        if self.k <= 0:
            return []
        hour = int(frame.capture_ts // 3600)
        done: list[Frame] = []
        if self.hour is not None and hour != self.hour:
            done, self.frames, self.seen = self.frames, [], 0
        self.hour = hour
        self.seen += 1
        if len(self.frames) < self.k:
            self.frames.append(frame)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.k:
                self.frames[j] = frame
        return done

    def drain(self) -> list[Frame]:
        """The current hour's sample so far (at shutdown: a partial hour is still a clean sample)."""
        done, self.frames, self.seen, self.hour = self.frames, [], 0, None
        return done
