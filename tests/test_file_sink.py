"""The file sink against a real folder: lines, JSON validity, sampling rate, disk errors."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import read_jsonl

import agent.sinks.file as file_sink_module
from agent.errors import ConfigError
from agent.frame import Frame
from agent.health import HealthSummary
from agent.model.types import ModelOutput
from agent.scoring.drift import DriftEvent
from agent.sinks.config import FileSinkConfig
from agent.sinks.file import FileSink, jsonable
from agent.stats.cpu import CpuStats
from agent.verdict import Decision, Reason, Verdict


def _frame(seq: int) -> Frame:
    rng = np.random.default_rng(seq)
    image = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    return Frame(image=image, camera_id="cam1", seq=seq, capture_ts=time.time(), capture_mono=time.monotonic())


def _verdict(frame: Frame, decision: Decision) -> Verdict:
    stats = CpuStats((2, 2)).compute(frame.image)  # diff_prev is NaN: no previous frame
    reasons = () if decision == Decision.PASS else (Reason("blur", decision, 12.5, 0.0004, {"test": "blur"}),)
    probs = np.array([0.7, 0.3], dtype=np.float32)
    return Verdict(
        camera_id=frame.camera_id, seq=frame.seq, capture_ts=frame.capture_ts, decision=decision,
        reasons=reasons, scores={"blur": 12.5, "ood_stats": math.inf}, p_values={"blur": 0.0004, "family": 0.001},
        stats=stats, output=ModelOutput(top1=0, confidence=0.7, probs=probs, label="car"),
        latency_ms={"stats": 1.0}, fault="blur",
    )


def test_verdict_lines_skip_pass_and_are_strict_json(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(dir=tmp_path, frames_per_minute=0), "cam1",
                    ids=lambda: {"model_sha256": "abc", "profile_id": "p1", "config_hash": "c1"})
    for seq, decision in enumerate([Decision.PASS, Decision.FLAG, Decision.BLOCK, Decision.PASS]):
        frame = _frame(seq)
        sink.publish_verdict(_verdict(frame, decision), frame)
    sink.close()
    text = (tmp_path / "verdicts.jsonl").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text  # strict JSON for any consumer
    lines = read_jsonl(tmp_path / "verdicts.jsonl")
    assert [ln["decision"] for ln in lines] == ["FLAG", "BLOCK"]
    first = lines[0]
    assert first["seq"] == 1 and first["camera_id"] == "cam1" and first["label"] == "car"
    assert first["reasons"] == [{"code": "blur", "decision": "FLAG", "score": 12.5, "p_value": 0.0004,
                                 "detail": {"test": "blur"}}]
    assert first["scores"] == {"blur": 12.5, "ood_stats": None}  # inf -> null
    assert first["stats"]["diff_prev"] is None  # NaN -> null
    assert first["profile_id"] == "p1" and first["model_sha256"] == "abc"
    stats = sink.stats()
    assert stats["verdicts_written"] == 2 and stats["verdicts_pass_skipped"] == 2
    assert stats["frames_rate_limited"] == 2  # frames_per_minute=0: every risky frame counted, none saved
    assert not any((tmp_path / "frames").iterdir())


def test_write_pass_keeps_every_verdict(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(dir=tmp_path, write_pass=True, frames_per_minute=0), "cam1")
    for seq in range(5):
        frame = _frame(seq)
        sink.publish_verdict(_verdict(frame, Decision.PASS), frame)
    sink.close()
    assert [ln["seq"] for ln in read_jsonl(tmp_path / "verdicts.jsonl")] == [0, 1, 2, 3, 4]


def test_health_and_statusread_jsonl(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(dir=tmp_path), "cam1")
    summary = HealthSummary(camera_id="cam1", seq=3, window_start_ts=1.0, window_end_ts=2.0, frames_in=10,
                            decisions={"PASS": 9, "FLAG": 1}, reasons={"blur": 1})
    sink.publish_health(summary)
    sink.publish_camera_status("cam1", "degraded", "source down")
    sink.publish_camera_status("cam1", "online", "guarding")
    # flushed on every line: readable before close()
    assert HealthSummary.model_validate(read_jsonl(tmp_path / "health.jsonl")[0]) == summary
    status = read_jsonl(tmp_path / "status.jsonl")
    assert [(s["state"], s["reason"]) for s in status] == [("degraded", "source down"), ("online", "guarding")]
    sink.close()


def test_drift_events_go_to_events_jsonl(tmp_path: Path) -> None:
    ids = {"model_sha256": "ab" * 32, "profile_id": "p1", "config_hash": "c1"}
    sink = FileSink(FileSinkConfig(dir=tmp_path), "cam1", ids=lambda: ids)
    event = DriftEvent("cam1", "stats", "start", 412, 1700000000.5, 14.25, 13.9).to_dict()
    sink.publish_event(event)
    sink.publish_event({**event, "lifecycle": "end", "seq": 530, "statistic": math.nan})
    lines = read_jsonl(tmp_path / "events.jsonl")  # flushed per line, strict JSON (NaN -> null)
    assert [(e["type"], e["detector"], e["lifecycle"], e["seq"]) for e in lines] == [
        ("drift", "stats", "start", 412), ("drift", "stats", "end", 530)]
    assert lines[0]["statistic"] == 14.25 and lines[0]["threshold"] == 13.9 and lines[1]["statistic"] is None
    assert all(e["camera_id"] == "cam1" and e["profile_id"] == "p1" and e["ts"] > 0 for e in lines)
    assert sink.stats()["events_written"] == 2
    sink.close()


def test_risky_frames_are_rate_limited_and_counted(tmp_path: Path) -> None:
    # 60 per minute: a burst of 10 (ten seconds' worth), then 1 per second
    sink = FileSink(FileSinkConfig(dir=tmp_path, frames_per_minute=60, jpeg_quality=90), "cam1")
    for seq in range(30):
        frame = _frame(seq)
        sink.publish_verdict(_verdict(frame, Decision.BLOCK), frame)
    sink.close()
    saved = sorted((tmp_path / "frames").glob("*.jpg"))
    stats = sink.stats()
    assert len(saved) == stats["frames_saved"] == 10
    assert stats["frames_rate_limited"] == 20
    assert saved[0].name == "cam1_00000000_BLOCK.jpg"
    image = cv2.imread(str(saved[0]))
    assert image is not None and image.shape == (48, 64, 3)
    assert not list((tmp_path / "frames").glob("*.tmp"))


def test_disk_full_is_counted_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is needed to simulate a full disk")
    (tmp_path / "health.jsonl").symlink_to("/dev/full")  # every write fails with ENOSPC
    sink = FileSink(FileSinkConfig(dir=tmp_path), "cam1")
    summary = HealthSummary(camera_id="cam1", seq=0, window_start_ts=1.0, window_end_ts=2.0)
    for _ in range(3):
        sink.publish_health(summary)
    sink.publish_camera_status("cam1", "online", "guarding")  # other files keep working
    sink.close()
    stats = sink.stats()
    assert stats["write_errors"] == 3
    assert stats["status_written"] == 1
    assert "No space left on device" in caplog.text
    assert caplog.text.count("file sink: writing") == 1  # logged once, then counted ...
    # ... and the run's total said at close, per file
    assert "file sink: 3 write(s) in" in caplog.text and "(health.jsonl 3)" in caplog.text


def test_a_lasting_failure_is_logged_again_with_what_it_cost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only the first failure: the ones since are logged together once the interval is over."""
    if not os.path.exists("/dev/full"):
        pytest.skip("/dev/full is needed to simulate a full disk")
    for name in ("health.jsonl", "status.jsonl"):
        (tmp_path / name).symlink_to("/dev/full")
    monkeypatch.setattr(file_sink_module, "FAILURE_LOG_S", 0.2)
    sink = FileSink(FileSinkConfig(dir=tmp_path), "cam1")
    summary = HealthSummary(camera_id="cam1", seq=0, window_start_ts=1.0, window_end_ts=2.0)
    sink.publish_health(summary)
    for _ in range(4):
        sink.publish_health(summary)
        sink.publish_camera_status("cam1", "online", "guarding")
    time.sleep(0.3)
    sink.publish_health(summary)
    sink.close()
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("file sink: writing")]
    assert len(warnings) == 2
    assert warnings[0].endswith("not written: health.jsonl 1; the guard keeps running")
    assert "not written since the last such warning: health.jsonl 5, status.jsonl 4" in warnings[1]
    assert sink.stats()["write_errors"] == 10


def test_after_close_lines_are_counted(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(dir=tmp_path), "cam1")
    sink.close()
    sink.close()  # idempotent
    sink.publish_camera_status("cam1", "offline", "stopped")
    assert sink.stats()["writes_after_close"] == 1


def test_unwritable_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"file_sink\.dir: cannot create output folder"):
        FileSink(FileSinkConfig(dir=blocker / "sub"), "cam1")
    if Path("/proc/self").is_dir():  # it exists; what cannot be made is the folder inside it
        with pytest.raises(ConfigError, match=r"cannot create output folder /proc/self/frames: "):
            FileSink(FileSinkConfig(dir=Path("/proc/self")), "cam1")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float32(1.5), 1.5),
        (np.int64(3), 3),
        (math.nan, None),
        (-math.inf, None),
        (np.array([1.0, np.nan]), [1.0, None]),
        ({"a": (1, np.float64(np.inf))}, {"a": [1, None]}),
        (Path("/x"), "/x"),
    ],
)
def test_jsonable(value: object, expected: object) -> None:
    assert jsonable(value) == expected


def test_a_disk_that_fills_up_leaves_only_whole_lines(tmp_path: Path) -> None:
    """A real short write: the process may not grow a file past RLIMIT_FSIZE (EFBIG, as a full disk
    gives ENOSPC). Every line in the file parses; the failed ones are counted, none half-written."""
    out = tmp_path / "out"
    code = f"""
import resource, signal, sys, time
from pathlib import Path
from agent.health import HealthSummary
from agent.sinks.config import FileSinkConfig
from agent.sinks.file import FileSink
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of a kill
sink = FileSink(FileSinkConfig(dir=Path({str(out)!r})), "cam1")
resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))
for seq in range(40):
    sink.publish_health(HealthSummary(camera_id="cam1", seq=seq, window_start_ts=time.time(),
                                      window_end_ts=time.time(), decisions={{"PASS": seq}}))
print(int(sink.stats()["write_errors"]), int(sink.stats()["health_written"]))
sink.close()
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    errors, written = (int(x) for x in proc.stdout.split())
    assert errors > 0 and written + errors == 40
    lines = (out / "health.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == written and all(ln.endswith("\n") for ln in lines)
    assert [HealthSummary.model_validate_json(ln).seq for ln in lines] == list(range(written))


def test_a_folder_deleted_while_running_is_recreated(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sink = FileSink(FileSinkConfig(dir=out), "cam1")
    try:
        sink.publish_camera_status("cam1", "online", "guarding")
        shutil.rmtree(out)  # an operator cleaning up, logrotate gone wrong
        sink.publish_camera_status("cam1", "degraded", "source down")
        records = read_jsonl(out / "status.jsonl")
        assert [r["state"] for r in records] == ["degraded"]  # written where it can be read, not lost
        assert sink.stats()["files_reopened"] == 1 and sink.stats().get("write_errors", 0.0) == 0
    finally:
        sink.close()
