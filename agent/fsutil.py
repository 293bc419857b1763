"""Atomic file writes (readers see the old file or the new one, never half of it), the check
every command runs on its output paths before it starts working, and the write of such an output."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from agent.errors import ConfigError, GuardError

__all__ = ["check_output", "write_atomic", "write_output", "writing_output"]


def check_output(
    path: Path, flag: str, *, inputs: Iterable[str | Path | None] = (), folder: bool = False,
    suffixes: tuple[str, ...] = (),
) -> None:
    """Refuse, before any work, an output ``path`` (given as ``flag``) that cannot be written or
    would overwrite one of this command's ``inputs``: a ConfigError naming the flag.

    ``folder``: the output is a folder (it may exist; an existing file there is refused); else a
    file (an existing folder is refused). ``suffixes``: the file names it accepts (e.g. a PNG
    writer's). The folder the output goes into is created here, so that a path under a file or an
    unwritable place fails now, not after minutes of measuring.
    """
    here = path  # as the command will write it (a quoted '~' is not expanded there either)
    for src in inputs:
        if src is not None and str(src) and Path(src).expanduser().exists() and (
            os.path.realpath(here) == os.path.realpath(Path(src).expanduser())
        ):
            raise ConfigError(f"{flag} {path} is also an input of this command: it would be overwritten; "
                              "write the output somewhere else")
    if folder and here.exists() and not here.is_dir():
        raise ConfigError(f"{flag} {path} is an existing file; the output is a folder")
    if not folder and here.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name")
    if suffixes and not folder and here.suffix.lower() not in suffixes:
        raise ConfigError(f"{flag} {path}: the file name must end in {' or '.join(suffixes)}")
    target = here if folder else here.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create the folder {target} ({exc.strerror or exc})") from None
    if not os.access(target, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: the folder {target} is not writable by this user")
    # os.access says yes to root everywhere (even /proc): create a file there, as the command will.
    probe = target / f".{here.name}.{secrets.token_hex(6)}.probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write there: creating a file in {target} failed "
                          f"({exc.strerror or exc})") from None


@contextlib.contextmanager
def writing_output(path: Path, flag: str) -> Iterator[None]:
    """Around the write of a command's output file, after its `check_output`: a write that still
    fails (a full disk, the folder removed meanwhile) is a GuardError naming ``flag`` and ``path``
    (exit 1), not a traceback about a temporary file."""
    try:
        yield
    except OSError as exc:
        raise GuardError(f"{flag} {path}: cannot write there: {exc.strerror or exc}") from exc


def write_output(path: Path, data: bytes, flag: str) -> None:
    """`write_atomic` of a command's output file (`writing_output`)."""
    with writing_output(path, flag):
        write_atomic(path, data)


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
