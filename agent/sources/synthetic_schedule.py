"""Fault schedules of the synthetic camera: which fault is injected on which frames."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from agent.errors import SourceConfigError

__all__ = [
    "FAULT_NAMES",
    "FaultSchedule",
    "FaultWindow",
    "default_schedule",
    "parse_fault_windows",
]

FAULT_NAMES: tuple[str, ...] = (
    "blur",
    "dark",
    "overexposed",
    "glare",
    "noise",
    "frozen",
    "covered",
    "sticker",
    "fog",
    "color_cast",
    "scene_change",
)
"""Every fault the synthetic camera can inject, in the order the default scenario shows them."""


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """Frames ``start <= index < end`` carry ``fault``."""

    fault: str
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.fault not in FAULT_NAMES:
            raise SourceConfigError(f"fault must be one of {', '.join(FAULT_NAMES)}, but got {self.fault!r}")
        if not 0 <= self.start < self.end:
            raise SourceConfigError(
                f"fault window {self.fault} must satisfy 0 <= start < end, but got start={self.start}, end={self.end}"
            )

    @property
    def frames(self) -> int:
        return self.end - self.start


class FaultSchedule:
    """Non-overlapping fault windows, sorted by start, with an optional total length in frames."""

    def __init__(self, windows: Iterable[FaultWindow], total_frames: int | None = None) -> None:
        ordered = sorted(windows, key=lambda w: w.start)
        for a, b in itertools.pairwise(ordered):
            if b.start < a.end:
                raise SourceConfigError(
                    f"fault windows must not overlap, but {a.fault}:{a.start}:{a.end} overlaps "
                    f"{b.fault}:{b.start}:{b.end}"
                )
        if total_frames is not None and total_frames < 1:
            raise SourceConfigError(f"total_frames must be >= 1 or None, but got {total_frames}")
        self.windows: tuple[FaultWindow, ...] = tuple(ordered)
        self.total_frames = total_frames
        self._starts = [w.start for w in ordered]

    def window_at(self, index: int) -> FaultWindow | None:
        """The window containing frame ``index``, or None for a clean frame."""
        k = bisect.bisect_right(self._starts, index) - 1
        if k >= 0 and index < self.windows[k].end:
            return self.windows[k]
        return None

    def fault_at(self, index: int) -> str | None:
        """The fault injected on frame ``index`` (None: clean)."""
        w = self.window_at(index)
        return w.fault if w is not None else None

    def frames_by_fault(self) -> dict[str, int]:
        """Number of scheduled frames per fault (only frames before ``total_frames`` count)."""
        out: dict[str, int] = {}
        for w in self.windows:
            end = w.end if self.total_frames is None else min(w.end, self.total_frames)
            if end > w.start:
                out[w.fault] = out.get(w.fault, 0) + end - w.start
        return out

    def __iter__(self) -> Iterator[FaultWindow]:
        return iter(self.windows)

    def __len__(self) -> int:
        return len(self.windows)

    def __repr__(self) -> str:
        inner = ",".join(f"{w.fault}:{w.start}:{w.end}" for w in self.windows)
        return f"FaultSchedule({inner!r}, total_frames={self.total_frames})"


def parse_fault_windows(text: str) -> list[FaultWindow]:
    """Parse ``"blur:50:100,dark:120:160"`` (fault:start_frame:end_frame, end exclusive)."""
    windows: list[FaultWindow] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        parts = item.split(":")
        if len(parts) != 3:
            raise SourceConfigError(f"fault window must look like fault:start:end (e.g. blur:50:100), but got {item!r}")
        name, start, end = parts
        try:
            windows.append(FaultWindow(name, int(start), int(end)))
        except ValueError as exc:
            raise SourceConfigError(f"fault window start and end must be integers, but got {item!r}") from exc
    return windows


def default_schedule(
    clean_frames: int, fault_frames: int, gap_frames: int, faults: Sequence[str] = FAULT_NAMES
) -> FaultSchedule:
    """The demo: ``clean_frames`` clean, then each fault for ``fault_frames`` followed by ``gap_frames`` clean."""
    if clean_frames < 1 or fault_frames < 1 or gap_frames < 1:
        raise SourceConfigError(
            f"clean, fault and gap lengths must be >= 1 frame, but got {clean_frames}, {fault_frames}, {gap_frames}"
        )
    windows = []
    start = clean_frames
    for name in faults:
        windows.append(FaultWindow(name, start, start + fault_frames))
        start += fault_frames + gap_frames
    return FaultSchedule(windows, total_frames=start)
