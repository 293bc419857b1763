"""Reading a source from a one-shot command (calibrate, bench, stress).

The daemon waits for a live camera for ever: it reconnects with back-off inside ``read()``.
A command that is run once and expected to finish should not: `GiveUpReader` closes the
source from a watcher thread when a live camera has delivered no frame for ``timeout_s``, so
the blocked ``read()`` returns, and raises a SourceError that says so (exit 1: the camera may
answer later). Files and folders are never timed out: they end by themselves.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from agent.errors import SourceError
from agent.frame import Frame
from agent.sources.base import Source

__all__ = ["ONE_SHOT_TIMEOUT_S", "GiveUpReader"]

#: A live camera that delivers no frame for this long fails a one-shot command.
ONE_SHOT_TIMEOUT_S: float = 30.0


class GiveUpReader:
    """``read()`` of ``source``, giving up on a silent live camera after ``timeout_s``.

    >>> # with GiveUpReader(open_source(cfg.source, cfg.camera_id)) as reader:
    >>> #     frame = reader.read()   # None: ended; SourceError: no frame for timeout_s
    """

    def __init__(self, source: Source, timeout_s: float | None = None) -> None:
        self.source = source
        self.timeout_s = ONE_SHOT_TIMEOUT_S if timeout_s is None else timeout_s
        self._last = time.monotonic()
        self._expired = threading.Event()
        self._state_then = ""  # the source's state when it was given up on (close() ends it)
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="give-up-reader", daemon=True)
        if source.live:
            self._watcher.start()

    def read(self) -> Frame | None:
        frame = self.source.read()
        if frame is None and self._expired.is_set():
            raise SourceError(
                f"no frame from {self.source.uri} in {self.timeout_s:g} s (state {self._state_then}, "
                f"{self.source.reconnects} reconnects): is the camera on and reachable from here? "
                "(the daemon keeps retrying; this command gives up)"
            )
        self._last = time.monotonic()
        return frame

    def close(self) -> None:
        self._done.set()
        self.source.close()
        if self._watcher.is_alive():
            self._watcher.join()

    def __enter__(self) -> GiveUpReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            if time.monotonic() - self._last > self.timeout_s:
                self._state_then = self.source.state
                self._expired.set()
                self.source.close()  # a read() blocked in its back-off returns None
                return
