"""The systemd unit files: `systemd-analyze verify` clean, every hardening key present."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import exitcodes
from agent.config import load_config
from agent.service import jetson_device_dropin, render_unit

UNITS = Path(__file__).resolve().parent.parent / "systemd"
TEMPLATE = UNITS / "edge-guard@.service"
TARGET = UNITS / "edge-guard.target"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values in order (repeated keys such as DeviceAllow= accumulate)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(TEMPLATE.read_text(encoding="utf-8"))


def _exec_binary() -> Path:
    """An existing binary for ExecStart= (verify checks it): the venv's edge-guard, else /bin/true."""
    venv_script = Path(sys.executable).absolute().parent / "edge-guard"
    return venv_script if venv_script.is_file() else Path("/bin/true")


def _verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    env = dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER="")
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *[str(p) for p in paths]],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )


# Service keys: (key, expected values exactly, in order)
SERVICE_KEYS = [
    ("Type", ["notify"]),
    ("NotifyAccess", ["main"]),
    ("ExecStart", ["/usr/local/bin/edge-guard run --config /etc/edge-guard/%i.yaml"]),
    ("ExecReload", ["/bin/kill -HUP $MAINPID"]),
    ("Restart", ["on-failure"]),
    ("SyslogIdentifier", ["edge-guard-%i"]),
    ("User", ["edge-guard"]),
    ("SupplementaryGroups", ["video render"]),
    ("NoNewPrivileges", ["yes"]),
    ("ProtectSystem", ["strict"]),
    ("ProtectHome", ["yes"]),
    ("PrivateTmp", ["yes"]),
    ("StateDirectory", ["edge-guard/%i"]),
    ("CacheDirectory", ["edge-guard"]),
    ("DevicePolicy", ["closed"]),
    ("ProtectKernelTunables", ["yes"]),
    ("ProtectKernelModules", ["yes"]),
    ("ProtectControlGroups", ["yes"]),
    ("RestrictAddressFamilies", ["AF_UNIX AF_INET AF_INET6"]),
    ("LockPersonality", ["yes"]),
    ("RestrictRealtime", ["yes"]),
    ("SystemCallArchitectures", ["native"]),
    ("CapabilityBoundingSet", [""]),
    (
        "LoadCredential",
        [
            "mqtt-password:/etc/edge-guard/credentials/mqtt-password",
            "tls-key:/etc/edge-guard/credentials/tls-key",
            "cmd-hmac-key:/etc/edge-guard/credentials/cmd-hmac-key",
        ],
    ),
]


@pytest.mark.parametrize(("key", "expected"), SERVICE_KEYS, ids=[k for k, _ in SERVICE_KEYS])
def test_service_key(unit: dict[str, dict[str, list[str]]], key: str, expected: list[str]) -> None:
    assert unit["Service"].get(key) == expected


@pytest.mark.parametrize(
    "device",
    [
        "char-nvidia-frontend rw",  # major 195 on older drivers
        "char-nvidia rw",  # ... and on newer ones
        "/dev/nvidiactl rw",
        "char-nvidia-uvm rw",
        "/dev/nvidia-uvm rw",
        "/dev/nvidia-uvm-tools rw",
        "char-nvidia-caps rw",  # /dev/nvidia-caps/*
        "char-video4linux rw",  # /dev/video*
    ],
)
def test_device_allowed(unit: dict[str, dict[str, list[str]]], device: str) -> None:
    assert device in unit["Service"]["DeviceAllow"]


@pytest.mark.parametrize("key", ["WatchdogSec", "TimeoutStartSec", "TimeoutStopSec", "RestartSec"])
def test_timeouts_are_positive_seconds(unit: dict[str, dict[str, list[str]]], key: str) -> None:
    (value,) = unit["Service"][key]
    assert int(value) > 0


def test_start_timeout_leaves_room_for_an_engine_build(unit: dict[str, dict[str, list[str]]]) -> None:
    # The agent also sends EXTEND_TIMEOUT_USEC while building; this is the silent part only.
    assert int(unit["Service"]["TimeoutStartSec"][0]) >= 300
    assert int(unit["Service"]["TimeoutStopSec"][0]) >= 10


def test_config_errors_do_not_restart(unit: dict[str, dict[str, list[str]]]) -> None:
    (values,) = unit["Service"]["RestartPreventExitStatus"]
    assert str(exitcodes.CONFIG) in values.split()
    assert exitcodes.CONFIG == 78


def test_start_limits_in_unit_section(unit: dict[str, dict[str, list[str]]]) -> None:
    assert int(unit["Unit"]["StartLimitIntervalSec"][0]) > 0
    assert int(unit["Unit"]["StartLimitBurst"][0]) > 0
    assert unit["Unit"]["PartOf"] == ["edge-guard.target"]


def test_environment_points_libraries_at_writable_dirs(unit: dict[str, dict[str, list[str]]]) -> None:
    env = unit["Service"]["Environment"]
    assert "EDGE_GUARD_CACHE_DIR=%C/edge-guard" in env
    assert "EDGE_GUARD_STATE_DIR=%S/edge-guard/%i" in env
    assert "HOME=%S/edge-guard/%i" in env  # ProtectHome hides the real one


def test_memory_deny_write_execute_is_off_and_explained() -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    assert "MemoryDenyWriteExecute" not in parse_unit(text)["Service"]
    comment = [ln for ln in text.splitlines() if ln.startswith("#") and "MemoryDenyWriteExecute" in ln]
    assert comment and "NOT set" in comment[0]
    around = text[text.index(comment[0]):][:400]
    assert "ONNX Runtime" in around and "TensorRT" in around


def test_no_sandbox_option_that_hides_devices(unit: dict[str, dict[str, list[str]]]) -> None:
    for key in ("PrivateDevices", "PrivateUsers", "ProcSubset", "MemoryDenyWriteExecute"):
        assert key not in unit["Service"], key


def test_install_sections() -> None:
    assert parse_unit(TEMPLATE.read_text())["Install"]["WantedBy"] == ["edge-guard.target"]
    assert parse_unit(TARGET.read_text())["Install"]["WantedBy"] == ["multi-user.target"]


def test_example_config_is_valid() -> None:
    cfg = load_config(UNITS / "edge-guard.example.yaml")
    assert cfg.camera_id == "cam1"
    assert cfg.mqtt is not None and cfg.mqtt.password_credential == "mqtt-password"


def test_example_env_overrides_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = (UNITS / "edge-guard.env.example").read_text().splitlines()
    overrides = [ln.lstrip("#") for ln in lines if ln.lstrip("#").startswith("EDGE_GUARD_")]
    assert len(overrides) >= 3
    for line in overrides:
        key, _, value = line.partition("=")
        monkeypatch.setenv(key, value)
    cfg = load_config(UNITS / "edge-guard.example.yaml")
    assert cfg.logging.level == "DEBUG" and cfg.policy.alpha_flag == 0.005


needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (.ci/run installs systemd)"
)


@needs_analyze
def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    # verify needs ExecStart's binary to exist: point it at a real one, as install-service does.
    unit_text = render_unit(TEMPLATE.read_text(encoding="utf-8"), _exec_binary())
    (tmp_path / "edge-guard@.service").write_text(unit_text)
    shutil.copy(TARGET, tmp_path / "edge-guard.target")
    res = _verify([tmp_path / "edge-guard@cam1.service", tmp_path / "edge-guard.target"])
    # Warnings come with exit status 0, so any output at all is a failure.
    assert (res.returncode, res.stdout + res.stderr) == (0, "")


@needs_analyze
def test_systemd_analyze_verify_with_jetson_dropin(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    (dev / "nvgpu/igpu0").mkdir(parents=True)
    for name in ("nvmap", "nvhost-ctrl-gpu", "nvhost-gpu", "nvgpu/igpu0/ctrl"):
        (dev / name).touch()
    dropin = jetson_device_dropin(dev)
    assert dropin is not None
    units = tmp_path / "units"
    (units / "edge-guard@.service.d").mkdir(parents=True)
    (units / "edge-guard@.service").write_text(render_unit(TEMPLATE.read_text(), _exec_binary()))
    (units / "edge-guard@.service.d/jetson-devices.conf").write_text(dropin)
    res = _verify([units / "edge-guard@cam1.service"])
    assert (res.returncode, res.stdout + res.stderr) == (0, "")


@needs_analyze
def test_verify_check_does_catch_mistakes(tmp_path: Path) -> None:
    # The silent-output rule above is only worth something if verify speaks up on a bad unit.
    good = render_unit(TEMPLATE.read_text(), _exec_binary())
    text = good.replace("WatchdogSec=30", "WatchdogSec=30x\nProtectSytem=yes")
    (tmp_path / "edge-guard@.service").write_text(text)
    res = _verify([tmp_path / "edge-guard@cam1.service"])
    out = res.stdout + res.stderr
    assert "Unknown key 'ProtectSytem'" in out
    assert "30x" in out
