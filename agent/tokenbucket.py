"""A token bucket for rate-limiting sampled frames (file sink, MQTT frames)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate_per_s`` tokens per second, at most ``burst`` saved up; `take` spends one.

    >>> t = [0.0]
    >>> b = TokenBucket(rate_per_s=1.0, burst=2.0, clock=lambda: t[0])
    >>> [b.take() for _ in range(3)]
    [True, True, False]
    >>> t[0] = 1.0; b.take()
    True
    """

    def __init__(self, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s < 0:
            raise ValueError(f"rate_per_s must be >= 0, but got {rate_per_s}")
        if burst < 0:
            raise ValueError(f"burst must be >= 0, but got {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._last = clock()
        self._lock = threading.Lock()

    def take(self, n: float = 1.0) -> bool:
        """Spend ``n`` tokens if available; False (and nothing spent) otherwise."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
            self._last = now
            if self._tokens >= n:
                self._tokens -= n
                return True
            return False
