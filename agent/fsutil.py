"""Atomic file writes: readers see the old file or the new one, never half of it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, data: bytes, *, fsync: bool = False, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    The folder is created if needed. ``fsync=True`` also flushes the data to the disk before the
    rename (survives a power cut; costs a device flush, so leave it off for frequent small files
    on SD cards). The new file gets ``mode`` if given, else what ``open()`` would give it (0666
    minus the umask). On any error the temporary file is removed and the error re-raised
    (``OSError`` for I/O problems).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL + a random name: concurrent writers of the same path never share a temporary file.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)  # os.open's mode is masked by the umask
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
