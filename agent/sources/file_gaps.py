"""Which frames of a video file were lost: the bookkeeping behind ``OpenCVSource``'s file reader.

FFmpeg reads through damage in different ways, depending on the container:

* mp4/mov: ``read()`` fails while the decoder resynchronises, then frames come again;
* MPEG-TS, MPEG-PS, Matroska: the demuxer may drop the damaged packets without a word, and
  the next frame simply arrives with a later timestamp. That looks exactly like a pause in
  a healthy recording (motion-triggered recording, a stalled encoder), a variable frame
  rate (a phone clip whose rate drops in the dark) or an AVI with empty chunks for frames
  its capture dropped: such silent jumps are not counted, only added up (``silent_slots``,
  ``silent_jumps``, ``largest_jump``) for one report at the end;
* H.264 with B-frames: after the failed reads a frame the decoder had buffered may come
  first (nothing lost yet), the jump follows, and a few earlier frames may come late;
* AVI and raw MJPEG: timestamps follow the packet count, so a lost frame leaves no mark
  at all; only the container's declared frame count, at the end, shows the shortfall.

``FrameLedger`` is fed each decoded frame's index from its timestamp (``round((t - t0) x fps)``,
None where the container has no frame rate) and the failed reads just before it, and
returns the losses to count, as ``Gap`` runs:

* a forward jump of the timestamp index is a loss when there is evidence of damage: failed
  reads just before it, or within ``horizon`` frames after such reads (decoder resync);
* jumped-over frames are held until the stream has gone ``horizon`` frames past the last of
  them, so a frame that arrives late is not counted as lost;
* failed reads with no timestamp evidence within ``horizon`` frames (AVI, or no frame rate)
  count as that many lost frames;
* timestamps that leave the declared frame count, or stand still or run back away from any
  damage, are garbled or absent: from then on the failed reads count, as for a file without
  timestamps.

It never guesses frames it has no evidence for: what is left of the declared count at the end
is ``shortfall()``, reported as such (a truncated file, or frames an AVI lost without a trace).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FrameLedger", "Gap"]


@dataclass(frozen=True)
class Gap:
    """``count`` lost frames from index ``first``; ``evidence``: "timestamps" or "failed reads"."""

    first: int
    count: int
    evidence: str


class FrameLedger:
    """Losses of one pass over a file whose frame 0 was delivered (see the module doc)."""

    def __init__(self, declared: int | None, fps: float) -> None:
        self.declared = declared
        self.horizon = min(120, max(16, round(2.0 * fps))) if fps > 0.0 else 16
        self.timestamps = fps > 0.0  # False once the timestamps proved unusable
        self.silent_slots = 0  # frame slots skipped by jumps with no sign of damage (not counted)
        self.silent_jumps = 0
        self.largest_jump = (0, 0)  # (slots, index of the frame before it) of the largest silent jump
        self.top = 0  # highest frame index delivered (from timestamps)
        self.pos = 1  # frames accounted for, delivered or counted (the file position)
        self._held: set[int] = set()  # jumped-over indices not counted yet (a late frame may still come)
        self._damage_until = -1  # jumps up to this index count: failed reads came just before
        self._unexplained = 0  # failed reads of the current damage that no jump has accounted for yet
        self._unexplained_at = 0
        self.slack = 2 + (declared or 0) // 100  # declared counts are approximate (estimates, edit lists)

    def frame(self, index: int | None, failed: int) -> list[Gap]:
        """A frame decoded after ``failed`` failed reads; ``index`` from its timestamp (None: none)."""
        if index is not None and self.timestamps and not self._plausible(index, failed):
            self.timestamps = False
        if index is None or not self.timestamps:
            gaps = self._release(everything=True)
            if failed:
                gaps.append(Gap(self.pos, failed, "failed reads"))
            self.pos += failed + 1
            return gaps
        if failed:
            if not self._unexplained:
                self._unexplained_at = self.top + 1
            self._unexplained += failed
            self._damage_until = max(index, self.top) + self.horizon
        if index <= self.top:  # late: it was held as lost, or damage garbled its timestamp
            self._held.discard(index)
            return self._release()
        jump = index - self.top - 1
        if jump and (failed > 0 or self.top <= self._damage_until):
            self._held.update(range(self.top + 1, index))
            self._unexplained = 0
        elif jump:
            self.silent_slots += jump
            self.silent_jumps += 1
            self.largest_jump = max(self.largest_jump, (jump, self.top))
        self.top = index
        self.pos = max(self.pos + 1, index + 1)
        return self._release()

    def end(self) -> list[Gap]:
        """The pass is over: everything held, and failed reads no jump explained, are counted."""
        return self._release(everything=True)

    def shortfall(self) -> int:
        """Declared frames neither delivered nor counted: past the last frame that decoded."""
        return max(0, self.declared - self.pos) if self.declared is not None else 0

    def _plausible(self, index: int, failed: int) -> bool:
        """Timestamps that stand still or run back outside damage, or leave the declared count, are garbled."""
        if index <= self.top and index not in self._held and not failed and self.top > self._damage_until:
            return False
        return 0 <= index <= self.top + 100_000 and (self.declared is None or index < self.declared + self.slack)

    def _release(self, everything: bool = False) -> list[Gap]:
        # All at once, when the newest is past the horizon: one warning per stretch, not per frame.
        gone = sorted(self._held) if everything or (self._held and max(self._held) < self.top - self.horizon) else []
        self._held.difference_update(gone)
        gaps: list[Gap] = []
        for i in gone:
            if gaps and gaps[-1].first + gaps[-1].count == i:
                last = gaps.pop()
                gaps.append(Gap(last.first, last.count + 1, last.evidence))
            else:
                gaps.append(Gap(i, 1, "timestamps"))
        if self._unexplained and (everything or self.top > self._damage_until):
            gaps.append(Gap(self._unexplained_at, self._unexplained, "failed reads"))
            self.pos += self._unexplained
            self._unexplained = 0
        return gaps
