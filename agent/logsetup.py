"""Logging set-up for the command line: stderr, levels, a camera prefix.

Under systemd (``JOURNAL_STREAM`` set) the timestamp is left out because journald adds its own;
the level stays in the text so ``journalctl -t edge-guard-cam1 | grep ERROR`` works.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Protocol

__all__ = ["LEVELS", "Writable", "configure_logging", "redirect", "set_camera", "set_level", "sparse"]

LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")

_HANDLER_NAME = "edge-guard-stderr"


class _CameraFilter(logging.Filter):
    """Adds ``record.camera`` (the camera prefix) to every record passing the handler."""

    def __init__(self, camera: str) -> None:
        super().__init__()
        self.camera = camera

    def filter(self, record: logging.LogRecord) -> bool:
        record.camera = self.camera
        return True


def _our_handler() -> logging.Handler | None:
    for handler in logging.getLogger().handlers:
        if handler.get_name() == _HANDLER_NAME:
            return handler
    return None


def configure_logging(level: str = "INFO", camera: str = "-") -> None:
    """Install (once) a stderr handler on the root logger; later calls only update it."""
    root = logging.getLogger()
    handler = _our_handler()
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        under_journald = bool(os.environ.get("JOURNAL_STREAM"))
        fmt = "%(levelname)s [%(camera)s] %(name)s: %(message)s"
        if not under_journald:
            fmt = "%(asctime)s " + fmt
        handler.setFormatter(logging.Formatter(fmt))
        handler.addFilter(_CameraFilter(camera))
        root.addHandler(handler)
    set_camera(camera)
    set_level(level)


def set_camera(camera: str) -> None:
    """Change the camera prefix of the stderr handler (after the config is loaded)."""
    handler = _our_handler()
    if handler is None:
        return
    for flt in handler.filters:
        if isinstance(flt, _CameraFilter):
            flt.camera = camera


class Writable(Protocol):
    """Anything a logging.StreamHandler can write to."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


def redirect(stream: Writable) -> Writable | None:
    """Send the stderr handler's output to ``stream``; returns the previous stream (None if no handler)."""
    handler = _our_handler()
    if not isinstance(handler, logging.StreamHandler):
        return None
    previous: Writable | None = handler.setStream(stream)
    return previous


def set_level(level: str) -> None:
    """Set the root log level by name (DEBUG, INFO, WARNING, ERROR)."""
    name = level.upper()
    if name not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, but got {level!r}")
    logging.getLogger().setLevel(name)


def sparse(n: int, first: int = 3, every: int = 100) -> bool:
    """Whether the ``n``-th occurrence (from 1) of a repeated problem is logged: the first ``first``,
    then every ``every``-th, so a problem that repeats every frame neither floods nor goes quiet.

    >>> [n for n in range(1, 301) if sparse(n)]
    [1, 2, 3, 100, 200, 300]
    """
    return n <= first or n % every == 0
