"""``edge-guard install-service``: install the systemd unit, a camera's config and the user.

What it does (``--dry-run`` prints the same steps and changes nothing)::

    <prefix>/etc/systemd/system/edge-guard@.service    ExecStart= -> this venv's edge-guard
    <prefix>/etc/systemd/system/edge-guard.target
    <prefix>/etc/systemd/system/edge-guard@.service.d/jetson-devices.conf   (Jetson only)
    <prefix>/etc/edge-guard/<camera>.yaml               validated first: invalid => exit 78
    <prefix>/etc/edge-guard/credentials/                0700, empty 0600 placeholders
    useradd --system ... edge-guard                     only as root with --prefix / (else printed)

and prints the ``systemctl`` commands to run. The unit files are read from the source checkout's
``systemd/`` folder (``--units-dir`` to point elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import pwd
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from agent import exitcodes
from agent.config import GuardConfig, load_config, referenced_file_errors
from agent.credentials import CMD_HMAC_KEY, MQTT_PASSWORD, TLS_KEY
from agent.datafiles import data_dir
from agent.errors import ConfigError
from agent.fsutil import check_output
from agent.sources.opencv_source import is_live_uri

__all__ = [
    "UNIT_NAME",
    "InstallPlan",
    "add_parser",
    "find_units_dir",
    "jetson_device_dropin",
    "main",
    "plan_install",
    "render_unit",
    "run_install",
]

UNIT_NAME = "edge-guard@.service"
TARGET_NAME = "edge-guard.target"
DROPIN_NAME = "jetson-devices.conf"
CREDENTIAL_NAMES: tuple[str, ...] = (MQTT_PASSWORD, TLS_KEY, CMD_HMAC_KEY)
GROUPS: tuple[str, ...] = ("video", "render")
_CAMERA_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: useradd's portable user names (shadow-utils without relaxed naming).
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Jetson's integrated GPU and its memory manager: no stable device-group names, so list the nodes.
_JETSON_GLOBS: tuple[str, ...] = ("nvhost-*", "nvmap", "nvgpu/*/*", "nvsciipc", "host1x-fence")


@dataclass
class InstallPlan:
    """Everything install-service will do, in order; built first so --dry-run can print it."""

    dirs: list[tuple[Path, int]] = field(default_factory=list)
    files: list[tuple[Path, bytes, int, bool]] = field(default_factory=list)  # path, data, mode, overwrite
    commands: list[tuple[list[str], bool]] = field(default_factory=list)  # argv, run it (else print)
    warnings: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


def find_units_dir(explicit: Path | None = None) -> Path:
    """The folder holding ``edge-guard@.service``: ``explicit``, the package's copy (wheel) or the
    source checkout (`agent.datafiles.data_dir`), or ./systemd."""
    candidates = [explicit] if explicit is not None else [
        data_dir("systemd"),
        Path.cwd() / "systemd",
    ]
    for cand in candidates:
        if cand is not None and (cand / UNIT_NAME).is_file() and (cand / TARGET_NAME).is_file():
            return cand
    looked = ", ".join(str(c) for c in candidates if c is not None)
    raise ConfigError(
        f"unit files not found: expected {UNIT_NAME} and {TARGET_NAME} in {looked}; "
        "pass --units-dir <checkout>/systemd"
    )


def default_exec_path() -> Path:
    """The ``edge-guard`` script next to the running interpreter (the venv's bin/)."""
    # Not resolved: a venv's bin/python is a symlink to the system python, and following it
    # would lose the venv.
    return Path(sys.executable).absolute().parent / "edge-guard"


def _systemd_quote(path: Path) -> str:
    text = str(path).replace("%", "%%")  # '%' starts a specifier in unit files
    if re.search(r"[\s\"'\\]", text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def render_unit(template: str, exec_path: Path) -> str:
    """The unit text with ``ExecStart=`` pointing at ``exec_path`` (arguments kept)."""
    lines = template.splitlines(keepends=True)
    hits = [i for i, ln in enumerate(lines) if ln.startswith("ExecStart=")]
    if len(hits) != 1:
        raise ConfigError(f"the unit template must have exactly one ExecStart= line, but it has {len(hits)}")
    i = hits[0]
    _, _, rest = lines[i].partition("=")
    parts = rest.strip().split(maxsplit=1)
    args = parts[1] if len(parts) == 2 else ""
    lines[i] = f"ExecStart={_systemd_quote(exec_path)} {args}".rstrip() + "\n"
    return "".join(lines)


def jetson_device_dropin(dev_root: Path = Path("/dev")) -> str | None:
    """A drop-in allowing the Jetson GPU nodes present under ``dev_root``; None if there are none.

    DeviceAllow= paths are resolved when the service starts, so listing the nodes that exist on
    this box is exact (re-run install-service after a JetPack upgrade).
    """
    nodes = sorted({p for pattern in _JETSON_GLOBS for p in dev_root.glob(pattern) if not p.is_dir()})
    if not nodes:
        return None
    lines = [
        "# Written by `edge-guard install-service`: the Jetson GPU device nodes found on this box.",
        "[Service]",
    ]
    lines += [f"DeviceAllow=/dev/{p.relative_to(dev_root).as_posix()} rw" for p in nodes]
    return "\n".join(lines) + "\n"


def _sandbox_warnings(cfg: GuardConfig, exec_path: Path, camera: str) -> list[str]:
    out: list[str] = []
    hidden = ("/home/", "/root/", "/tmp/", "/var/tmp/", "/run/user/")
    if any(str(exec_path).startswith(h) for h in hidden):
        out.append(
            f"{exec_path} is under a path the unit hides (ProtectHome=yes, PrivateTmp=yes): the service "
            "will fail with status 203/EXEC. Install the venv under /opt/edge-guard instead."
        )
    paths = {"model.path": cfg.model.path, "model.labels": cfg.model.labels, "policy.profile": cfg.policy.profile}
    uri = cfg.source.uri.strip().removeprefix("file://")
    if "://" not in uri and not is_live_uri(uri):  # a video file or an image folder (not a stream or a device)
        paths["source.uri"] = Path(uri)
    for name, value in paths.items():
        if value is None:
            continue
        if not value.is_absolute():
            out.append(
                f"{name} is relative ({value}); under systemd it resolves against the working "
                f"directory /var/lib/edge-guard/{camera}. Prefer an absolute path."
            )
        elif any(str(value).startswith(h) for h in hidden):
            out.append(f"{name} ({value}) is under a path the unit hides; move it under /opt or /var/lib")
    if cfg.camera_id != camera:
        out.append(
            f"the config's camera_id is {cfg.camera_id!r} but the instance is {camera!r}; topics and logs "
            "use camera_id, the unit and journal use the instance name. Make them equal."
        )
    return out


def plan_install(
    camera: str,
    config: Path,
    *,
    prefix: Path = Path("/"),
    user: str = "edge-guard",
    dry_run: bool = False,
    units_dir: Path | None = None,
    exec_path: Path | None = None,
    dev_root: Path = Path("/dev"),
    is_root: bool | None = None,
) -> InstallPlan:
    """Validate the inputs and list every step; raises ConfigError on an invalid config."""
    if not _CAMERA_RE.match(camera):
        raise ValueError(f"--camera must be 1-64 of letters, digits, '_', '.', '-', but got {camera!r}")
    if not _USER_RE.match(user):
        raise ValueError(f"--user must be a system user name (lower-case letters, digits, '_', '-'; starting with a "
                         f"letter or '_'; at most 32), but got {user!r}")
    if prefix.exists() and not prefix.is_dir():
        raise ValueError(f"--prefix {prefix} is a file; it must be the root folder to install under")
    cfg = load_config(config)  # ConfigError lists every problem
    # What check-config checks (relative paths are warned about below: they resolve in the service's folder).
    # Only when installing into this machine's own root: a --prefix image or a dry run may lack them.
    missing = referenced_file_errors(cfg, absolute_only=True)
    if missing and prefix == Path("/") and not dry_run:
        raise ConfigError(f"{len(missing)} config error(s) in {config}:\n" + "\n".join(f"  - {m}" for m in missing))
    units = find_units_dir(units_dir)
    exe = exec_path if exec_path is not None else default_exec_path()
    if not exe.is_file():
        raise ConfigError(f"ExecStart target {exe} does not exist: run install-service from the venv's edge-guard")
    root = (os.geteuid() == 0) if is_root is None else is_root
    act = not dry_run and root and prefix == Path("/")

    plan = InstallPlan()
    plan.warnings += _sandbox_warnings(cfg, exe, camera)
    plan.warnings += [f"{m} (on this machine; the service will need it)" for m in missing]
    etc_systemd = prefix / "etc/systemd/system"
    etc_eg = prefix / "etc/edge-guard"
    cred_dir = etc_eg / "credentials"
    plan.dirs += [(etc_systemd, 0o755), (etc_eg, 0o755), (cred_dir, 0o700)]

    unit = render_unit((units / UNIT_NAME).read_text(encoding="utf-8"), exe)
    if user != "edge-guard":
        unit = re.sub(r"(?m)^User=.*$", f"User={user}", unit)
    plan.files.append((etc_systemd / UNIT_NAME, unit.encode(), 0o644, True))
    plan.files.append((etc_systemd / TARGET_NAME, (units / TARGET_NAME).read_bytes(), 0o644, True))
    dropin = jetson_device_dropin(dev_root)
    if dropin is not None:
        dropin_dir = etc_systemd / f"{UNIT_NAME}.d"
        plan.dirs.append((dropin_dir, 0o755))
        plan.files.append((dropin_dir / DROPIN_NAME, dropin.encode(), 0o644, True))
    plan.files.append((etc_eg / f"{camera}.yaml", config.read_bytes(), 0o644, True))
    # LoadCredential= fails the start when a source file is missing: empty placeholders, never
    # overwriting a real secret.
    plan.files += [(cred_dir / name, b"", 0o600, False) for name in CREDENTIAL_NAMES]

    try:
        pwd.getpwnam(user)
    except KeyError:
        plan.commands.append((
            ["useradd", "--system", "--user-group", "--home-dir", "/var/lib/edge-guard", "--no-create-home",
             "--shell", "/usr/sbin/nologin", "--comment", "edge-guard camera guard", user],
            act,
        ))
    for group in GROUPS:
        try:
            grp.getgrnam(group)
        except KeyError:
            plan.commands.append((["groupadd", "--system", group], act))

    inst = f"edge-guard@{camera}"
    plan.next_steps += [
        "systemctl daemon-reload",
        f"systemctl enable --now {inst}",
        "systemctl enable edge-guard.target",
        f"systemctl status {inst}",
        f"journalctl -u {inst} -f",
    ]
    return plan


def _write(path: Path, data: bytes, mode: int, overwrite: bool, out: TextIO) -> None:
    if path.exists():
        if not overwrite:
            out.write(f"  keep     {path} (exists)\n")
            return
        old = path.read_bytes()
        if old == data:
            out.write(f"  same     {path}\n")
            return
        backup = path.with_name(path.name + ".old")
        backup.write_bytes(old)
        out.write(f"  replace  {path} (previous kept as {backup.name})\n")
    else:
        out.write(f"  write    {path}\n")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, mode)  # os.open's mode is masked by the umask
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:  # name the file being installed, not its temporary copy
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def apply_plan(
    plan: InstallPlan, *, dry_run: bool, out: TextIO, runner: Callable[[list[str]], int] | None = None
) -> int:
    """Carry out (or, with ``dry_run``, only print) the plan; returns an exit code."""
    for warning in plan.warnings:
        out.write(f"WARNING: {warning}\n")
    out.write("Files (dry run, nothing written):\n" if dry_run else "Files:\n")
    for path, mode in plan.dirs:
        if dry_run:
            out.write(f"  mkdir    {path} (mode {mode:o})\n")
        elif not path.is_dir():
            out.write(f"  mkdir    {path}\n")
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, mode)
        elif mode == 0o700:  # the credentials folder: enforce even if it existed
            os.chmod(path, mode)
    for path, data, mode, overwrite in plan.files:
        if dry_run:
            out.write(f"  write    {path} ({len(data)} bytes, mode {mode:o})\n")
        else:
            _write(path, data, mode, overwrite, out)
    run = runner if runner is not None else (lambda argv: subprocess.run(argv, check=False).returncode)
    to_print: list[str] = []
    for argv, act in plan.commands:
        if act:
            out.write(f"  run      {shlex.join(argv)}\n")
            rc = run(argv)
            if rc != 0:
                out.write(f"ERROR: {shlex.join(argv)} exited with {rc}\n")
                return exitcodes.FAILURE
        else:
            to_print.append(shlex.join(argv))
    if to_print:
        out.write("Run as root (not done: dry run, not root, or --prefix is not /):\n")
        out.writelines(f"  {c}\n" for c in to_print)
    out.write(
        "Secrets: write them into /etc/edge-guard/credentials/ (root, 0600; empty placeholders stand in "
        "for the ones the config does not use); the unit passes them with LoadCredential=.\n"
    )
    out.write("Then:\n")
    out.writelines(f"  {c}\n" for c in plan.next_steps)
    return exitcodes.OK


def run_install(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The ``install-service`` command (``args`` from `add_parser`); returns the exit code."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        plan = plan_install(
            args.camera, Path(args.config), prefix=Path(args.prefix), user=args.user, dry_run=args.dry_run,
            units_dir=args.units_dir, exec_path=args.exec_path,
        )
        if not args.dry_run and Path(args.prefix) != Path("/"):  # a staging root: unwritable => nothing installed
            check_output(Path(args.prefix), "--prefix", folder=True)
    except ConfigError as exc:
        err.write(f"edge-guard install-service: {exc}\n")
        return exitcodes.CONFIG
    except ValueError as exc:
        err.write(f"edge-guard install-service: {exc}\n")
        return exitcodes.USAGE
    try:
        return apply_plan(plan, dry_run=args.dry_run, out=out)
    except OSError as exc:  # a full disk, a read-only etc/ below a writable prefix, / without root
        err.write(f"edge-guard install-service: --prefix {args.prefix}: cannot write {exc.filename} "
                  f"({exc.strerror or exc}); stopped there: run it again once that is fixed\n")
        return exitcodes.FAILURE


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``install-service``; the parsed args carry ``func`` = `run_install`."""
    p = subparsers.add_parser(
        "install-service",
        help="install the systemd unit, a camera's config and the service user",
        description="Install the systemd unit template and target, a camera's validated config, the "
        "credentials folder and the service user, then print the systemctl commands. See docs/deploy.md.",
    )
    p.add_argument("--camera", required=True, help="camera / instance name (edge-guard@NAME)")
    p.add_argument("--config", required=True, type=Path, help="config file; validated, then installed")
    p.add_argument("--prefix", type=Path, default=Path("/"), help="root to install under (default /)")
    p.add_argument("--dry-run", action="store_true", help="print every step, change nothing")
    p.add_argument("--user", default="edge-guard", help="service user (default edge-guard)")
    p.add_argument("--units-dir", type=Path, default=None, help="folder with the unit files (default: checkout)")
    p.add_argument(
        "--exec", dest="exec_path", type=Path, default=None,
        help="edge-guard executable for ExecStart= (default: the one next to this Python)",
    )
    p.set_defaults(func=run_install)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agent.service install-service ...`` (the same as the CLI subcommand)."""
    parser = argparse.ArgumentParser(prog="edge-guard")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
