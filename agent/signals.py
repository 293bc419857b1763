"""Signal handling for the daemon: SIGINT/SIGTERM stop, SIGHUP reloads.

Handlers only set flags (the supervisor loop acts on them), so they are safe whatever the
main thread was doing. A second SIGINT/SIGTERM gets the default action: a stuck shutdown can
always be interrupted from the terminal.
"""

from __future__ import annotations

import logging
import signal
import threading
import types
from collections.abc import Callable

__all__ = ["install_handlers"]

logger = logging.getLogger(__name__)


def install_handlers(on_stop: Callable[[], None], on_reload: Callable[[], None]) -> Callable[[], None] | None:
    """Install the handlers; returns a function restoring the previous ones (None off the main
    thread, where Python does not allow signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, _frame: types.FrameType | None) -> None:
        logger.info("%s received: stopping (again to force)", signal.Signals(signum).name)
        on_stop()
        signal.signal(signum, signal.SIG_DFL)  # a second signal acts at once

    def reload(_signum: int, _frame: types.FrameType | None) -> None:
        on_reload()

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, reload)

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    return restore
