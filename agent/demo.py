"""``edge-guard demo``: the whole pipeline on a synthetic camera (or a video) with a live table.

With no arguments: the synthetic camera ``synthetic://default`` (a clean stretch, then every
fault type in turn with clean gaps), the embedded reference model, calibration on the first
clean frames, then guarding. The table at the end gives, for each injected fault type, the
share of its frames that were flagged or blocked, and the share of clean frames flagged —
the realised false-alarm rate to compare with ``policy.alpha_flag``.

With ``--source VIDEO`` it calibrates on the first part of the file and guards the rest; there
is no ground truth then, so the table shows decisions and reasons.

Frames are processed as fast as the machine allows (no pacing, nothing dropped) unless
``--realtime``. Outputs (verdicts.jsonl, health.jsonl, status.jsonl, events.jsonl, frames/, summary.json)
go to ``--out`` (default ``./runs/demo``).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from agent import exitcodes
from agent.config import GuardConfig, Overrides, load_config
from agent.daemon import Daemon
from agent.errors import SourceConfigError
from agent.frame import Frame
from agent.fsutil import check_output
from agent.health import HealthSummary
from agent.logsetup import redirect
from agent.scoring.config import CalibrationConfig
from agent.sdnotify import Notifier
from agent.sinks.base import CameraState
from agent.sources.synthetic import parse_synthetic_uri
from agent.stats.factory import backend_note
from agent.term import LiveView, ViewStream, format_table
from agent.verdict import Decision, Verdict

__all__ = ["CLEAN", "DemoResult", "Tally", "add_arguments", "demo_config", "run_demo"]

#: Row name of frames without an injected fault.
CLEAN = "clean"
DEFAULT_OUT = Path("runs/demo")
_DEFAULT_VIDEO_CALIBRATION = 300


def _min_calibration_frames() -> int:
    """The smallest calibration.frames the config accepts (its ``ge`` bound)."""
    for bound in CalibrationConfig.model_fields["frames"].metadata:
        ge = getattr(bound, "ge", None)
        if ge is not None:
            return int(ge)
    return 1


_MIN_CALIBRATION = _min_calibration_frames()


@dataclass
class Row:
    """Counts for one fault type (or clean frames)."""

    frames: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def caught(self) -> int:
        """Frames flagged or blocked."""
        return self.decisions["FLAG"] + self.decisions["BLOCK"]

    @property
    def share(self) -> float:
        return self.caught / self.frames if self.frames else 0.0

    def top_reasons(self, n: int = 3) -> str:
        return ", ".join(f"{code} {count}" for code, count in self.reasons.most_common(n)) or "-"


class Tally:
    """A sink that counts verdicts per injected fault (ground truth from the synthetic camera)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: dict[str, Row] = {}
        self.current_fault: str | None = None
        self.health: list[HealthSummary] = []
        self.status: list[tuple[str, str]] = []

    def publish_verdict(self, verdict: Verdict, frame: Frame) -> None:
        key = frame.fault or CLEAN
        with self._lock:
            row = self.rows.setdefault(key, Row())
            row.frames += 1
            row.decisions[str(verdict.decision)] += 1
            if verdict.decision != Decision.PASS:
                row.reasons.update(verdict.reason_codes)
            self.current_fault = frame.fault

    def publish_health(self, summary: HealthSummary) -> None:
        with self._lock:
            self.health.append(summary)

    def publish_camera_status(self, camera_id: str, state: CameraState, reason: str) -> None:
        with self._lock:
            self.status.append((state, reason))

    def publish_event(self, event: dict[str, object]) -> None:
        pass  # the live table shows verdict counts; drift shows in the health summaries

    def stats(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass

    def snapshot(self) -> dict[str, Row]:
        """A copy of the rows (thread-safe)."""
        with self._lock:
            return {k: Row(r.frames, Counter(r.decisions), Counter(r.reasons)) for k, r in self.rows.items()}


@dataclass
class DemoResult:
    """What the demo measured (also written to ``summary.json``)."""

    source: str
    out_dir: Path
    seconds: float
    frames_in: int
    frames_processed: int
    frames_calibrated: int
    alpha_flag: float
    rows: dict[str, Row]
    ground_truth: bool
    exit_code: int
    #: What computed what (``Daemon.backends()``), with why the statistics are not on CUDA.
    backends: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "out_dir": str(self.out_dir), "seconds": round(self.seconds, 2),
            "frames_in": self.frames_in, "frames_processed": self.frames_processed,
            "frames_calibrated": self.frames_calibrated, "alpha_flag": self.alpha_flag,
            "ground_truth": self.ground_truth, "exit_code": self.exit_code, "backends": dict(self.backends),
            "rows": {k: {"frames": r.frames, "caught": r.caught, "share": r.share,
                         "decisions": dict(r.decisions), "reasons": dict(r.reasons)} for k, r in self.rows.items()},
        }


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo's command-line options (``edge-guard demo --help``)."""
    p.add_argument("--source", default=None,
                   help="synthetic://default (faults injected; the default unless --config names a source), "
                   "a video file, a folder or a camera")
    p.add_argument("--model", type=Path, default=None,
                   help="ONNX model (default: the embedded reference model); set its preprocessing with --config")
    p.add_argument("--config", type=Path, default=None,
                   help="start from this config (model, preprocessing, stats, policy); the demo sets "
                   "source, calibration and outputs")
    p.add_argument("--frames", type=int, default=None, help="stop after N frames (default: the whole scenario or file)")
    p.add_argument("--calibration-frames", type=int, default=None,
                   help="frames to calibrate on (default: the synthetic clean start, or 300 for a video)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default ./{DEFAULT_OUT})")
    p.add_argument("--no-live", action="store_true", help="no live table, only the closing table")
    p.add_argument("--realtime", action="store_true", help="pace the source at its fps (default: as fast as possible)")


def demo_config(args: argparse.Namespace) -> tuple[GuardConfig, bool]:
    """The demo's config and whether the source has ground truth (synthetic faults)."""
    source_flag = None if args.source is None else "--source"  # else the default or the --config file's
    if args.source is None:
        args.source = load_config(args.config).source.uri if args.config is not None else "synthetic://default"
    synthetic = str(args.source).startswith("synthetic:")
    if args.calibration_frames is not None:
        cal_frames = args.calibration_frames
    elif synthetic:
        try:
            spec = parse_synthetic_uri(args.source)
        except SourceConfigError:  # load_config reports it below, naming --source when that gave it
            spec = None
        first_fault = spec.schedule.windows[0].start if spec is not None and len(spec.schedule) else 400
        # calibrate on the clean start, keeping a quarter of it to show clean frames being guarded
        cal_frames = max(_MIN_CALIBRATION, min(300, first_fault * 3 // 4))
    else:
        cal_frames = _video_calibration_frames(str(args.source))
    overrides = Overrides()
    overrides.set("camera_id", "demo")
    overrides.set("source.uri", str(args.source), source_flag)
    overrides.set("source.realtime", bool(args.realtime))
    overrides.set("source.max_frames", args.frames, None if args.frames is None else "--frames")
    overrides.set("calibration.frames", cal_frames, None if args.calibration_frames is None else "--calibration-frames")
    overrides.set("calibration.skip", 0)
    overrides.set("policy.profile", None)
    overrides.set("file_sink.dir", str(args.out), "--out")
    overrides.set("health.interval_s", 5.0)
    overrides.set("mqtt", None)
    if args.model is not None:
        overrides.set("model.path", str(args.model), "--model")
    return load_config(args.config, overrides), synthetic


def _video_calibration_frames(source: str) -> int:
    """300 frames, or 40% of a shorter video file (the container's count, when it says)."""
    if not Path(source).is_file():
        return _DEFAULT_VIDEO_CALIBRATION
    cap = cv2.VideoCapture(source)
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    if count <= 0:
        return _DEFAULT_VIDEO_CALIBRATION
    return max(_MIN_CALIBRATION, min(_DEFAULT_VIDEO_CALIBRATION, count * 2 // 5))


def _live_text(daemon: Daemon, tally: Tally, source: str, t0: float) -> str:
    p = daemon.progress()
    elapsed = max(time.monotonic() - t0, 1e-9)
    head = f"edge-guard demo  {source}  ->  {daemon.cfg.file_sink.dir}"
    if p.phase == "calibrating":
        line = f"calibrating {p.frames_calibrated}/{daemon.cfg.calibration.frames}"
    else:
        line = "guarding"
    line += f"   frames {p.frames_processed} (read {p.frames_in})   {p.frames_processed / elapsed:5.1f} fps"
    line += f"   dropped {p.frames_dropped}   {elapsed:4.0f} s"
    if tally.current_fault:
        line += f"   injected now: {tally.current_fault}"
    rows = tally.snapshot()
    table = format_table(
        ["", "frames", "PASS", "FLAG", "BLOCK", "reasons"],
        [[k, r.frames, r.decisions["PASS"], r.decisions["FLAG"], r.decisions["BLOCK"], r.top_reasons()]
         for k, r in sorted(rows.items(), key=lambda kv: (kv[0] != CLEAN, kv[0]))],
        right=(1, 2, 3, 4),
    )
    return f"{head}\n{line}\n\n{table}"


def _backends_line(backends: dict[str, str]) -> str:
    """``backends: stats cpu (no NVIDIA driver ...), model onnxruntime:CPUExecutionProvider`` (or nothing)."""
    if not backends:
        return ""
    return "backends: " + ", ".join(f"{k} {v}" for k, v in backends.items()) + "\n"


def closing_table(result: DemoResult) -> str:
    """The table printed at the end (and what tests assert on)."""
    rows = result.rows
    if result.ground_truth:
        faults = sorted(k for k in rows if k != CLEAN)
        body = [[k, rows[k].frames, rows[k].caught, f"{100 * rows[k].share:5.1f}%", rows[k].top_reasons()]
                for k in faults]
        clean = rows.get(CLEAN, Row())
        body.append([f"{CLEAN} (false alarms)", clean.frames, clean.caught, f"{100 * clean.share:5.1f}%",
                     clean.top_reasons()])
        table = format_table(["injected fault", "frames", "flagged+blocked", "share", "top reasons"], body,
                             right=(1, 2, 3))
        note = (f"clean frames are those guarded after calibration; alpha_flag = {result.alpha_flag:g} "
                f"is the configured false-alarm rate")
    else:
        total = Row()
        for r in rows.values():
            total.frames += r.frames
            total.decisions.update(r.decisions)
            total.reasons.update(r.reasons)
        body = [[d, total.decisions[d], f"{100 * total.decisions[d] / max(total.frames, 1):5.1f}%"]
                for d in ("PASS", "FLAG", "BLOCK")]
        table = format_table(["decision", "frames", "share"], body, right=(1, 2))
        reasons = format_table(["reason", "frames"], [[c, n] for c, n in total.reasons.most_common()] or [["-", 0]],
                               right=(1,))
        table += "\n\n" + reasons
        note = "no ground truth for this source: decisions and reasons of the guarded frames"
    return (
        f"\nedge-guard demo: {result.source}\n"
        f"{result.frames_processed} frames in {result.seconds:.1f} s "
        f"({result.frames_processed / max(result.seconds, 1e-9):.1f} fps); calibrated on "
        f"{result.frames_calibrated}, guarded {result.frames_processed - result.frames_calibrated}\n"
        f"{_backends_line(result.backends)}\n"
        f"{table}\n\n{note}\n"
        f"outputs: {result.out_dir}/ (verdicts.jsonl, health.jsonl, status.jsonl, events.jsonl, frames/, "
        "summary.json)\n"
    )


def _backends(daemon: Daemon, cfg: GuardConfig) -> dict[str, str]:
    """``Daemon.backends()``, the statistics entry with why it is not CUDA when it was not asked to be CPU."""
    out = daemon.backends()
    if daemon.stats is not None and cfg.stats.backend != "cpu":
        note = backend_note(daemon.stats, cfg.stats)
        if note:
            out["stats"] = f"{out['stats']} ({note})"
    return out


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo (see the module docstring); prints the closing table on stdout."""
    check_output(args.out, "--out", folder=True)
    cfg, ground_truth = demo_config(args)
    tally = Tally()
    view = LiveView(plain_every_s=5.0)
    t0 = time.monotonic()

    def on_tick(d: Daemon) -> None:
        if not args.no_live:
            view.show(_live_text(d, tally, str(args.source), t0))

    # Notifier(None): the demo is never the systemd service, even if started from one.
    daemon = Daemon(cfg, notifier=Notifier(None), extra_sinks=[tally], on_tick=on_tick)
    # Log lines are printed above the live table instead of tearing it.
    previous = redirect(ViewStream(view)) if not args.no_live and view.tty else None
    try:
        code = daemon.run()
    finally:
        if previous is not None:
            redirect(previous)
    if not args.no_live:
        view.show(_live_text(daemon, tally, str(args.source), t0), force=True)
        view.finish()
    p = daemon.progress()
    result = DemoResult(
        source=str(args.source), out_dir=Path(cfg.file_sink.dir), seconds=time.monotonic() - t0,
        frames_in=p.frames_in, frames_processed=p.frames_processed, frames_calibrated=p.frames_calibrated,
        alpha_flag=cfg.policy.alpha_flag, rows=tally.snapshot(), ground_truth=ground_truth, exit_code=code,
        backends=_backends(daemon, cfg),
    )
    if p.phase == "calibrating":
        print(f"edge-guard demo: the source ended after {p.frames_processed} frames, before calibration "
              f"finished ({cfg.calibration.frames} frames needed): nothing was guarded; use a longer "
              f"source or a smaller --calibration-frames (at least {_MIN_CALIBRATION})")
        return exitcodes.FAILURE
    print(closing_table(result))
    (Path(cfg.file_sink.dir) / "summary.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    return code
