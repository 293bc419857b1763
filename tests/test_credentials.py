"""agent.credentials: $CREDENTIALS_DIRECTORY first, then a file; secrets never printed."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytest

from agent.credentials import (
    MAX_SECRET_BYTES,
    Secret,
    configured_secret_path,
    credentials_dir,
    find_credential,
    read_configured_secret,
    read_secret,
)
from agent.errors import ConfigError

PASSWORD = "hunter2-Ü"


@pytest.fixture
def cred_dir(tmp_path: Path) -> Path:
    d = tmp_path / "creds"
    d.mkdir()
    (d / "mqtt-password").write_text(PASSWORD + "\n", encoding="utf-8")
    os.chmod(d / "mqtt-password", 0o400)
    return d


def test_credentials_directory_wins_over_the_file(cred_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "pw"
    other.write_text("from-file\n")
    env = {"CREDENTIALS_DIRECTORY": str(cred_dir)}
    secret = read_secret("mqtt-password", other, env=env)
    assert secret.reveal() == PASSWORD  # one trailing newline stripped
    assert secret.source == str(cred_dir / "mqtt-password")
    # Not in the credentials directory: the file from the config is used.
    other_secret = read_secret("cmd-hmac-key", other, env=env)
    assert other_secret.reveal() == "from-file"


def test_file_only_outside_systemd(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_bytes(b"abc\r\n")
    os.chmod(f, 0o600)
    assert read_secret("mqtt-password", f, env={}).reveal() == "abc"
    assert read_secret("mqtt-password", f, env={}, strip_newline=False).reveal_bytes() == b"abc\r\n"


def test_binary_key_bytes_are_kept(tmp_path: Path) -> None:
    f = tmp_path / "key"
    raw = bytes(range(256))
    f.write_bytes(raw)
    os.chmod(f, 0o600)
    secret = read_secret("cmd-hmac-key", f, env={}, strip_newline=False)
    assert secret.reveal_bytes() == raw and len(secret) == 256
    with pytest.raises(ConfigError, match="must be UTF-8 text"):
        secret.reveal()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"x" * (MAX_SECRET_BYTES + 1), f"at most {MAX_SECRET_BYTES} bytes"),
    ],
    ids=["empty", "only-newline", "too-big"],
)
def test_unusable_files_are_config_errors(tmp_path: Path, content: bytes, match: str) -> None:
    f = tmp_path / "pw"
    f.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        read_secret("mqtt-password", f, env={})


def test_missing_everywhere_says_where_it_looked(tmp_path: Path, cred_dir: Path) -> None:
    with pytest.raises(ConfigError) as err:
        read_secret("tls-key", tmp_path / "nope", env={"CREDENTIALS_DIRECTORY": str(cred_dir)})
    msg = str(err.value)
    assert str(cred_dir / "tls-key") in msg and str(tmp_path / "nope") in msg
    assert "LoadCredential" in msg
    with pytest.raises(ConfigError, match=r"\$CREDENTIALS_DIRECTORY \(not set\), no file path"):
        find_credential("tls-key", None, env={})


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "dir-not-file"
    f.mkdir()
    with pytest.raises(ConfigError, match="not found"):
        read_secret("mqtt-password", f, env={})
    if os.geteuid() != 0:  # root reads 000 files anyway
        g = tmp_path / "locked"
        g.write_text("x")
        os.chmod(g, 0)
        with pytest.raises(ConfigError, match="cannot read credential"):
            read_secret("mqtt-password", g, env={})


def test_find_credential_returns_a_path_for_tls(cred_dir: Path) -> None:
    (cred_dir / "tls-key").write_text("-----BEGIN PRIVATE KEY-----\n")
    assert find_credential("tls-key", None, env={"CREDENTIALS_DIRECTORY": str(cred_dir)}) == cred_dir / "tls-key"


@pytest.mark.parametrize("name", ["", "../etc/shadow", "a/b", "x" * 256])
def test_bad_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="credential name must match"):
        find_credential(name, None, env={})


def test_credentials_dir_must_be_a_directory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert credentials_dir({}) is None
    with caplog.at_level(logging.WARNING, logger="agent.credentials"):
        assert credentials_dir({"CREDENTIALS_DIRECTORY": str(tmp_path / "missing")}) is None
    assert "not a directory" in caplog.text


def test_secret_never_shows_its_value(cred_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        secret = read_secret("mqtt-password", env={"CREDENTIALS_DIRECTORY": str(cred_dir)})
        logging.getLogger("test").info("got %s %r", secret, secret)
    for text in (str(secret), repr(secret), f"{secret}", f"{secret:>40}", caplog.text):
        assert PASSWORD not in text
    assert "redacted" in repr(secret)
    assert "loaded from" in caplog.text  # the path is logged, the value is not
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        hash(secret)


def test_secret_equality_is_by_value() -> None:
    assert Secret("a", b"x", "/p") == Secret("b", b"x", "/q")
    assert Secret("a", b"x", "/p") != Secret("a", b"y", "/p")
    assert Secret("a", b"x", "/p") != "x"


def test_loose_permissions_warn_with_path_and_mode_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "pw"
    f.write_text(PASSWORD)
    os.chmod(f, 0o644)
    with caplog.at_level(logging.WARNING, logger="agent.credentials"):
        read_secret("mqtt-password", f, env={})
    assert "mode 644" in caplog.text and str(f) in caplog.text
    assert PASSWORD not in caplog.text


# -- a config's <x>_file / <x>_credential pair (the MQTT password, TLS key and command key) -------------
def test_configured_pair_looks_only_where_the_config_says(cred_dir: Path, tmp_path: Path) -> None:
    env = {"CREDENTIALS_DIRECTORY": str(cred_dir)}
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    os.chmod(f, 0o600)
    assert read_configured_secret(None, None, what="MQTT password", env=env) is None
    # the file option reads that file even though the unit loaded a credential of the usual name
    from_file = read_configured_secret(f, None, what="MQTT password", env=env)
    assert from_file is not None and from_file.reveal() == "from-file" and from_file.source == str(f)
    from_cred = read_configured_secret(None, "mqtt-password", what="MQTT password", env=env)
    assert from_cred is not None and from_cred.reveal() == PASSWORD
    assert configured_secret_path(None, "mqtt-password", what="x", env=env) == cred_dir / "mqtt-password"
    # a path option is returned as given: the caller says what is wrong with a missing PEM file
    assert configured_secret_path(tmp_path / "key.pem", None, what="TLS client key", env=env) == tmp_path / "key.pem"


@pytest.mark.parametrize(
    ("file", "credential", "in_systemd", "match"),
    [
        (None, "tls-key", False, r"TLS client key is configured as credential 'tls-key' but \$CREDENTIALS_DIRECTORY"),
        (None, "tls-key", True, r"TLS client key credential 'tls-key' not found: expected a file .*tls-key"),
        ("missing.pem", None, False, r"TLS client key file .*missing.pem does not exist"),
    ],
    ids=["no-credentials-directory", "credential-missing", "file-missing"],
)
def test_configured_pair_errors_name_the_secret_and_the_place(
    cred_dir: Path, file: str | None, credential: str | None, in_systemd: bool, match: str
) -> None:
    env = {"CREDENTIALS_DIRECTORY": str(cred_dir)} if in_systemd else {}
    path = cred_dir.parent / file if file is not None else None
    with pytest.raises(ConfigError, match=match):
        read_configured_secret(path, credential, what="TLS client key", env=env)
