"""The command line: exit codes, messages with field paths, no tracebacks for expected errors."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from helpers import flapping, scene_folder, unwritable_folder

from agent import REPO_ROOT, __version__, exitcodes
from agent.cli import build_parser, main
from agent.scoring.config import ALWAYS_RAISED
from agent.scoring.tamper import TAMPER_REASONS
from agent.sources.synthetic_scene import SyntheticScene
from agent.term import LiveView, ProgressBar, format_table
from agent.verdict import REASON_CODES

PY = sys.executable
SYNTH = "synthetic://custom?faults=dark:80:100&size=96x64"


def _cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("EDGE_GUARD_") and k != "NOTIFY_SOCKET"}
    return subprocess.run([PY, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or REPO_ROOT, env=env, check=False)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _config(tmp_path: Path, extra: str = "", uri: str = SYNTH, frames: int = 120) -> Path:
    return _write(tmp_path / "cam.yaml", f"""\
camera_id: cli
node: test
source:
  uri: "{uri}"
  max_frames: {frames}
calibration:
  frames: 60
file_sink:
  dir: {tmp_path / "out"}
{extra}""")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"edge-guard {__version__}"
    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"edge-guard {__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == exitcodes.USAGE
    assert "examples:" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["check-config", "run", "calibrate", "demo"])
def test_help_teaches_with_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and f"edge-guard {command}" in out


def test_optional_commands_are_registered_when_present() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    names = set(sub.choices)
    assert {"check-config", "run", "calibrate", "demo"} <= names
    assert "install-service" in names  # agent.service exists and exposes add_parser


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(REPO_ROOT / "configs" / "example.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: camera front-door (site warehouse-7")
    assert "source synthetic://default" in out and "model reference model" in out


def test_check_config_lists_every_error_with_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path / "bad.yaml", "policy:\n  alpha_flag: 3\n  alfa: 1\npipeline:\n  queue_size: 0\n")
    assert main(["check-config", str(bad)]) == exitcodes.CONFIG
    out = capsys.readouterr().out
    assert "INVALID: 3 config error(s)" in out
    for path in ("policy.alpha_flag", "policy.alfa", "pipeline.queue_size"):
        assert f"  - {path}:" in out


def test_check_config_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write(tmp_path / "c.yaml", f"model:\n  path: {tmp_path}/nope.onnx\npolicy:\n  profile: {tmp_path}/p.json\n")
    assert main(["check-config", str(cfg)]) == exitcodes.CONFIG
    out = capsys.readouterr().out
    assert f"model.path: file not found (got '{tmp_path}/nope.onnx')" in out
    assert "policy.profile: file not found" in out
    folder = _write(tmp_path / "d.yaml", f"model:\n  path: {tmp_path}\n")
    assert main(["check-config", str(folder)]) == exitcodes.CONFIG
    assert f"model.path: a folder, not a file (got '{tmp_path}')" in capsys.readouterr().out


def test_check_config_opens_the_model_and_the_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What run would refuse at start, check-config refuses too: a file that is not a model, a
    profile that is not one, or one made for another tile grid."""
    fake = _write(tmp_path / "model.onnx", "a JPEG renamed")
    cfg = _write(tmp_path / "c.yaml", f"model:\n  path: {fake}\n  preprocess:\n    size: [224, 224]\n")
    assert main(["check-config", str(cfg)]) == exitcodes.CONFIG
    assert f"  - model: cannot load ONNX model {fake}" in capsys.readouterr().out
    not_profile = _write(tmp_path / "p.json", '{"format": "edge-guard-bench"}')
    cfg = _write(tmp_path / "c.yaml", f"policy:\n  profile: {not_profile}\n")
    assert main(["check-config", str(cfg)]) == exitcodes.CONFIG
    assert "  - policy.profile: " in capsys.readouterr().out
    profile = tmp_path / "real.json"
    assert main(["calibrate", "--config", str(_config(tmp_path)), "--out", str(profile), "--no-progress"]) == 0
    capsys.readouterr()
    cfg = _write(tmp_path / "c.yaml", f"stats:\n  grid: [2, 2]\npolicy:\n  profile: {profile}\n")
    assert main(["check-config", str(cfg)]) == exitcodes.CONFIG
    out = capsys.readouterr().out
    assert "  - policy.profile: " in out and "grid" in out
    cfg = _write(tmp_path / "c.yaml", f"policy:\n  profile: {profile}\n")
    assert main(["check-config", str(cfg)]) == exitcodes.OK
    capsys.readouterr()
    # and what that policy flags with that profile: a looser alpha_flag flags smaller changes
    dark = {}
    for alpha in (0.01, 0.05):
        cfg = _write(tmp_path / "c.yaml", f"policy:\n  profile: {profile}\n  alpha_flag: {alpha}\n")
        assert main(["check-config", str(cfg)]) == exitcodes.OK
        out = capsys.readouterr().out
        assert f"what each test FLAGs on its own at policy.alpha_flag={alpha}" in out
        (line,) = [ln.split() for ln in out.splitlines() if ln.split()[:4] == ["dark", "mean", "luma", "below"]]
        dark[alpha] = float(line[4])
    assert dark[0.05] >= dark[0.01]
    every = json.dumps([c for c in REASON_CODES if c not in ALWAYS_RAISED])  # all a profile can have, disabled
    cfg = _write(tmp_path / "c.yaml", f"policy:\n  profile: {profile}\n  disabled_reasons: {every}\n")
    assert main(["check-config", str(cfg)]) == exitcodes.CONFIG
    assert "disables every test of profile" in capsys.readouterr().out


def test_run_bad_config_exits_78_without_traceback(tmp_path: Path) -> None:
    proc = _cli("run", "--config", str(_config(tmp_path, "policy:\n  alpha_flag: 2\n")))
    assert proc.returncode == exitcodes.CONFIG
    assert "edge-guard: error: 1 config error(s)" in proc.stderr
    assert "policy.alpha_flag: Input should be less than 1 (got 2)" in proc.stderr
    assert "Traceback" not in proc.stderr



def test_run_with_a_spool_folder_it_cannot_write_exits_78_naming_the_field(tmp_path: Path) -> None:
    """Exit 78, not 1: systemd does not restart it every few seconds for nothing."""
    extra = "mqtt:\n  host: 127.0.0.1\n  port: 1\n  spool:\n    path: /proc/eg-spool/s.sqlite\n"
    proc = _cli("run", "--config", str(_config(tmp_path, extra)))
    assert proc.returncode == exitcodes.CONFIG, proc.stderr
    assert "mqtt.spool.path /proc/eg-spool/s.sqlite: cannot create its lock file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_missing_config_file(tmp_path: Path) -> None:
    proc = _cli("run", "--config", str(tmp_path / "none.yaml"))
    assert proc.returncode == exitcodes.CONFIG
    assert f"cannot read config file {tmp_path}/none.yaml" in proc.stderr


def test_run_missing_model_exits_78(tmp_path: Path) -> None:
    proc = _cli("run", "--config", str(_config(tmp_path, f"model:\n  path: {tmp_path}/missing.onnx\n")))
    assert proc.returncode == exitcodes.CONFIG
    assert f"model file not found: {tmp_path}/missing.onnx" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreadable_video_is_a_clear_error(tmp_path: Path) -> None:
    # A source that cannot work as configured is a configuration error: restarting would loop.
    video = _write(tmp_path / "broken.avi", "this is not a video")
    proc = _cli("run", "--config", str(_config(tmp_path, uri=str(video))))
    assert proc.returncode == exitcodes.CONFIG
    assert f"edge-guard: error: cannot open video file {video}" in proc.stderr
    assert "Traceback" not in proc.stderr
    for uri, says in ((str(tmp_path / "gone.mp4"), "no such file or folder"),
                      ("synthetic://nosuch", "scenario must be one of")):
        proc = _cli("run", "--config", str(_config(tmp_path, uri=uri)))
        assert proc.returncode == exitcodes.CONFIG and says in proc.stderr, proc.stderr


def test_calibrate_then_run_then_mismatched_profile(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    profile = tmp_path / "profile.json"
    proc = _cli("calibrate", "--config", str(cfg), "--frames", "60", "--out", str(profile))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(profile.read_text())
    assert proc.stdout.startswith(f"profile {data['profile_id']} written to {profile}")
    assert "60 calibration frames (60 read)" in proc.stdout
    # the tamper tests' and warped's tolerances stay (Test.keeps_tolerance)
    dropped = all(t["tolerance"] == 0 for t in data["tests"] if t["name"] not in {*TAMPER_REASONS, "warped"})
    widened = sum(t["tolerance"] > 0 for t in data["tests"])
    assert ("exact conformal p-values" in proc.stdout) == dropped
    assert dropped or f"physical tolerances of {widened} tests" in proc.stdout
    assert "60/60 frames" in proc.stderr  # the progress bar (plain lines when not a TTY)
    # what each test flags on its own, in the statistics' units (tests/test_limits.py checks the values)
    assert "what each test FLAGs on its own at policy.alpha_flag=0.01" in proc.stdout
    assert any(ln.split()[:4] == ["dark", "mean", "luma", "below"] for ln in proc.stdout.splitlines()), proc.stdout
    assert (data["width"], data["height"], data["n_frames"]) == (96, 64, 60)

    guarded = _config(tmp_path, f"policy:\n  profile: {profile}\n")
    proc = _cli("run", "--config", str(guarded))
    assert proc.returncode == 0, proc.stderr
    # the journal keeps what the service flags: the limits table, logged once the profile is loaded
    assert f"guarding with profile {data['profile_id']}:" in proc.stderr and "mean luma below" in proc.stderr
    verdicts = [json.loads(ln) for ln in (tmp_path / "out" / "verdicts.jsonl").read_text().splitlines()]
    assert sum(v.get("fault") == "dark" for v in verdicts) >= 18  # 20 dark frames

    # the same profile with another tile grid: refused at start-up with exit 78
    other = _config(tmp_path, f"policy:\n  profile: {profile}\nstats:\n  grid: [2, 2]\n")
    proc = _cli("run", "--config", str(other))
    assert proc.returncode == exitcodes.CONFIG
    assert f"profile {data['profile_id']} was calibrated for" in proc.stderr and "grid 2x2" in proc.stderr

    # another frame size (a swapped camera): every frame BLOCKed with the reason 'resolution',
    # one warning, and the daemon runs on (reports, rather than leaving the camera unwatched)
    (tmp_path / "out" / "verdicts.jsonl").unlink()
    resized = _config(tmp_path, f"policy:\n  profile: {profile}\n", uri=SYNTH.replace("96x64", "64x64"))
    proc = _cli("run", "--config", str(resized))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("is 64x64 but profile") == 1 and "is for 96x64" in proc.stderr
    verdicts = [json.loads(ln) for ln in (tmp_path / "out" / "verdicts.jsonl").read_text().splitlines()]
    assert verdicts and {(v["decision"], v["reasons"][0]["code"]) for v in verdicts} == {("BLOCK", "resolution")}


def test_calibrate_on_a_source_that_flaps_between_two_sizes(tmp_path: Path) -> None:
    """Each size is calibrated on its own frames; the summary says which one the profile is for."""
    folder = scene_folder(tmp_path / "flap", flapping(60))
    profile = tmp_path / "p.json"
    proc = _cli("calibrate", "--config", str(_config(tmp_path, uri=str(folder), frames=60)), "--frames", "20",
                "--out", str(profile), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(profile.read_text())
    assert (data["width"], data["height"], data["n_frames"]) == (128, 96, 20)
    assert "20 calibration frames (39 read)" in proc.stdout
    assert ("the frame size changed 38 times while calibrating: the profile is for 128x96 (the first size to "
            "reach 20 frames), and frames of other sizes are BLOCKed with reason 'resolution'") in proc.stdout


def test_calibrate_on_too_short_a_source(tmp_path: Path) -> None:
    proc = _cli("calibrate", "--config", str(_config(tmp_path, frames=30)), "--out", str(tmp_path / "p.json"),
                "--no-progress")
    assert proc.returncode == exitcodes.CONFIG
    assert "ended after 30 frames, but calibration needs 60" in proc.stderr
    # run with the same config would decide nothing: refused before reading a frame
    proc = _cli("run", "--config", str(_config(tmp_path, frames=30)))
    assert proc.returncode == exitcodes.CONFIG
    assert "source.max_frames 30 stops the source before start-up calibration ends" in proc.stderr
    # a clip that is simply shorter: found out when it ends
    clip = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 25, (96, 64))
    for i in range(30):
        writer.write(SyntheticScene(3, (96, 64)).render(i)[0])
    writer.release()
    proc = _cli("calibrate", "--config", str(_config(tmp_path, uri=str(clip), frames=1000)), "--out",
                str(tmp_path / "p.json"), "--no-progress")
    assert proc.returncode == exitcodes.CONFIG
    assert "ended after 30 frames, but calibration needs 60" in proc.stderr
    assert not (tmp_path / "p.json").exists()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_view_redraws_in_place_and_keeps_log_lines() -> None:
    out = _Tty()
    view = LiveView(out)
    view.show("a\nb")
    view.show("c\nd")
    view.write_above("log line\n")
    view.show("e\nf")
    text = out.getvalue()
    assert text.count("\x1b[2A") == 2  # moved up over the 2-line block twice (redraw, log line)
    assert text.endswith("log line\n\x1b[2Ke\n\x1b[2Kf\n")  # the block is redrawn below the log line
    plain = io.StringIO()
    quiet = LiveView(plain, plain_every_s=3600)
    quiet.show("x")
    quiet.show("y")  # not a TTY: at most one block per interval, no escapes
    quiet.show("z", force=True)
    assert plain.getvalue() == "x\n\nz\n\n"


def test_progress_bar_and_table() -> None:
    out = io.StringIO()
    bar = ProgressBar(10, "frames", stream=out)
    for i in range(1, 11):
        bar.update(i)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("[" + "#" * 30 + "] 10/10 frames")
    assert format_table(["a", "n"], [["x", 1], ["yy", 22]], right=(1,)) == "a    n\n--  --\nx    1\nyy  22"


def test_output_flags_never_overwrite_an_input(tmp_path: Path) -> None:
    """calibrate --out at its own config, report --out at its health file: refused up front (78),
    the input untouched."""
    config = _config(tmp_path)
    before = config.read_text()
    proc = _cli("calibrate", "--config", str(config), "--out", str(config))
    assert proc.returncode == exitcodes.CONFIG and "is also an input of this command" in proc.stderr
    assert config.read_text() == before
    health = _write(tmp_path / "health.jsonl", '{"camera_id": "c", "seq": 0}\n')
    proc = _cli("report", str(health), "--out", str(health))
    assert proc.returncode == exitcodes.CONFIG and "--out" in proc.stderr and "also an input" in proc.stderr
    assert health.read_text() == '{"camera_id": "c", "seq": 0}\n'
    proc = _cli("report", str(health), "--plot", str(tmp_path / "r.txt"))
    assert proc.returncode == exitcodes.CONFIG and "must end in .png" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_output_that_cannot_be_written_is_refused_before_calibrating(tmp_path: Path) -> None:
    """calibrate --out and run --profile-out where no file can be created (an existing folder that
    cannot be written, even as root, or a missing one under it): exit 78 naming the option and the
    user's path, before a frame is read. The source has 30 frames for 60 calibration frames, so a
    check made after calibrating would fail with 'ended after 30 frames' instead."""
    proc = unwritable_folder()
    short = _config(tmp_path, frames=30)
    for out in (proc / "p.json", proc / "sub" / "p.json"):
        run = _cli("calibrate", "--config", str(short), "--out", str(out), "--no-progress")
        assert run.returncode == exitcodes.CONFIG, run.stderr
        assert f"edge-guard: error: --out {out}: cannot " in run.stderr and "ended after" not in run.stderr
        assert "Traceback" not in run.stderr and ".tmp" not in run.stderr
    run = _cli("run", "--config", str(_config(tmp_path)), "--profile-out", str(proc / "p.json"))
    assert run.returncode == exitcodes.CONFIG, run.stderr
    assert f"edge-guard: error: --profile-out {proc / 'p.json'}: cannot write there: " in run.stderr
    assert "calibrated on" not in run.stderr and not (tmp_path / "out").exists()  # not started
    assert "Traceback" not in run.stderr


def test_argtypes_doctests() -> None:
    import doctest  # noqa: PLC0415

    from agent import argtypes  # noqa: PLC0415

    assert doctest.testmod(argtypes).attempted == 3 and doctest.testmod(argtypes).failed == 0


# -- a bad value is blamed on where it came from: an option (exit 2), a variable or the file (exit 78) ---------
def _video_config(tmp_path: Path) -> Path:
    text = "camera_id: cam1\nsource: {uri: synthetic://default}\ncalibration: {frames: 40}\n"
    return _write(tmp_path / "vid.yaml", text)


def test_calibrate_frames_out_of_bounds_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _video_config(tmp_path)
    code = main(["calibrate", "--config", str(config), "--frames", "5", "--out", str(tmp_path / "p5.json")])
    err = capsys.readouterr().err
    assert code == exitcodes.USAGE, err
    assert err == ("edge-guard: error: 1 config error(s) on the command line:\n"
                   "  - calibration.frames (from --frames 5): Input should be greater than or equal to 20\n")
    assert not (tmp_path / "p5.json").exists()


def test_run_options_out_of_bounds_are_usage_errors(tmp_path: Path) -> None:
    config = _video_config(tmp_path)
    for option, value, line in (
        ("--max-frames", "0", "source.max_frames (from --max-frames 0): Input should be greater than or equal to 1"),
        ("--source", "", "source.uri (from --source ''): String should have at least 1 character"),
        ("--source", "synthetic://nope", "source.uri (from --source synthetic://nope): synthetic://nope: scenario "
                                         "must be one of"),
    ):
        proc = _cli("run", "--config", str(config), option, value)
        assert proc.returncode == exitcodes.USAGE, proc.stderr
        assert "1 config error(s) on the command line:" in proc.stderr and f"  - {line}" in proc.stderr
        assert str(config) not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("option", "value", "line"),
    [
        ("--frames", "0", "source.max_frames (from --frames 0): Input should be greater than or equal to 1"),
        ("--calibration-frames", "3",
         "calibration.frames (from --calibration-frames 3): Input should be greater than or equal to 20"),
        ("--source", "synthetic://default?size=8x8", "source.uri (from --source 'synthetic://default?size=8x8'): "
                                                     "synthetic://default?size=8x8: size width must be between"),
    ],
)
def test_demo_options_out_of_bounds_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, line: str
) -> None:
    code = main(["demo", "--no-live", "--out", str(tmp_path / "demo"), option, value])
    err = capsys.readouterr().err
    assert code == exitcodes.USAGE, err
    assert err.startswith("edge-guard: error: 1 config error(s) on the command line:\n") and f"  - {line}" in err


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("EDGE_GUARD_POLICY__ALPHA_FLAG", "abc", "policy.alpha_flag (from EDGE_GUARD_POLICY__ALPHA_FLAG='abc'): "
                                                 "Input should be a valid number"),
        ("EDGE_GUARD_POLICY__ALPHA_FLAGG", "0.1", "policy.alpha_flagg (from EDGE_GUARD_POLICY__ALPHA_FLAGG='0.1'): "
                                                  "unknown key"),
    ],
)
def test_check_config_names_the_variable_that_gave_a_bad_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str, line: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["check-config", str(REPO_ROOT / "configs" / "example.yaml")]) == exitcodes.CONFIG
    out = capsys.readouterr().out
    assert out.startswith("INVALID: 1 config error(s) in the environment:\n") and f"  - {line}" in out, out


def test_check_config_refuses_what_run_refuses_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mqtt = _write(tmp_path / "mqtt.yaml", "camera_id: cam1\nmqtt: {host: 127.0.0.1, port: 1883}\n")
    monkeypatch.setenv("EDGE_GUARD_CAMERA_ID", "status")
    assert main(["check-config", str(mqtt)]) == exitcodes.CONFIG
    assert ("  - camera_id (from EDGE_GUARD_CAMERA_ID='status'): camera id 'status' is reserved for node-level MQTT "
            "topics") in capsys.readouterr().out
    monkeypatch.delenv("EDGE_GUARD_CAMERA_ID")
    # a source that ends before start-up calibration does: run decides nothing, so check-config says so
    short = _write(tmp_path / "short.yaml", "source: {uri: synthetic://default, max_frames: 50}\n")
    assert main(["check-config", str(short)]) == exitcodes.CONFIG
    assert ("  - source.max_frames 50 stops the source before start-up calibration ends (calibration.skip 0 + "
            "calibration.frames 300 = 300)") in capsys.readouterr().out
    boolean = _write(tmp_path / "bool.yaml", "policy: {alpha_block: true}\n")
    assert main(["check-config", str(boolean)]) == exitcodes.CONFIG
    assert "  - policy.alpha_block: Input should be a number, not true/false (got True)" in capsys.readouterr().out
