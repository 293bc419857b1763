"""Secrets (MQTT password, TLS private key, command-signing key) without ever logging them.

Where a secret comes from, first match wins:

1. ``$CREDENTIALS_DIRECTORY/<name>`` — systemd's ``LoadCredential=<name>:/etc/edge-guard/credentials/
   <name>`` copies the file there, readable by this service only (the unit loads ``mqtt-password``,
   ``tls-key`` and ``cmd-hmac-key``).
2. An explicit file path from the config (e.g. ``mqtt.password_file``), for runs outside systemd.

A secret is returned as a `Secret`, whose ``repr``/``str``/format never show the value: only
`Secret.reveal` / `Secret.reveal_bytes` do, at the one place the value is handed to a library.
Log lines name the credential and the file, never the content.

Example::

    pw = read_secret("mqtt-password", cfg.password_file)   # ConfigError if neither exists
    client.username_pw_set(cfg.username, pw.reveal())
    key_path = find_credential("tls-key", cfg.tls.keyfile)  # paths for ssl.load_cert_chain

Config sections that offer a pair of options, ``<x>_file`` (a path) and ``<x>_credential`` (a
systemd credential name), at most one of them set (the MQTT password, TLS key and command key),
use `read_configured_secret` / `configured_secret_path`: the option that is set is the only
place looked at, so the config says exactly where the secret comes from.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from agent.errors import ConfigError

__all__ = [
    "CMD_HMAC_KEY",
    "MAX_SECRET_BYTES",
    "MQTT_PASSWORD",
    "TLS_KEY",
    "Secret",
    "configured_secret_path",
    "credentials_dir",
    "find_credential",
    "read_configured_secret",
    "read_secret",
]

logger = logging.getLogger(__name__)

#: Credential names the systemd unit loads (LoadCredential=NAME:/etc/edge-guard/credentials/NAME).
MQTT_PASSWORD = "mqtt-password"
TLS_KEY = "tls-key"
CMD_HMAC_KEY = "cmd-hmac-key"

#: A larger file is not a password or key; refuse it rather than keep it in memory.
MAX_SECRET_BYTES = 64 * 1024

_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,255}$")


class Secret:
    """A secret value that does not print itself. Compare with ``==`` (constant time)."""

    __slots__ = ("_value", "name", "source")

    def __init__(self, name: str, value: bytes, source: str) -> None:
        self.name = name
        #: Where it came from (a path), safe to log.
        self.source = source
        self._value = value

    def reveal(self) -> str:
        """The value as text (UTF-8); ConfigError if it is not valid UTF-8."""
        try:
            return self._value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"credential {self.name!r} from {self.source} must be UTF-8 text, but it has "
                f"a non-UTF-8 byte at offset {exc.start}"
            ) from None

    def reveal_bytes(self) -> bytes:
        """The raw value (e.g. an HMAC key)."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return hmac.compare_digest(self._value, other._value)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-free but secret: keep out of sets/dicts

    def __repr__(self) -> str:
        return f"Secret(name={self.name!r}, source={self.source!r}, value=<redacted>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"credential name must match {_NAME_RE.pattern}, but got {name!r}")


def credentials_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """``$CREDENTIALS_DIRECTORY`` as a Path if it is set and a directory, else None."""
    env = os.environ if env is None else env
    raw = env.get("CREDENTIALS_DIRECTORY")
    if not raw:
        return None
    path = Path(raw)
    if not path.is_dir():
        logger.warning("CREDENTIALS_DIRECTORY=%s is not a directory; ignoring it", raw)
        return None
    return path


def find_credential(
    name: str, file: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> Path:
    """Path of credential ``name``: ``$CREDENTIALS_DIRECTORY/name`` if present, else ``file``.

    For libraries that want a path (``ssl.SSLContext.load_cert_chain(keyfile=...)``). Raises
    ConfigError saying where it looked when neither exists.
    """
    _check_name(name)
    looked: list[str] = []
    cred_dir = credentials_dir(env)
    if cred_dir is not None:
        candidate = cred_dir / name
        if candidate.is_file():
            return candidate
        looked.append(str(candidate))
    else:
        looked.append("$CREDENTIALS_DIRECTORY (not set)")
    if file is not None:
        path = Path(file)
        if path.is_file():
            return path
        looked.append(str(path))
    else:
        looked.append("no file path in the config")
    raise ConfigError(
        f"credential {name!r} not found; looked in: {', '.join(looked)}. Under systemd, create "
        f"/etc/edge-guard/credentials/{name} (LoadCredential=); otherwise set the file path in the config"
    )


def read_secret(
    name: str,
    file: str | Path | None = None,
    *,
    strip_newline: bool = True,
    env: Mapping[str, str] | None = None,
) -> Secret:
    """Read credential ``name`` (see the module docstring for the search order).

    One trailing ``\\n`` / ``\\r\\n`` is removed when ``strip_newline`` (``echo secret > file``).
    Empty or oversized files are a ConfigError; a file readable by group/others outside
    ``$CREDENTIALS_DIRECTORY`` gets a warning (path and mode only).
    """
    path = find_credential(name, file, env=env)
    return _read_path(name, f"credential {name!r}", path, strip_newline=strip_newline, env=env)


def configured_secret_path(
    file: str | Path | None,
    credential: str | None,
    *,
    what: str,
    env: Mapping[str, str] | None = None,
) -> Path | None:
    """Where a config's ``<x>_file`` / ``<x>_credential`` pair points; None when neither is set.

    ``credential`` means ``$CREDENTIALS_DIRECTORY/<credential>`` and nothing else: a ConfigError
    says so when the variable is not set or the file is missing. ``file`` is returned as given
    (the caller reports a missing file in its own terms). ``what`` names the secret in messages
    (e.g. ``"MQTT password"``). The config's validators allow at most one of the two.
    """
    if credential is None:
        return None if file is None else Path(file)
    _check_name(credential)
    cred_dir = credentials_dir(env)
    if cred_dir is None:
        raise ConfigError(
            f"the {what} is configured as credential {credential!r} but $CREDENTIALS_DIRECTORY is not set: "
            f"run under systemd with LoadCredential={credential}:/path/to/secret, or use the *_file option instead"
        )
    path = cred_dir / credential
    if not path.is_file():
        raise ConfigError(
            f"the {what} credential {credential!r} not found: expected a file {path} "
            f"(check LoadCredential={credential}:... in the unit)"
        )
    return path


def read_configured_secret(
    file: str | Path | None,
    credential: str | None,
    *,
    what: str,
    strip_newline: bool = True,
    env: Mapping[str, str] | None = None,
) -> Secret | None:
    """Read the secret a ``<x>_file`` / ``<x>_credential`` pair points to; None when neither is set.

    Where it looks: `configured_secret_path`; how it reads (newline, size, mode checks): `read_secret`.
    """
    path = configured_secret_path(file, credential, what=what, env=env)
    if path is None:
        return None
    if credential is None and not path.is_file():
        raise ConfigError(f"the {what} file {path} does not exist (or is not a file); check the *_file option")
    name = credential if credential is not None else what
    return _read_path(name, f"the {what}", path, strip_newline=strip_newline, env=env)


def _read_path(
    name: str, label: str, path: Path, *, strip_newline: bool, env: Mapping[str, str] | None
) -> Secret:
    """Read and check the secret at ``path``; ``label`` names it in messages, never the value."""
    try:
        st = path.stat()
        if st.st_size > MAX_SECRET_BYTES:
            raise ConfigError(f"{label} at {path} must be at most {MAX_SECRET_BYTES} bytes, but it has {st.st_size}")
        value = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {label} at {path}: {exc.strerror or type(exc).__name__}; "
            "check the file's owner and mode (the service user must be able to read it)"
        ) from None
    if strip_newline:
        if value.endswith(b"\r\n"):
            value = value[:-2]
        elif value.endswith(b"\n"):
            value = value[:-1]
    if not value:
        raise ConfigError(f"{label} at {path} is empty; write the secret into the file")
    cred_dir = credentials_dir(env)
    in_cred_dir = cred_dir is not None and path.parent == cred_dir
    if not in_cred_dir and stat.S_IMODE(st.st_mode) & 0o077:
        logger.warning(
            "%s at %s has mode %o: readable by group/others; use chmod 600",
            label, path, stat.S_IMODE(st.st_mode),
        )
    logger.info("%s loaded from %s (%d bytes)", label, path, len(value))
    return Secret(name, value, str(path))
