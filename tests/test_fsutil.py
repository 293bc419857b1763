"""write_atomic: whole files only, the umask respected, nothing left behind on failure; check_output
and write_output: an output that cannot be written is a one-line error naming the option."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from helpers import unwritable_folder

from agent.errors import ConfigError, GuardError
from agent.fsutil import check_output, write_atomic, write_output


def test_writes_replaces_and_creates_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "f.bin"
    write_atomic(target, b"one")
    assert target.read_bytes() == b"one"
    write_atomic(target, b"two" * 1000, fsync=True)
    assert target.read_bytes() == b"two" * 1000
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]  # no temporary file left


def test_mode_follows_the_umask_unless_given(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "default", b"x")
        write_atomic(tmp_path / "explicit", b"x", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "default").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "explicit").stat().st_mode) == 0o600


def test_a_failed_write_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    write_atomic(target, b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_check_output_refuses_before_any_work(tmp_path: Path) -> None:
    config = tmp_path / "cam.yaml"
    config.write_text("camera_id: cam1\n")
    with pytest.raises(ConfigError, match=r"--out .*cam\.yaml is also an input of this command"):
        check_output(config, "--out", inputs=[None, config])
    with pytest.raises(ConfigError, match=r"also an input"):  # the same file by another name
        check_output(tmp_path / "sub" / ".." / "cam.yaml", "--out", inputs=[config])
    with pytest.raises(ConfigError, match=r"--out .* is a folder; give a file name"):
        check_output(tmp_path, "--out")
    with pytest.raises(ConfigError, match=r"--out .*cam\.yaml is an existing file; the output is a folder"):
        check_output(config, "--out", folder=True)
    with pytest.raises(ConfigError, match=r"--plot .*r\.txt: the file name must end in \.png or \.jpg"):
        check_output(tmp_path / "r.txt", "--plot", suffixes=(".png", ".jpg"))
    with pytest.raises(ConfigError, match=r"--out .*cam\.yaml/r\.json: cannot create the folder"):
        check_output(config / "r.json", "--out")
    assert config.read_text() == "camera_id: cam1\n"  # nothing touched
    check_output(tmp_path / "new" / "r.json", "--out", inputs=[config])  # fine: its folder is made
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "r.json").exists()


def test_check_output_refuses_a_folder_no_file_can_be_created_in_even_as_root() -> None:
    """/proc: os.access says yes to root, creating a file there fails: caught by creating one."""
    proc = unwritable_folder()
    with pytest.raises(ConfigError, match=r"^--out /proc/x\.json: cannot write there: creating a file in /proc failed"):
        check_output(proc / "x.json", "--out")
    with pytest.raises(ConfigError, match=r"^--prefix /proc/inst: cannot create the folder /proc/inst"):
        check_output(proc / "inst", "--prefix", folder=True)
    with pytest.raises(ConfigError, match=r"^--out /proc: cannot write there"):
        check_output(proc, "--out", folder=True)


def test_write_output_names_the_flag_and_path_not_a_temporary_file(tmp_path: Path) -> None:
    """A write that fails after the check (the folder gone, a full disk): a GuardError (exit 1)."""
    with pytest.raises(GuardError, match=r"^--out /proc/x\.json: cannot write there: ") as info:
        write_output(unwritable_folder() / "x.json", b"{}", "--out")
    assert ".tmp" not in str(info.value)
    write_output(tmp_path / "r.json", b"{}", "--out")
    assert (tmp_path / "r.json").read_bytes() == b"{}" and [p.name for p in tmp_path.iterdir()] == ["r.json"]
