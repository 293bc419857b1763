"""The daemon end to end on the synthetic camera: outputs, drops, crashes, stops, profiles."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import damaged_clip, flapping, read_jsonl, scene_folder, unwritable_folder

from agent.config import GuardConfig, load_config
from agent.daemon import Daemon
from agent.errors import ConfigError, ProfileError
from agent.frame import Frame
from agent.gpu.nvml import gpu_health
from agent.health import HealthSummary
from agent.scoring.profile import Profile
from agent.sdnotify import Notifier
from agent.sinks.base import CameraState
from agent.sources.config import SourceConfig
from agent.sources.opencv_source import OpenCVSource
from agent.verdict import Decision, Verdict

# 240 frames: 100 calibrate, then clean, a dark window, clean. Small frames keep it fast.
SYNTH = "synthetic://custom?faults=dark:150:190&size=160x96&seed=3"


def _cfg(tmp_path: Path, **sections: Any) -> GuardConfig:
    base: dict[str, Any] = {
        "camera_id": "t1",
        "node": "test",
        "source": {"uri": SYNTH, "max_frames": 240},
        "calibration": {"frames": 100},
        "file_sink": {"dir": str(tmp_path / "out")},
        "health": {"interval_s": 1.0},
        "pipeline": {"stall_after_s": 5.0},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return load_config(None, base)


def _run(daemon: Daemon, timeout_s: float = 60.0) -> int:
    """Run the daemon in a thread and fail (instead of hanging the suite) if it does not end."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["code"] = daemon.run(install_signals=False)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, name="test-daemon")
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"daemon did not stop within {timeout_s} s: {daemon.progress()}"
    if "error" in result:
        raise result["error"]
    return int(result["code"])


class Recorder:
    """A real sink that keeps what it receives; ``on_verdict`` lets a test slow it or make it fail."""

    def __init__(self, on_verdict: Callable[[Verdict], None] | None = None) -> None:
        self.verdicts: list[Verdict] = []
        self.health: list[HealthSummary] = []
        self.status: list[tuple[str, str]] = []
        self.events: list[dict[str, object]] = []
        self.closed = False
        self.on_verdict = on_verdict

    def publish_verdict(self, verdict: Verdict, frame: Frame) -> None:
        if self.on_verdict is not None:
            self.on_verdict(verdict)
        self.verdicts.append(verdict)

    def publish_health(self, summary: HealthSummary) -> None:
        self.health.append(summary)

    def publish_camera_status(self, camera_id: str, state: CameraState, reason: str) -> None:
        self.status.append((state, reason))

    def publish_event(self, event: dict[str, object]) -> None:
        self.events.append(event)

    def stats(self) -> dict[str, float]:
        return {"recorder_verdicts": float(len(self.verdicts))}

    def close(self) -> None:
        self.closed = True


def test_end_to_end_outputs(tmp_path: Path) -> None:
    rec = Recorder()
    daemon = Daemon(_cfg(tmp_path), notifier=Notifier(None), extra_sinks=[rec])
    assert _run(daemon) == 0
    p = daemon.progress()
    # every frame read was processed: an unpaced synthetic camera is read losslessly
    assert (p.frames_in, p.frames_processed, p.frames_dropped, p.frames_calibrated) == (240, 240, 0, 100)
    assert p.phase == "guarding" and p.ready and p.finished
    assert rec.closed and len(rec.verdicts) == 140  # every guarded frame reaches every sink

    out = tmp_path / "out"
    verdicts = read_jsonl(out / "verdicts.jsonl")  # FLAG/BLOCK only (write_pass is off)
    assert verdicts and all(v["decision"] in ("FLAG", "BLOCK") for v in verdicts)
    dark = [v for v in verdicts if v.get("fault") == "dark"]
    assert len(dark) >= 36, "the dark window (40 frames) must be caught"
    assert all(v["reasons"] and v["model_sha256"] and v["profile_id"] for v in verdicts)
    assert list((out / "frames").glob("t1_*.jpg")), "sampled risky frames are saved"

    health = [HealthSummary.model_validate(h) for h in read_jsonl(out / "health.jsonl")]
    assert [h.seq for h in health] == list(range(len(health)))
    assert sum(h.frames_in for h in health) == 240
    assert sum(h.frames_processed for h in health) == 240
    assert sum(h.decisions.get("FLAG", 0) + h.decisions.get("BLOCK", 0) for h in health) == len(verdicts)
    last = health[-1]
    assert last.phase == "guarding" and last.model_sha256 and last.profile_id and last.config_hash
    assert last.backend["stats"] == "cpu" and last.backend["model"].startswith("onnxruntime:")
    assert "recorder_verdicts" in last.publisher  # sink backlog/counters are reported
    # NVML values on a GPU box; None (not an error) without a driver
    assert (last.gpu is None) == (gpu_health() is None)
    # Drift scores (window PSIs, CUSUM S/h) from the guard once it is guarding; none while calibrating.
    assert last.drift and all(k.startswith(("psi.", "cusum.")) for k in last.drift)
    assert "cusum.stats" in last.drift and isinstance(last.drift_alarms, list)
    assert not any(h.drift for h in health if h.phase == "calibrating")
    busy = max(health, key=lambda h: h.frames_processed)
    assert set(busy.latency) >= {"read", "queue", "stats", "model"}
    assert busy.stats["brightness"].p50 is not None and busy.confidence.p50 is not None
    assert sum(busy.class_counts.values()) == busy.frames_processed

    status = read_jsonl(out / "status.jsonl")
    assert status[0]["state"] == "online"
    assert (status[-1]["state"], status[-1]["reason"]) == ("offline", "source ended")
    assert rec.status == [(s["state"], s["reason"]) for s in status]


def test_drops_oldest_when_the_worker_is_slow(tmp_path: Path) -> None:
    # A paced camera (realtime at 200 fps) and a sink that takes 20 ms per verdict: the reader
    # must not wait; it drops the oldest queued frame and counts it.
    rec = Recorder(on_verdict=lambda _v: time.sleep(0.02))
    cfg = _cfg(tmp_path, source={"uri": "synthetic://clean?size=64x48&fps=200", "realtime": True,
                                 "max_frames": 300},
               calibration={"frames": 40}, pipeline={"queue_size": 1})
    daemon = Daemon(cfg, notifier=Notifier(None), extra_sinks=[rec])
    assert _run(daemon) == 0
    p = daemon.progress()
    assert p.frames_in == 300
    assert p.frames_dropped > 50
    assert p.frames_in == p.frames_processed + p.frames_dropped  # every frame accounted for
    health = [HealthSummary.model_validate(h) for h in read_jsonl(tmp_path / "out" / "health.jsonl")]
    assert sum(h.frames_dropped for h in health) == p.frames_dropped
    seqs = [v.seq for v in rec.verdicts]
    assert seqs == sorted(seqs) and seqs[-1] == 299  # order kept, the newest frame is guarded


def test_worker_exception_exits_nonzero_and_flushes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def explode(v: Verdict) -> None:
        if v.seq == 120:
            raise RuntimeError("sink exploded on purpose")

    rec = Recorder(on_verdict=explode)
    cfg = _cfg(tmp_path, source={"uri": "synthetic://clean?size=64x48", "max_frames": None})  # endless
    daemon = Daemon(cfg, notifier=Notifier(None), extra_sinks=[rec])
    assert _run(daemon, timeout_s=30) == 1
    assert "worker failed: sink exploded on purpose" in caplog.text
    assert "Traceback" in caplog.text  # logged with the stack, not swallowed
    assert rec.closed
    status = read_jsonl(tmp_path / "out" / "status.jsonl")
    assert status[-1]["state"] == "offline" and "sink exploded" in status[-1]["reason"]
    health = read_jsonl(tmp_path / "out" / "health.jsonl")
    assert health[-1]["errors"] == {"thread_crash": 1}


def test_stop_drains_and_exits_zero(tmp_path: Path) -> None:
    rec = Recorder()
    cfg = _cfg(tmp_path, source={"uri": "synthetic://clean?size=64x48&fps=100", "realtime": True,
                                 "max_frames": None}, calibration={"frames": 40})
    daemon = Daemon(cfg, notifier=Notifier(None), extra_sinks=[rec])

    def stop_later() -> None:
        while daemon.progress().frames_processed < 60:
            time.sleep(0.02)
        daemon.stop()

    threading.Thread(target=stop_later, daemon=True).start()
    assert _run(daemon, timeout_s=30) == 0
    p = daemon.progress()
    assert p.frames_in == p.frames_processed + p.frames_dropped  # the queue was drained
    assert rec.closed and rec.status[-1] == ("offline", "stopped")


def test_a_stop_during_calibration_is_not_taken_for_a_short_clip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _cfg(tmp_path, source={"uri": "synthetic://clean?size=64x48&fps=100", "realtime": True,
                                 "max_frames": None}, calibration={"frames": 5000})
    daemon = Daemon(cfg, notifier=Notifier(None))

    def stop_later() -> None:
        while daemon.progress().frames_processed < 10:
            time.sleep(0.02)
        daemon.stop()

    threading.Thread(target=stop_later, daemon=True).start()
    with caplog.at_level("INFO", logger="agent.daemon"):
        assert _run(daemon, timeout_s=30) == 0
    assert "stopped during start-up calibration (" in caplog.text and "of 5000 frames): no profile was built" in (
        caplog.text)
    assert "feed a longer clip" not in caplog.text  # that advice is for a source that ran out


def test_stalled_worker_degrades_camera_status(tmp_path: Path) -> None:
    # One verdict takes 1.5 s with stall_after_s 0.5: the supervisor must report the stall
    # (no watchdog ping, camera degraded) and recover when frames flow again. The first verdict
    # from seq 50 on stalls (a loaded machine may drop frame 50 itself from the live queue).
    stalled_at: list[int] = []

    def stall(v: Verdict) -> None:
        if v.seq >= 50 and not stalled_at:
            stalled_at.append(v.seq)
            time.sleep(1.5)

    rec = Recorder(on_verdict=stall)
    cfg = _cfg(tmp_path, source={"uri": "synthetic://clean?size=64x48&fps=50", "realtime": True, "max_frames": 180},
               calibration={"frames": 40}, pipeline={"stall_after_s": 0.5})
    daemon = Daemon(cfg, notifier=Notifier(None), extra_sinks=[rec])
    assert _run(daemon) == 0
    states = rec.status
    assert stalled_at, f"no verdict from seq 50 on reached the sink: {len(rec.verdicts)} verdicts"
    stalled = states.index(("degraded", "pipeline stalled"))
    assert ("online", "guarding") in states[stalled:], f"no recovery after the stall: {states}"


def test_profile_from_file_and_mismatch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    profile_path = tmp_path / "profile.json"
    first = Daemon(_cfg(tmp_path, source={"max_frames": 110}), notifier=Notifier(None), profile_out=profile_path)
    with caplog.at_level("INFO", logger="agent.daemon"):
        assert _run(first) == 0 and profile_path.is_file()
    # once start-up calibration ends, the journal gets what the guard now flags (limits.py)
    (logged,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("guarding with profile")]
    assert Profile.load(profile_path).profile_id in logged and "mean luma below" in logged
    # and cmd/limits gets them as JSON; before a profile there is none to give
    assert first.limits()["profile_id"] == Profile.load(profile_path).profile_id
    with pytest.raises(ValueError, match=r"still calibrating \(0 of 100 frames\)"):
        Daemon(_cfg(tmp_path), notifier=Notifier(None)).limits()

    # the saved profile guards a new run without calibrating
    again = Daemon(_cfg(tmp_path, policy={"profile": str(profile_path)}), notifier=Notifier(None))
    assert _run(again) == 0
    p = again.progress()
    assert p.frames_calibrated == 0 and p.decisions.get("PASS", 0) > 100 and p.reasons.get("dark", 0) >= 36

    # another frame size (a swapped camera): the daemon keeps running and BLOCKs every frame
    # with the reason 'resolution' (no test can score it) until it is recalibrated
    # (paced at 100 fps so that the supervisor sees it: the status turns 'degraded')
    swapped_out = tmp_path / "swapped"
    other_size = _cfg(tmp_path, source={"uri": SYNTH.replace("160x96", "128x96"), "max_frames": 60,
                                        "realtime": True, "fps": 100.0},
                      policy={"profile": str(profile_path)}, file_sink={"dir": str(swapped_out)})
    swapped = Daemon(other_size, notifier=Notifier(None))
    assert _run(swapped) == 0
    p = swapped.progress()
    assert p.decisions == {"BLOCK": 60} and p.reasons == {"resolution": 60}
    states = [(s["state"], s["reason"]) for s in read_jsonl(swapped_out / "status.jsonl")]
    assert ("degraded", "frames 128x96, profile 160x96: recalibrate") in states, states

    # another grid: refused at start-up, before any thread runs
    other_grid = _cfg(tmp_path, stats={"grid": [2, 2]}, policy={"profile": str(profile_path)})
    with pytest.raises(ProfileError, match=r"grid 4x4.*grid 2x2"):
        Daemon(other_grid, notifier=Notifier(None)).start()


def test_a_profile_copy_that_cannot_be_saved_is_logged_and_guarding_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--profile-out failing after start-up calibration (here /proc; in the field a full disk: the
    path was checked at start): an error logged and counted in the health summary, the frames after
    calibration still guarded with the profile in memory, exit 0."""
    out = unwritable_folder() / "p.json"
    daemon = Daemon(_cfg(tmp_path), notifier=Notifier(None), profile_out=out)
    with caplog.at_level("ERROR", logger="agent.daemon"):
        assert _run(daemon) == 0
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("--profile-out")]
    assert f"cannot write profile to {out}: " in logged.getMessage() and ".tmp" not in logged.getMessage()
    p = daemon.progress()
    assert p.frames_calibrated == 100 and sum(p.decisions.values()) == 140 and p.reasons.get("dark", 0) >= 36
    health = [HealthSummary.model_validate(h) for h in read_jsonl(tmp_path / "out" / "health.jsonl")]
    assert sum(h.errors.get("profile_save", 0) for h in health) == 1


def test_calibration_follows_the_stream_to_a_new_resolution(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder whose frames switch from 96x64 to 128x96 during start-up calibration (a stream
    reconnecting to another resolution): the new size is calibrated on its own frames and guarded."""
    folder = scene_folder(tmp_path / "frames", [(96, 64)] * 30 + [(128, 96)] * 120)
    profile_path = tmp_path / "profile.json"
    daemon = Daemon(_cfg(tmp_path, source={"uri": str(folder), "max_frames": None}, calibration={"frames": 60}),
                    notifier=Notifier(None), profile_out=profile_path)
    with caplog.at_level("WARNING", logger="agent.pipeline"):
        assert _run(daemon) == 0
    assert "frame 30 is 128x96, the frame before 96x64: the stream changed resolution" in caplog.text
    assert "(so far 96x64: 30)" in caplog.text
    assert "during start-up calibration" not in caplog.text  # it finished: no warning at exit
    profile = Profile.load(profile_path)
    assert (profile.width, profile.height, profile.n_frames) == (128, 96, 60)
    p = daemon.progress()
    assert p.frames_calibrated == 30 + 60  # the 30 frames of the old size went to calibration too
    assert sum(p.decisions.values()) == 150 - 30 - 60
    assert "resolution" not in p.reasons


def test_a_folder_of_mixed_sizes_warns_once_not_per_frame(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Sizes alternating on every frame: each size gets 15 of the 30 frames, short of 20; one warning
    says so, and the exit says how far the leading size got."""
    folder = scene_folder(tmp_path / "frames", flapping(30))
    daemon = Daemon(_cfg(tmp_path, source={"uri": str(folder), "max_frames": None}, calibration={"frames": 20}),
                    notifier=Notifier(None))
    with caplog.at_level("WARNING", logger="agent.pipeline"):
        assert _run(daemon) == 0
    changes = [r.getMessage() for r in caplog.records if "changed resolution" in r.getMessage()]
    assert len(changes) == 1 and "frame 1 is 96x64, the frame before 128x96" in changes[0]
    assert ("during start-up calibration: 15 of the 20 calibration frames seen for the leading frame size "
            "(29 size changes: each size is calibrated on its own frames)") in caplog.text


def test_a_stream_that_keeps_changing_size_is_degraded_while_calibrating(tmp_path: Path) -> None:
    """Paced at 20 fps (1.5 s), so the supervisor sees it: calibration cannot end, the status says why."""
    folder = scene_folder(tmp_path / "frames", flapping(30))
    rec = Recorder()
    cfg = _cfg(tmp_path, source={"uri": str(folder), "max_frames": None, "realtime": True, "fps": 20},
               calibration={"frames": 20})
    assert _run(Daemon(cfg, notifier=Notifier(None), extra_sinks=[rec])) == 0
    reasons = [reason for state, reason in rec.status if state == "degraded"]
    assert any(r.startswith("frame size keeps changing: ") and r.endswith(" size changes during start-up calibration")
               for r in reasons), rec.status


def test_a_stream_flapping_between_two_sizes_still_finishes_calibration(tmp_path: Path) -> None:
    """Sizes alternating on every frame (a camera whose stream flaps between two profiles): each size is
    calibrated on its own frames, the first to reach 20 becomes the profile's, and from then on the
    frames of the other size are BLOCKed with the reason 'resolution' while those of the profile's are
    guarded."""
    folder = scene_folder(tmp_path / "frames", flapping(80))
    profile_path = tmp_path / "profile.json"
    daemon = Daemon(_cfg(tmp_path, source={"uri": str(folder), "max_frames": None}, calibration={"frames": 20}),
                    notifier=Notifier(None), profile_out=profile_path)
    assert _run(daemon) == 0
    profile = Profile.load(profile_path)
    assert (profile.width, profile.height, profile.n_frames) == (128, 96, 20)  # even frames: 128x96 got there first
    p = daemon.progress()
    assert p.frames_calibrated == 39  # 20 of 128x96 (frames 0-38) and the 19 of 96x64 in between
    assert sum(p.decisions.values()) == 80 - 39
    assert p.reasons["resolution"] == 21  # the odd frames 39-79
    assert p.decisions["BLOCK"] >= 21


def test_a_source_that_ends_during_calibration_says_nothing_was_guarded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A clip shorter than the start-up calibration: a clean exit, but not a silent one."""
    folder = scene_folder(tmp_path / "frames", [(96, 64)] * 12)
    daemon = Daemon(_cfg(tmp_path, source={"uri": str(folder), "max_frames": None}, calibration={"frames": 40}),
                    notifier=Notifier(None))
    with caplog.at_level("WARNING", logger="agent.daemon"):
        assert _run(daemon) == 0
    assert ("exiting (source ended) during start-up calibration: 12 of the 40 calibration frames seen, so no "
            "profile was built and no frame got a decision") in caplog.text
    assert daemon.progress().frames_calibrated == 12 and not daemon.progress().decisions


def test_swapped_camera_recovers_with_a_reloaded_profile(tmp_path: Path) -> None:
    """The operator's path after a camera swap: frames BLOCKed for 'resolution' and status
    degraded, a profile calibrated for the new camera copied over policy.profile, the reload
    command: guarding resumes on the new profile and the status is online again."""
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    for path, size in ((old, "160x96"), (new, "128x96")):
        cal = _cfg(tmp_path, source={"uri": SYNTH.replace("160x96", size), "max_frames": 100},
                   file_sink={"dir": str(tmp_path / f"cal-{size}")})
        assert _run(Daemon(cal, notifier=Notifier(None), profile_out=path)) == 0
    live = tmp_path / "profile.json"
    live.write_bytes(old.read_bytes())
    reloaded: list[str] = []

    def operator(daemon: Daemon) -> None:
        p = daemon.progress()
        if not reloaded and p.reasons.get("resolution", 0) >= 20:
            live.write_bytes(new.read_bytes())
            reloaded.append(daemon.reload_profile())

    out = tmp_path / "swapped"
    cfg = _cfg(tmp_path, source={"uri": SYNTH.replace("160x96", "128x96"), "max_frames": 240, "realtime": True,
                                 "fps": 100.0}, policy={"profile": str(live)}, file_sink={"dir": str(out)})
    daemon = Daemon(cfg, notifier=Notifier(None), on_tick=operator)
    assert _run(daemon) == 0
    assert reloaded == [json.loads(new.read_text())["profile_id"]]
    verdicts = read_jsonl(out / "verdicts.jsonl")
    codes = [v["reasons"][0]["code"] if v["reasons"] else None for v in verdicts]
    first_guarded = next(i for i, c in enumerate(codes) if c != "resolution")
    assert first_guarded >= 20 and "resolution" not in codes[first_guarded:]
    assert daemon.progress().reasons.get("dark", 0) >= 30  # the dark window (frames 150-189) is caught
    states = [(st["state"], st["reason"]) for st in read_jsonl(out / "status.jsonl")]
    degraded = states.index(("degraded", "frames 128x96, profile 160x96: recalibrate"))
    assert ("online", "guarding") in states[degraded:], states


def test_commands_for_mqtt(tmp_path: Path) -> None:
    profile_path = tmp_path / "p.json"
    cfg = _cfg(tmp_path, source={"max_frames": 110})
    daemon = Daemon(cfg, notifier=Notifier(None), profile_out=profile_path)
    assert daemon.snapshot() is None
    assert _run(daemon) == 0
    snap = daemon.snapshot()
    assert snap is not None and snap.seq == 109 and snap.size_wh == (160, 96)
    info = daemon.ping()
    assert info["frames_processed"] == 110 and info["phase"] == "guarding"
    assert info["profile_id"] and info["model_sha256"] and info["config_hash"] == daemon.config_hash

    daemon.set_alphas(0.02, 0.002)
    assert daemon.cfg.policy.alpha_flag == 0.02
    with pytest.raises(ConfigError, match="alpha_block <= alpha_flag"):
        daemon.set_alphas(0.01, 0.05)
    with pytest.raises(ProfileError, match=r"no policy\.profile is configured"):
        daemon.reload_profile()
    daemon.cfg.policy.profile = profile_path
    assert daemon.reload_profile() == json.loads(profile_path.read_text())["profile_id"]


def test_ready_status_and_stopping_reach_systemd(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.0)
    try:
        daemon = Daemon(_cfg(tmp_path), notifier=Notifier(str(path)))
        assert _run(daemon) == 0
        messages: list[str] = []
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except BlockingIOError:
                break
    finally:
        sock.close()
    kinds = [m.split("\n")[0] for m in messages]
    assert kinds.count("READY=1") == 1
    ready = kinds.index("READY=1")
    assert "STATUS=warming up model" in kinds[:ready]
    # the start timeout is extended from model loading on (a TensorRT engine may build then)
    loading = kinds.index("STATUS=loading model")
    assert loading < kinds.index("STATUS=warming up model") < ready
    assert any(k.startswith("EXTEND_TIMEOUT_USEC=") for k in kinds[loading:ready])
    assert kinds[-1] == "STOPPING=1"
    assert any(m.startswith("STATUS=fps=") or "STATUS=calibrating" in m for m in messages)


def test_decisions_are_counted_by_reason(tmp_path: Path) -> None:
    rec = Recorder()
    daemon = Daemon(_cfg(tmp_path), notifier=Notifier(None), extra_sinks=[rec])
    assert _run(daemon) == 0
    p = daemon.progress()
    risky = [v for v in rec.verdicts if v.decision != Decision.PASS]
    assert risky and p.reasons.get("dark", 0) > 0  # the dark window (frames 150-190) was flagged
    assert p.decisions.get("FLAG", 0) + p.decisions.get("BLOCK", 0) == len(risky)
    assert set(p.reasons) == {code for v in risky for code in v.reason_codes}
    for code, count in p.reasons.items():
        assert count == sum(code in v.reason_codes for v in risky)


def test_sustained_change_raises_a_drift_event_in_every_sink(tmp_path: Path) -> None:
    # 180 dark frames after calibration: a sustained change, so the stats CUSUM raises its alarm once.
    rec = Recorder()
    cfg = _cfg(tmp_path, source={"uri": "synthetic://custom?faults=dark:150:330&size=160x96&seed=3",
                                 "max_frames": 360})
    assert _run(Daemon(cfg, notifier=Notifier(None), extra_sinks=[rec])) == 0
    starts = [e for e in rec.events if e["lifecycle"] == "start"]
    assert starts and all(e["type"] == "drift" and e["camera_id"] == "t1" for e in rec.events)
    assert 150 <= int(str(starts[0]["seq"])) < 330, "raised during the dark stretch"
    written = read_jsonl(tmp_path / "out" / "events.jsonl")
    assert [(e["detector"], e["lifecycle"], e["seq"]) for e in written] == [
        (e["detector"], e["lifecycle"], e["seq"]) for e in rec.events]
    assert starts[0]["detector"] in rec.health[-1].drift_alarms or any(e["lifecycle"] == "end" for e in rec.events)


def test_feature_squeezing_scores_reach_the_verdicts(tmp_path: Path) -> None:
    # calibration.squeeze on: the daemon runs the reference classifier on squeezed copies too, so
    # the adversarial_squeeze test is calibrated and scored (off by default: no score at all).
    rec = Recorder()
    cfg = _cfg(tmp_path, source={"uri": "synthetic://clean?size=96x64&seed=5", "max_frames": 30},
               calibration={"frames": 20, "squeeze": {"enabled": True}})
    daemon = Daemon(cfg, notifier=Notifier(None), extra_sinks=[rec])
    assert _run(daemon) == 0
    assert len(rec.verdicts) == 10
    scores = [v.scores.get("adversarial_squeeze") for v in rec.verdicts]
    assert all(s is not None and 0.0 <= s <= 2.0 for s in scores), scores
    assert daemon.scorer is not None and daemon.scorer.profile is not None
    assert "adversarial_squeeze" in {t.name for t in daemon.scorer.profile.tests}

    plain = Recorder()
    off = Daemon(_cfg(tmp_path / "off", source={"uri": "synthetic://clean?size=96x64&seed=5", "max_frames": 30},
                      calibration={"frames": 20}), notifier=Notifier(None), extra_sinks=[plain])
    assert _run(off) == 0
    assert plain.verdicts and all("adversarial_squeeze" not in v.scores or math.isnan(v.scores["adversarial_squeeze"])
                                  for v in plain.verdicts)


def test_failing_health_sink_exits_nonzero(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class BrokenHealth(Recorder):
        def publish_health(self, summary: HealthSummary) -> None:
            raise OSError("health sink broke on purpose")

    rec = BrokenHealth()
    cfg = _cfg(tmp_path, source={"uri": "synthetic://clean?size=64x48&fps=50", "realtime": True, "max_frames": None})
    daemon = Daemon(cfg, notifier=Notifier(None), extra_sinks=[rec])
    assert _run(daemon, timeout_s=30) == 1  # the first health tick (1 s) fails: exit 1, no hang
    assert "supervisor failed: health sink broke on purpose" in caplog.text
    assert rec.closed  # sinks are still closed (flushed)
    status = read_jsonl(tmp_path / "out" / "status.jsonl")
    assert status[-1]["state"] == "offline" and "health sink broke" in status[-1]["reason"]


def test_frames_lost_in_a_damaged_file_are_counted_in_health(tmp_path: Path) -> None:
    clip = damaged_clip(tmp_path / "damaged.mp4", 120)
    probe = OpenCVSource(SourceConfig(uri=str(clip)), "probe")
    decoded = sum(1 for _ in iter(probe.read, None))
    lost = probe.skipped_frames
    assert lost > 0 and decoded + lost == 120
    cfg = _cfg(tmp_path, source={"uri": str(clip), "max_frames": None}, calibration={"frames": 40})
    daemon = Daemon(cfg, notifier=Notifier(None))
    assert _run(daemon) == 0
    health = [HealthSummary.model_validate(h) for h in read_jsonl(tmp_path / "out" / "health.jsonl")]
    # Every frame of the file is accounted for: guarded, or reported as corrupt (none silently gone).
    assert sum(h.frames_in for h in health) == decoded
    assert sum(h.frames_corrupt for h in health) == lost
    assert sum(h.frames_skipped for h in health) == 0 == probe.skipped_slots


def test_the_missing_end_of_a_truncated_file_is_reported_in_health(tmp_path: Path) -> None:
    """The container declares 100 frames, the last tenth of the file is zeros: what never came is in
    the final health summary's frames_skipped, not only in a log line."""
    clip = damaged_clip(tmp_path / "cut.avi", 100, damage=(0.9, 1.0), fourcc="MJPG")  # as in test_sources
    cfg = _cfg(tmp_path, source={"uri": str(clip), "max_frames": None}, calibration={"frames": 40})
    assert _run(Daemon(cfg, notifier=Notifier(None))) == 0
    health = [HealthSummary.model_validate(h) for h in read_jsonl(tmp_path / "out" / "health.jsonl")]
    read = sum(h.frames_in for h in health)
    assert 80 <= read < 100 and sum(h.frames_corrupt for h in health) == 0
    assert sum(h.frames_skipped for h in health) == 100 - read


def test_slots_a_demuxer_skipped_silently_are_reported_in_health(tmp_path: Path) -> None:
    """A Matroska demuxer drops damaged packets without a failed read: not corrupt (a pause looks
    the same), but health's frames_skipped says how many frame slots the timestamps jumped."""
    clip = damaged_clip(tmp_path / "damaged.mkv", 100, damage=(0.3, 0.5), fourcc="MJPG")  # as in test_sources
    probe = OpenCVSource(SourceConfig(uri=str(clip)), "probe")
    decoded = sum(1 for _ in iter(probe.read, None))
    assert probe.skipped_slots > 0 and probe.corrupt_frames == 0 and decoded + probe.skipped_slots == 100
    cfg = _cfg(tmp_path, source={"uri": str(clip), "max_frames": None}, calibration={"frames": 40})
    assert _run(Daemon(cfg, notifier=Notifier(None))) == 0
    health = [HealthSummary.model_validate(h) for h in read_jsonl(tmp_path / "out" / "health.jsonl")]
    assert sum(h.frames_in for h in health) == decoded
    assert (sum(h.frames_skipped for h in health), sum(h.frames_corrupt for h in health)) == (probe.skipped_slots, 0)
