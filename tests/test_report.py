"""``edge-guard report``: health summaries bucketed per camera, by hand and on a real daemon's output."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import unwritable_folder

from agent import exitcodes
from agent.cli import main
from agent.errors import ConfigError
from agent.fieldtools import healthreport, report
from agent.fieldtools.healthreport import build_reports, load_summaries
from agent.health import HealthSummary

DAY = 86400.0
T0 = 1_796_000_000.0 - (1_796_000_000.0 % DAY)  # a UTC midnight


def _summary(seq: int, t: float, *, cam: str = "cam1", guarded: int = 100, flag: int = 0, conf: float = 0.9,
             psi: float = 0.05, classes: dict[str, int] | None = None, alarms: tuple[str, ...] = (),
             calibrated: int = 0) -> dict[str, Any]:
    return HealthSummary(
        camera_id=cam, seq=seq, window_start_ts=t - 60, window_end_ts=t, frames_processed=guarded + calibrated,
        frames_calibrated=calibrated, decisions={"PASS": guarded - flag, "FLAG": flag} if guarded else {},
        reasons={"dark": flag} if flag else {}, confidence={"p5": conf - 0.1, "p50": conf, "p95": conf},
        class_counts=classes if classes is not None else {"person": guarded}, drift={"psi.log_brightness": psi},
        drift_alarms=list(alarms), profile_id="p1",
    ).model_dump(mode="json")


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_doctests() -> None:
    assert doctest.testmod(healthreport).failed == 0 and doctest.testmod(report).failed == 0


def test_two_days_by_hand(tmp_path: Path) -> None:
    """Day 1: 2 summaries of 100 frames, no flag, confidence 0.9, all persons. Day 2: 100 frames at
    4 % FLAG (confidence 0.6, PSI 0.4, a drift alarm) and 300 frames at 0 % (confidence 0.8, PSI
    0.2): FLAG rate 4 / 400 = 1 %, confidence (0.6 * 100 + 0.8 * 300) / 400 = 0.75, PSI 0.25,
    alarms in 1 of 2 windows; class mix person 100 % -> 50 %, car 0 -> 50 %: total variation 0.5."""
    path = _write(tmp_path / "health.jsonl", [
        _summary(0, T0 + 3600, guarded=0, calibrated=300),  # start-up calibration: counted apart
        _summary(1, T0 + 7200),
        _summary(2, T0 + 10800),
        _summary(3, T0 + DAY + 3600, flag=4, conf=0.6, psi=0.4, alarms=("cusum.stats",),
                 classes={"person": 50, "car": 50}),
        _summary(4, T0 + DAY + 7200, guarded=300, conf=0.8, psi=0.2, classes={"person": 150, "car": 150}),
    ])
    (rep,) = build_reports(load_summaries([path]).summaries, bucket_s=int(DAY))
    day1, day2 = rep.buckets
    assert (day1.frames, day1.frames_calibrating, day1.rate("FLAG")) == (200, 300, 0.0)
    assert day2.frames == 400 and day2.rate("FLAG") == pytest.approx(0.01)
    assert day2.confidence_p50 == pytest.approx(0.75) and day2.drift["psi.log_brightness"] == pytest.approx(0.25)
    assert day2.alarm_summaries == 1 and day2.guarded_summaries == 2 and day1.guarded_summaries == 2
    ch = rep.changes()
    assert ch["flag_rate"] == [0.0, pytest.approx(0.01)]
    assert ch["confidence_p50"] == [pytest.approx(0.9), pytest.approx(0.75)]
    assert ch["class_mix_total_variation"] == pytest.approx(0.5)
    assert ch["classes_moved"]["car"] == [0.0, 0.5] and ch["top_drift_last_bucket"] == {"psi.log_brightness": 0.25}
    assert ch["drift_alarm_share_overall"] == pytest.approx(1 / 4)  # of the 4 guarded windows
    assert (rep.seq_gaps, rep.restarts) == (0, 0)
    text = report.format_camera(rep)
    assert "FLAG rate 0.0% -> 1.0%" in text and "confidence (median) 0.900 -> 0.750" in text
    assert "car 0% -> 50%" in text and "log_brightness 0.25" in text
    assert "errors" not in text and "frames dropped" not in text  # nothing lost, nothing failed: no line


def test_frames_lost_and_errors_are_summed_over_the_buckets(tmp_path: Path) -> None:
    """A model that gave NaN for 50 frames, a codec that broke 2, a queue that dropped 3: one line."""
    rows = [_summary(1, T0 + 3600), _summary(2, T0 + DAY + 3600), _summary(3, T0 + DAY + 7200, guarded=0, calibrated=9)]
    rows[0].update(errors={"model_output": 20}, frames_dropped=3)
    rows[1].update(errors={"model_output": 30, "drain_timeout": 1}, frames_corrupt=2)
    rows[2].update(source_reconnects=1)
    (rep,) = build_reports(load_summaries([_write(tmp_path / "health.jsonl", rows)]).summaries, bucket_s=int(DAY))
    text = report.format_camera(rep)
    assert text.splitlines()[-1] == (
        "  frames dropped 3, corrupt 2; source reconnects 1; errors: model_output 50, drain_timeout 1")


def test_bad_lines_counted_and_quoted_mqtt_payloads_read_gaps_and_restarts(tmp_path: Path) -> None:
    rows: list[Any] = [
        _summary(0, T0 + 60),
        "not json",
        {"type": "health", "v": 1, "msg_id": "r-1", "seq": 1, "summary": _summary(1, T0 + 120)},  # as MQTT
        {"camera_id": "cam1"},  # JSON, but not a summary
        _summary(4, T0 + 180),  # seq 2 and 3 lost
        _summary(0, T0 + 240),  # the daemon restarted
        _summary(0, T0 + 240, cam="cam2"),
    ]
    loaded = load_summaries([_write(tmp_path / "health.jsonl", rows)])
    assert len(loaded.summaries) == 5 and loaded.bad_lines == {str(tmp_path / "health.jsonl"): 2}
    assert loaded.quoted[0].endswith(":2: Expecting value: line 1 column 1 (char 0)")
    assert ":4: " in loaded.quoted[1]
    cam1, cam2 = build_reports(loaded.summaries, bucket_s=3600)
    assert (cam1.camera_id, cam1.seq_gaps, cam1.restarts) == ("cam1", 2, 1) and cam2.camera_id == "cam2"
    assert [r.camera_id for r in build_reports(loaded.summaries, camera="cam2")] == ["cam2"]
    with pytest.raises(ConfigError, match=r"no health summaries of camera 'cam3' \(--camera\); these hold: cam1, cam2"):
        build_reports(loaded.summaries, camera="cam3")


def test_cli_errors_and_bucket_parsing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # what the user named is wrong: fix the command, running it again will not help (exit 78, as stress and demo)
    assert main(["report", str(tmp_path / "missing.jsonl")]) == exitcodes.CONFIG
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == exitcodes.CONFIG  # a folder without health*.jsonl
    assert "no health*.jsonl under" in capsys.readouterr().err
    _write(tmp_path / "health.jsonl", ["garbage"])
    assert main(["report", str(tmp_path)]) == exitcodes.CONFIG
    assert "no health summaries in" in capsys.readouterr().err
    _write(tmp_path / "health.jsonl", [_summary(0, T0 + 60)])
    assert main(["report", str(tmp_path), "--camera", "nosuch"]) == exitcodes.CONFIG
    assert "no health summaries of camera 'nosuch' (--camera); these hold: cam1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["report", str(tmp_path), "--bucket", "1 week"])
    assert usage.value.code == exitcodes.USAGE
    assert "expected a duration like 15m" in capsys.readouterr().err


def test_help_states_the_exit_codes_report_gives(capsys: pytest.CaptureFixture[str]) -> None:
    """The cases above exit 78 (what was named is wrong: running it again will not help); --help says so."""
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 ok, 2 usage (a bad option), 78 nothing to report on as named: a PATH that does not " \
           "exist, no health*.jsonl or no health summary in them, an unknown --camera" in text
    assert "1 nothing readable" not in text


def test_an_output_that_cannot_be_written_is_refused_before_reading(tmp_path: Path) -> None:
    """--out and --plot in a folder where no file can be created (even as root): exit 78 naming the
    option and the path, no traceback, nothing read."""
    health = _write(tmp_path / "health.jsonl", [_summary(0, T0 + 60), _summary(1, T0 + 120)])
    proc = unwritable_folder()
    for flag, name in (("--out", "r.json"), ("--plot", "r.png")):
        run = subprocess.run([sys.executable, "-m", "agent.cli", "report", str(health), flag, str(proc / name)],
                             capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == exitcodes.CONFIG, run.stderr
        assert f"edge-guard: error: {flag} {proc / name}: cannot write there: " in run.stderr
        assert "Traceback" not in run.stderr and ".tmp" not in run.stderr
        assert "health summaries" not in run.stdout  # refused before reading


@pytest.mark.slow
def test_report_on_a_real_daemon_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The daemon guards 900 synthetic frames (300 calibrate, faults after): the report finds
    exactly 600 guarded and 300 calibration frames, the fault reasons, and draws its PNG."""
    cfg = tmp_path / "cam.yaml"
    cfg.write_text(f"""camera_id: camx
source:
  uri: synthetic://default
health:
  interval_s: 1
file_sink:
  dir: {tmp_path / "out"}
""")
    run = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg), "--max-frames", "900"],
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    out, png = tmp_path / "report.json", tmp_path / "report.png"
    assert main(["report", str(tmp_path / "out"), "--bucket", "1d", "--out", str(out), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    (cam,) = json.loads(out.read_text())["cameras"]
    assert cam["camera_id"] == "camx" and cam["frames"] == 600 and cam["seq_gaps"] == 0
    assert sum(b["frames_calibrating"] for b in cam["buckets"]) == 300
    reasons = {r for b in cam["buckets"] for r in b["reasons"]}  # a run across UTC midnight has 2 buckets
    assert {"blur", "dark"} <= reasons, reasons
    assert "camera camx: buckets of 1d (UTC)" in text and png.stat().st_size > 2000


def test_report_on_files_that_hold_no_summary_says_what_it_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "verdicts.jsonl"  # the file sink's other file, a common mix-up
    wrong.write_text('{"camera_id": "c", "seq": 3, "decision": "FLAG"}\n')
    assert main(["report", str(wrong)]) == exitcodes.CONFIG
    err = capsys.readouterr().err
    assert f"report: no health summaries in {wrong}: 1 line(s), none a health summary" in err
    assert f"{wrong}:1: " in err  # why that line is not one
