"""Secrets from files or systemd credentials (``LoadCredential=`` -> ``$CREDENTIALS_DIRECTORY``).

Secret values are returned to the caller and never logged or put in error messages;
only the file path or credential name is.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.errors import ConfigError

__all__ = ["credential_path", "read_secret", "secret_path"]


def credential_path(name: str) -> Path:
    """Path of systemd credential ``name``; ConfigError when not running with credentials."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ConfigError(
            f"credential {name!r} is configured but $CREDENTIALS_DIRECTORY is not set: run under systemd "
            f"with LoadCredential={name}:/path/to/secret, or use the *_file option instead"
        )
    path = Path(directory) / name
    if not path.is_file():
        raise ConfigError(
            f"credential {name!r} not found: expected a file {path} (check LoadCredential={name}:... in the unit)"
        )
    return path


def secret_path(file: Path | None, credential: str | None) -> Path | None:
    """The file holding a secret given as a path or a credential name (None when neither is set)."""
    if credential is not None:
        return credential_path(credential)
    return file


def read_secret(file: Path | None, credential: str | None, what: str) -> bytes | None:
    """Read a secret (trailing newline stripped); None when neither source is configured.

    ``what`` names the secret in error messages (e.g. ``"mqtt password"``).
    """
    path = secret_path(file, credential)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} from {path}: {exc.strerror or exc}") from exc
    data = data.rstrip(b"\r\n")
    if not data:
        raise ConfigError(f"the {what} file {path} is empty: expected the secret on its first line")
    return data
