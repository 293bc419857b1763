"""Terminal output for humans: a progress bar and a redrawn live table.

On a TTY both redraw in place with ANSI escapes; otherwise (a pipe, a CI log, journald) they
print a plain line now and then, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

__all__ = ["LiveView", "ProgressBar", "ViewStream", "format_table"]

_CLEAR_LINE = "\x1b[2K"
_UP = "\x1b[{n}A"
_CLEAR_DOWN = "\x1b[J"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """A plain-text table; columns listed in ``right`` are right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        pairs = enumerate(zip(row, widths, strict=True))
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in pairs)

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells[1:])
    return "\n".join(s.rstrip() for s in out)


class ProgressBar:
    """``[#####-----] 120/300 frames  45.2 fps`` on stderr; a line per 10% when not a TTY."""

    def __init__(self, total: int, label: str = "frames", stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, done: int) -> None:
        """Show ``done`` of ``total`` (redraws at most 10 times a second on a TTY)."""
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw < 0.1 and done < self.total:
                return
            self._last_draw = now
            self.stream.write("\r" + self._text(done, now))
            self.stream.flush()
            return
        decile = min(10, done * 10 // self.total)
        if decile > self._last_decile:
            self._last_decile = decile
            self.stream.write(self._text(done, now) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _text(self, done: int, now: float) -> str:
        frac = min(1.0, done / self.total)
        filled = round(frac * self.width)
        rate = done / max(now - self._start, 1e-9)
        return f"[{'#' * filled}{'-' * (self.width - filled)}] {done}/{self.total} {self.label}  {rate:5.1f}/s"


class LiveView:
    """Redraws a block of text in place on a TTY; prints it every ``plain_every_s`` otherwise."""

    def __init__(self, stream: TextIO | None = None, plain_every_s: float = 5.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.plain_every_s = plain_every_s
        self._lines = 0
        self._last_plain = float("-inf")  # the first block is always shown

    def show(self, text: str, force: bool = False) -> None:
        """Draw ``text`` (several lines) replacing the previous block."""
        if self.tty:
            if self._lines:
                self.stream.write(_UP.format(n=self._lines) + "\r")
            lines = text.splitlines()
            self.stream.write("".join(f"{_CLEAR_LINE}{ln}\n" for ln in lines))
            self.stream.flush()
            self._lines = len(lines)
            return
        now = time.monotonic()
        if force or now - self._last_plain >= self.plain_every_s:
            self._last_plain = now
            self.stream.write(text + "\n\n")
            self.stream.flush()

    def write_above(self, text: str) -> None:
        """Print ``text`` (e.g. a log line) without tearing the live block: the block is erased,
        the text printed, and the next `show` draws the block again below it."""
        if self.tty and self._lines:
            self.stream.write(_UP.format(n=self._lines) + "\r" + _CLEAR_DOWN)
            self._lines = 0
        self.stream.write(text)
        self.stream.flush()

    def finish(self) -> None:
        """Stop redrawing in place (the last block stays on screen)."""
        self._lines = 0


class ViewStream:
    """A file-like object that writes through `LiveView.write_above` (for a logging handler)."""

    def __init__(self, view: LiveView) -> None:
        self.view = view

    def write(self, text: str) -> int:
        self.view.write_above(text)
        return len(text)

    def flush(self) -> None:
        self.view.stream.flush()
