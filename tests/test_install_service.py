"""`edge-guard install-service` into a temporary --prefix (no root actions, nothing outside tmp)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import unwritable_folder

from agent import exitcodes
from agent.errors import ConfigError
from agent.service import apply_plan, main, plan_install

VALID = "camera_id: cam1\nsource:\n  uri: synthetic://clean\n"
INVALID = "camera_id: cam1\nsorce: {}\nsource:\n  fps: -2\n"
ABSENT_USER = "edge-guard-test-no-such-user"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def exe() -> Path:
    """The venv's edge-guard when installed (what install-service uses by default), else /bin/true."""
    script = Path(sys.executable).absolute().parent / "edge-guard"
    return script if script.is_file() else Path("/bin/true")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["install-service", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_installs_units_config_and_credentials(
    tmp_path: Path, exe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "in.yaml"
    cfg.write_text(VALID)
    prefix = tmp_path / "root"
    rc, out, err = run(
        ["--camera", "cam1", "--config", str(cfg), "--prefix", str(prefix), "--exec", str(exe), "--user", ABSENT_USER],
        capsys,
    )
    assert (rc, err) == (0, "")
    unit = prefix / "etc/systemd/system/edge-guard@.service"
    text = unit.read_text()
    assert f"\nExecStart={exe} run --config /etc/edge-guard/%i.yaml\n" in text
    assert f"\nUser={ABSENT_USER}\n" in text
    assert (prefix / "etc/systemd/system/edge-guard.target").is_file()
    assert (prefix / "etc/edge-guard/cam1.yaml").read_text() == VALID
    assert _mode(prefix / "etc/edge-guard/cam1.yaml") == 0o644
    creds = prefix / "etc/edge-guard/credentials"
    assert _mode(creds) == 0o700
    for name in ("mqtt-password", "tls-key", "cmd-hmac-key"):
        assert (creds / name).read_bytes() == b""
        assert _mode(creds / name) == 0o600
    # Not root on this prefix: the user is not created, the command is printed.
    assert "useradd --system --user-group --home-dir /var/lib/edge-guard --no-create-home" in out
    assert ABSENT_USER in out
    for line in (
        "systemctl daemon-reload",
        "systemctl enable --now edge-guard@cam1",
        "systemctl enable edge-guard.target",
        "systemctl status edge-guard@cam1",
        "journalctl -u edge-guard@cam1",
    ):
        assert line in out
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:  # the installed unit itself is clean
        res = subprocess.run(
            [analyze, "verify", "--man=no", str(unit.parent / "edge-guard@cam1.service")],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert (res.returncode, res.stdout + res.stderr) == (0, "")


def test_rerun_keeps_secrets_and_backs_up_a_changed_config(
    tmp_path: Path, exe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "in.yaml"
    cfg.write_text(VALID)
    prefix = tmp_path / "root"
    argv = ["--camera", "cam1", "--config", str(cfg), "--prefix", str(prefix), "--exec", str(exe)]
    assert run(argv, capsys)[0] == 0
    secret = prefix / "etc/edge-guard/credentials/mqtt-password"
    secret.write_text("s3cret\n")
    os.chmod(prefix / "etc/edge-guard/credentials", 0o755)  # someone loosened it
    changed = VALID + "policy:\n  alpha_flag: 0.02\n"
    cfg.write_text(changed)
    rc, out, _ = run(argv, capsys)
    assert rc == 0
    assert secret.read_text() == "s3cret\n"
    assert "s3cret" not in out
    assert _mode(prefix / "etc/edge-guard/credentials") == 0o700
    assert (prefix / "etc/edge-guard/cam1.yaml").read_text() == changed
    assert (prefix / "etc/edge-guard/cam1.yaml.old").read_text() == VALID
    assert f"same     {prefix}/etc/systemd/system/edge-guard@.service" in out
    assert f"keep     {secret}" in out


def test_invalid_config_exits_78_and_writes_nothing(
    tmp_path: Path, exe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(INVALID)
    prefix = tmp_path / "root"
    rc, out, err = run(["--camera", "cam1", "--config", str(cfg), "--prefix", str(prefix), "--exec", str(exe)], capsys)
    assert rc == exitcodes.CONFIG == 78
    assert "source.fps" in err and "sorce: unknown key" in err
    assert out == ""
    assert not prefix.exists()


def test_missing_config_file_exits_78(tmp_path: Path, exe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["--camera", "cam1", "--config", str(tmp_path / "nope.yaml"), "--prefix", str(tmp_path)], capsys)
    assert rc == 78 and "cannot read config file" in err


def test_bad_camera_name_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "in.yaml"
    cfg.write_text(VALID)
    rc, _, err = run(["--camera", "cam 1/../x", "--config", str(cfg), "--prefix", str(tmp_path / "r")], capsys)
    assert rc == exitcodes.USAGE and "--camera must be" in err


def test_dry_run_prints_and_writes_nothing(tmp_path: Path, exe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "in.yaml"
    cfg.write_text(VALID)
    prefix = tmp_path / "root"
    rc, out, _ = run(
        ["--camera", "cam1", "--config", str(cfg), "--prefix", str(prefix), "--exec", str(exe), "--dry-run"], capsys
    )
    assert rc == 0
    assert not prefix.exists()
    assert "dry run, nothing written" in out
    assert f"{prefix}/etc/systemd/system/edge-guard@.service" in out
    assert f"{prefix}/etc/edge-guard/credentials (mode 700)" in out
    assert "systemctl enable --now edge-guard@cam1" in out


@pytest.mark.parametrize(
    ("prefix", "flags", "acts"),
    [
        ("/", {"dry_run": False, "is_root": True}, True),  # the only case that creates the user
        ("/", {"dry_run": True, "is_root": True}, False),  # dry run
        ("/", {"dry_run": False, "is_root": False}, False),  # not root
        ("/tmp/x", {"dry_run": False, "is_root": True}, False),  # another root
    ],
)
def test_user_is_created_only_as_root_on_the_real_root(
    tmp_path: Path, exe: Path, prefix: str, flags: dict[str, bool], acts: bool
) -> None:
    cfg = tmp_path / "in.yaml"
    cfg.write_text(VALID)
    # plan_install only plans; nothing is written or run here.
    plan = plan_install(
        "cam1", cfg, prefix=Path(prefix), user=ABSENT_USER, exec_path=exe,
        dry_run=flags["dry_run"], is_root=flags["is_root"],
    )
    useradd = [act for argv, act in plan.commands if argv[0] == "useradd"]
    assert useradd == [acts]
    assert plan.commands[0][0][-1] == ABSENT_USER


def test_commands_run_through_the_runner_and_failures_stop(tmp_path: Path, exe: Path) -> None:
    cfg = tmp_path / "in.yaml"
    cfg.write_text(VALID)
    plan = plan_install("cam1", cfg, prefix=tmp_path / "r", user=ABSENT_USER, exec_path=exe)
    plan.commands = [(argv, True) for argv, _ in plan.commands]  # as if root on /
    ran: list[list[str]] = []

    def runner(argv: list[str]) -> int:
        ran.append(argv)
        return 9

    out = io.StringIO()
    rc = apply_plan(plan, dry_run=False, out=out, runner=runner)
    assert rc == exitcodes.FAILURE
    assert ran and ran[0][0] == "useradd"
    assert "exited with 9" in out.getvalue()


def test_jetson_nodes_get_a_dropin(tmp_path: Path, exe: Path) -> None:
    cfg = tmp_path / "in.yaml"
    cfg.write_text(VALID)
    dev = tmp_path / "dev"
    (dev / "nvgpu/igpu0").mkdir(parents=True)
    for name in ("nvmap", "nvhost-ctrl-gpu", "nvgpu/igpu0/power", "video0"):
        (dev / name).touch()
    plan = plan_install("cam1", cfg, prefix=tmp_path / "r", exec_path=exe, dev_root=dev)
    dropins = [data.decode() for path, data, _, _ in plan.files if path.name == "jetson-devices.conf"]
    assert len(dropins) == 1
    lines = [ln for ln in dropins[0].splitlines() if ln.startswith("DeviceAllow=")]
    assert lines == [
        "DeviceAllow=/dev/nvgpu/igpu0/power rw",
        "DeviceAllow=/dev/nvhost-ctrl-gpu rw",
        "DeviceAllow=/dev/nvmap rw",
    ]
    # An x86 box (no Jetson nodes) gets none.
    plan = plan_install("cam1", cfg, prefix=tmp_path / "r", exec_path=exe, dev_root=tmp_path / "empty")
    assert not [p for p, _, _, _ in plan.files if p.name == "jetson-devices.conf"]


def test_sandbox_pitfalls_are_warned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "in.yaml"
    cfg.write_text("camera_id: other\nmodel:\n  path: models/m.onnx\nsource:\n  uri: clips/yard.mp4\n")
    fake_exe = tmp_path / "edge-guard"  # under /tmp: hidden by PrivateTmp
    fake_exe.write_text("#!/bin/sh\n")
    rc, out, _ = run(
        ["--camera", "cam1", "--config", str(cfg), "--prefix", str(tmp_path / "r"), "--exec", str(fake_exe)], capsys
    )
    assert rc == 0
    assert "203/EXEC" in out
    assert "model.path is relative" in out
    assert "source.uri is relative (clips/yard.mp4)" in out
    assert "camera_id is 'other' but the instance is 'cam1'" in out


def test_missing_exec_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "in.yaml"
    cfg.write_text(VALID)
    rc, _, err = run(
        ["--camera", "cam1", "--config", str(cfg), "--prefix", str(tmp_path / "r"), "--exec", str(tmp_path / "x")],
        capsys,
    )
    assert rc == 78 and "does not exist" in err


def test_refuses_what_the_service_could_not_use(tmp_path: Path, exe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An absolute model path that does not exist (what check-config rejects: refused when installing
    into this machine, a warning for a --prefix image), a user name useradd would refuse, a --prefix
    that is a file: nothing is installed."""
    cfg = tmp_path / "in.yaml"
    cfg.write_text(VALID + f"model:\n  path: {tmp_path}/missing.onnx\n")
    with pytest.raises(ConfigError, match=rf"model.path: file not found \(got '{tmp_path}/missing.onnx'\)"):
        plan_install("cam1", cfg, prefix=Path("/"), exec_path=exe, is_root=False)
    prefix = tmp_path / "r"
    rc, out, _ = run(["--camera", "cam1", "--config", str(cfg), "--prefix", str(prefix), "--exec", str(exe),
                      "--dry-run"], capsys)
    assert rc == 0 and "model.path: file not found" in out and "the service will need it" in out
    cfg.write_text(VALID)
    rc, _, err = run(["--camera", "cam1", "--config", str(cfg), "--prefix", str(prefix), "--exec", str(exe),
                      "--user", "bad user!"], capsys)
    assert rc == 2 and "--user must be a system user name" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, _, err = run(["--camera", "cam1", "--config", str(cfg), "--prefix", str(blocker), "--exec", str(exe)], capsys)
    assert rc == 2 and "is a file; it must be the root folder" in err
    assert not prefix.exists()


def test_a_prefix_that_cannot_be_written_exits_78_before_installing(
    tmp_path: Path, exe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prefix in /proc (unwritable even for root): one line naming --prefix, no traceback; a dry run
    writes nothing, so it still prints its plan."""
    cfg = tmp_path / "cam1.yaml"
    cfg.write_text(VALID)
    proc = unwritable_folder()
    for prefix, says in ((proc / "inst", "cannot create the folder"), (proc, "cannot write there")):
        rc, out, err = run(["--camera", "cam1", "--config", str(cfg), "--prefix", str(prefix), "--exec", str(exe)],
                           capsys)
        assert rc == exitcodes.CONFIG, err
        assert err.startswith(f"edge-guard install-service: --prefix {prefix}: {says}") and "Traceback" not in err
        assert "write " not in out  # nothing was installed
    rc, out, _ = run(["--camera", "cam1", "--config", str(cfg), "--prefix", str(proc / "inst"), "--exec", str(exe),
                      "--dry-run"], capsys)
    assert rc == exitcodes.OK and f"{proc}/inst/etc/edge-guard/cam1.yaml" in out


def test_a_write_that_fails_while_installing_is_one_line_not_a_traceback(
    tmp_path: Path, exe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The prefix is writable but its etc is a file (the first mkdir fails), or the unit's temporary
    copy cannot be created: exit 1 naming --prefix and the file being installed, not its temporary copy."""
    cfg = tmp_path / "cam1.yaml"
    cfg.write_text(VALID)
    prefix = tmp_path / "root"
    prefix.mkdir()
    (prefix / "etc").write_text("not a folder")
    argv = ["--camera", "cam1", "--config", str(cfg), "--prefix", str(prefix), "--exec", str(exe)]
    rc, _, err = run(argv, capsys)
    assert rc == exitcodes.FAILURE
    assert err.startswith(f"edge-guard install-service: --prefix {prefix}: cannot write {prefix}/etc")
    assert "Traceback" not in err
    (prefix / "etc").unlink()
    (prefix / "etc/systemd/system/.edge-guard@.service.tmp").mkdir(parents=True)  # in the way of the copy
    rc, _, err = run(argv, capsys)
    assert rc == exitcodes.FAILURE
    assert err.startswith(f"edge-guard install-service: --prefix {prefix}: cannot write "
                          f"{prefix}/etc/systemd/system/edge-guard@.service (Is a directory)"), err
