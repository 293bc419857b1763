"""Capped exponential back-off for reconnecting live sources."""

from __future__ import annotations

import random

from agent.sources.config import ReconnectConfig

__all__ = ["Backoff"]


class Backoff:
    """Delays ``initial_s, initial_s·m, initial_s·m², …`` capped at ``max_s``; ``reset()`` starts over.

    With ``jitter = j > 0`` each delay is multiplied by a uniform factor in ``[1 − j, 1 + j]``
    (then capped), so a fleet of cameras that lost the same server does not reconnect in
    lock-step. Jitter is off by default, which keeps the sequence deterministic:

    >>> b = Backoff(0.5, 4.0, 2.0)
    >>> [b.next_delay() for _ in range(6)]
    [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    """

    def __init__(
        self, initial_s: float, max_s: float, multiplier: float = 2.0, jitter: float = 0.0, seed: int | None = None
    ) -> None:
        if not initial_s > 0:
            raise ValueError(f"initial_s must be > 0, but got {initial_s}")
        if max_s < initial_s:
            raise ValueError(f"max_s must be >= initial_s ({initial_s}), but got {max_s}")
        if multiplier < 1.0:
            raise ValueError(f"multiplier must be >= 1, but got {multiplier}")
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), but got {jitter}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self.jitter = jitter
        self._rng = random.Random(seed)
        self._next = initial_s
        self._attempts = 0

    @classmethod
    def from_config(cls, cfg: ReconnectConfig) -> Backoff:
        """A back-off with the settings of a ``reconnect:`` config section."""
        return cls(cfg.initial_s, cfg.max_s, cfg.multiplier, cfg.jitter)

    @property
    def attempts(self) -> int:
        """Delays handed out since the last ``reset()``."""
        return self._attempts

    def next_delay(self) -> float:
        """The delay to wait before the next attempt, in seconds; grows for the following call."""
        delay = self._next
        self._next = min(self._next * self.multiplier, self.max_s)
        self._attempts += 1
        if self.jitter:
            delay = min(delay * self._rng.uniform(1.0 - self.jitter, 1.0 + self.jitter), self.max_s)
        return delay

    def reset(self) -> None:
        """Start over at ``initial_s`` (call after a success)."""
        self._next = self.initial_s
        self._attempts = 0
