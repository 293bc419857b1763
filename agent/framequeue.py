"""The bounded hand-over between the camera reader and the worker.

When the worker falls behind, `DropOldestQueue.put` drops the OLDEST waiting item and returns how
many it dropped, so the reader never blocks on a slow model (a live camera must be read at its
own pace, or its driver buffers stale frames) and the freshest frame is the one that gets guarded.
`put_wait` is the lossless variant for sources read faster than real time (files), where
waiting costs nothing. `close` lets the consumer drain what is left and then see the end.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

__all__ = ["DropOldestQueue"]

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A thread-safe FIFO of at most ``maxsize`` items that drops the oldest when full.

    >>> q: DropOldestQueue[int] = DropOldestQueue(2)
    >>> [q.put(i) for i in range(3)]
    [0, 0, 1]
    >>> q.get_many(10, timeout=0.0)
    [1, 2]
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, but got {maxsize}")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> int:
        """Append ``item``; returns the number of old items dropped to make room (0 or 1)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("put() on a closed DropOldestQueue")
            dropped = 0
            while len(self._items) >= self.maxsize:
                self._items.popleft()
                dropped += 1
            self._items.append(item)
            self.dropped += dropped
            self._cond.notify()
            return dropped

    def put_wait(self, item: T, timeout: float | None = None) -> bool:
        """Append ``item`` once there is room (lossless back-pressure); False on timeout.

        For sources read faster than real time (files, a synthetic camera without pacing):
        there is no camera to keep up with, so the reader waits instead of dropping.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self._items) >= self.maxsize:
                if self._closed:
                    raise RuntimeError("put_wait() on a closed DropOldestQueue")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if self._closed:
                raise RuntimeError("put_wait() on a closed DropOldestQueue")
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get_many(self, max_items: int, timeout: float | None = None) -> list[T]:
        """Wait up to ``timeout`` s for at least one item, then take up to ``max_items`` at once.

        Returns ``[]`` on timeout, or when the queue is closed and empty (check `finished`).
        """
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, but got {max_items}")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                self._cond.wait(remaining)
            out: list[T] = []
            while self._items and len(out) < max_items:
                out.append(self._items.popleft())
            self._cond.notify_all()  # room for a waiting put_wait()
            return out

    def close(self) -> None:
        """No more puts; consumers drain the rest and then get ``[]`` immediately."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        """Closed and drained: the consumer is done."""
        with self._cond:
            return self._closed and not self._items

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
