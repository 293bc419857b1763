"""``edge-guard bench``: what this device sustains with this config, and regressions against a baseline.

Measures, within ``--duration`` seconds of timed loops (plus start-up): the statistics
backends (CPU, and CUDA when usable) at the camera's resolution and at 720p/1080p/4K; the
model's latency per ONNX Runtime provider the session really uses; the pipeline on the same
frames with and without the guard (the guard overhead ratio) and end to end with decoding;
peak RSS and GPU memory; and publisher throughput to the configured MQTT broker. Prints a
table, writes JSON with machine info, and with ``--compare old.json`` exits 3 on a regression.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import resource
import socket
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent import __version__, exitcodes
from agent.argtypes import float_arg
from agent.config import GuardConfig, Overrides, load_config
from agent.errors import ConfigError, GuardError, ProfileError
from agent.fieldtools.benchreport import (
    compare_reports,
    format_bench,
    format_compare,
    gpu_info,
    machine_info,
    metrics_of,
)
from agent.frame import Frame
from agent.fsutil import check_output, write_output
from agent.logsetup import configure_logging
from agent.model.factory import load_model, load_warm_model, warm_up
from agent.pipeline import load_profile
from agent.scoring.calibrate import MIN_KEPT, Calibrator
from agent.scoring.policy import Guard
from agent.scoring.profile import Profile
from agent.sources.factory import open_source
from agent.sources.oneshot import GiveUpReader
from agent.stats.config import StatsConfig
from agent.stats.factory import create_backend, cuda_unavailable_reason
from agent.term import ProgressBar

__all__ = ["REPORT_FORMAT", "RESOLUTIONS", "BenchOptions", "add_parser", "cmd_bench", "run_bench"]

logger = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
REPORT_FORMAT = "edge-guard-bench"
RESOLUTIONS: dict[str, tuple[int, int]] = {"720p": (1280, 720), "1080p": (1920, 1080), "4K": (3840, 2160)}
#: Frames read from the source for the pipeline loop (and a start-up profile when none fits).
PIPELINE_FRAMES = 40
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}

_EPILOG = """\
examples:
  edge-guard bench --config /etc/edge-guard/cam1.yaml --out bench-$(hostname).json
  edge-guard bench --config cam1.yaml --compare bench-before-update.json --threshold 0.15
  edge-guard bench --source ../shared/data/videos/opencv_vtest.avi --duration 5

What the numbers mean:
  statistics fps      frames/s of the stats backend alone, at the camera size and 720p/1080p/4K
  model p50/p99       latency of one frame (preprocess + inference + decode) per provider that the
                      ONNX Runtime session really uses (a provider that falls back is listed as skipped)
  guard overhead      (stats + model + scoring) / model alone, same frames, same run: 1.10x = guard costs 10%
  end-to-end fps      decode + stats + model + scoring on one thread (the daemon overlaps stages: a floor)
Without --config it uses the built-in defaults (synthetic camera, reference model).
exit codes: 0 ok, 3 --compare found a regression (throughput down / latency up by more than
--threshold), 78 bad config or an --out that cannot be written (checked before measuring).
"""


@dataclass
class BenchOptions:
    """What ``run_bench`` needs besides the config."""

    duration_s: float = 12.0
    progress: bool = True
    config_path: str | None = None


def _timed(fn: Callable[[], object], budget_s: float, min_runs: int = 5, max_runs: int = 100_000) -> list[float]:
    """Run ``fn`` until ``budget_s`` passed (at least ``min_runs`` times); per-run milliseconds."""
    ms: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(ms) < max_runs and (len(ms) < min_runs or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def _summary(ms: list[float]) -> dict[str, Any]:
    a = np.asarray(ms, dtype=np.float64)
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3), "mean_ms": round(float(a.mean()), 3),
            "fps": round(1e3 / float(a.mean()), 1)}


def read_frames(cfg: GuardConfig, n: int) -> tuple[list[U8], float, bool]:
    """Up to ``n`` frames of ``cfg.source`` (not paced), mean decode ms per frame, and whether it is live."""
    source = GiveUpReader(open_source(
        cfg.source.model_copy(update={"realtime": False, "loop": False, "max_frames": None}), cfg.camera_id))
    frames: list[U8] = []
    t0 = time.perf_counter()
    try:
        while len(frames) < n:
            frame = source.read()
            if frame is None:
                break
            frames.append(frame.image)
        live = bool(source.source.live)
    finally:
        source.close()
    if not frames:
        raise GuardError(f"bench: source {cfg.source.uri} gave no frame")
    return frames, (time.perf_counter() - t0) * 1e3 / len(frames), live


def bench_stats(cfg: GuardConfig, frame: U8, budget_s: float, step: Callable[[], None]) -> tuple[list[Any], list[str]]:
    """Throughput of each usable statistics backend at the camera size and the standard resolutions."""
    h, w = frame.shape[:2]
    sizes = {f"camera {w}x{h}": frame} | {
        name: np.asarray(cv2.resize(frame, wh, interpolation=cv2.INTER_LINEAR), dtype=np.uint8)
        for name, wh in RESOLUTIONS.items()
    }
    backends = ["cpu"]
    skipped: list[str] = []
    reason = cuda_unavailable_reason()
    if reason is None:
        backends.append("cuda")
    else:
        skipped.append(f"cuda statistics: skipped ({reason})")
    rows: list[Any] = []
    per_case = budget_s / (len(backends) * len(sizes))
    for name in backends:
        backend = create_backend(StatsConfig(backend=name, grid=cfg.stats.grid, launcher=cfg.stats.launcher))
        for label, img in sizes.items():
            backend.compute(img, key="bench")  # warm-up (and CUDA buffer allocation)
            ms = _timed(functools.partial(backend.compute, img, key="bench"), per_case, min_runs=3)
            backend.reset("bench")
            rows.append({"backend": name, "resolution": label.split()[0],
                         "size_wh": [int(img.shape[1]), int(img.shape[0])], **_summary(ms)})
            step()
    return rows, skipped


def model_providers() -> list[str]:
    """Our provider names whose ONNX Runtime provider this onnxruntime build lists."""
    from agent.model.onnx_runner import import_onnxruntime  # noqa: PLC0415 (onnxruntime only when used)

    available = set(import_onnxruntime().get_available_providers())
    return [p for p, ort_name in _PROVIDERS.items() if ort_name in available]


def bench_model(cfg: GuardConfig, frame: U8, budget_s: float, step: Callable[[], None]) -> list[dict[str, Any]]:
    """Latency per provider the onnxruntime build offers; a provider the session does not use is skipped."""
    if not cfg.model.enabled:
        return [{"provider": "-", "skipped": "model disabled in the config"}]
    wanted = model_providers()
    rows: list[dict[str, Any]] = []
    per = budget_s / max(1, len(wanted))
    for p, ort_name in _PROVIDERS.items():
        if p not in wanted:
            rows.append({"provider": p, "skipped": "not in this onnxruntime build"})
            continue
        try:
            model = load_model(cfg.model.model_copy(update={"providers": [p]}))
        except GuardError as exc:
            rows.append({"provider": p, "skipped": f"could not start: {exc}"})
            step()
            continue
        assert model is not None
        used = model.info.provider
        if used != ort_name:
            rows.append({"provider": p, "ort_provider": used, "skipped": f"session fell back to {used}"})
            step()
            continue
        warm_up(model)
        ms = _timed(functools.partial(model.infer, [frame]), per, min_runs=10)
        summary = _summary(ms)
        summary.pop("fps")
        rows.append({"provider": p, "ort_provider": used, **summary})
        step()
    return rows


def _bench_profile(cfg: GuardConfig, frames: list[U8], stats: Any, model: Any) -> tuple[Profile, str]:
    sha = model.info.sha256 if model is not None else None
    h, w = frames[0].shape[:2]
    if cfg.policy.profile is not None:
        try:
            return load_profile(Path(cfg.policy.profile), sha, stats.grid, (w, h)), f"file {cfg.policy.profile}"
        except ProfileError as exc:
            logger.warning("bench: policy.profile does not fit (%s); calibrating on the bench frames", exc)
    if len(frames) < MIN_KEPT:
        raise ProfileError(f"the source gave {len(frames)} frames; a timing profile needs at least {MIN_KEPT}")
    cal = Calibrator(cfg.calibration.model_copy(update={"frames": len(frames), "skip": 0, "stride": 1}), stats.grid)
    for img in frames:
        cal.update(stats.compute(img, key="bench-cal"), model.infer([img])[0] if model is not None else None)
    stats.reset("bench-cal")
    profile = cal.build(model_sha256=sha)
    return profile, f"calibrated on the {len(frames)} bench frames (for timing only)"


def bench_pipeline(cfg: GuardConfig, frames: list[U8], decode_ms: float, live: bool, budget_s: float) -> dict[str, Any]:
    """Model alone vs stats + model + guard on the same frames, alternating passes within the budget."""
    stats = create_backend(cfg.stats)
    model = load_warm_model(cfg.model)
    try:
        profile, origin = _bench_profile(cfg, frames, stats, model)
    except ProfileError as exc:
        return {"skipped": str(exc)}
    guard = Guard(profile, cfg.policy)
    model_ms: list[float] = []
    full_ms: list[float] = []
    stats_ms: list[float] = []
    score_ms: list[float] = []
    deadline = time.perf_counter() + budget_s
    passes = 0
    while passes < 1 or time.perf_counter() < deadline:
        if model is not None:
            for img in frames:
                t0 = time.perf_counter()
                model.infer([img])
                model_ms.append((time.perf_counter() - t0) * 1e3)
        stats.reset("bench")
        guard.reset()
        for seq, img in enumerate(frames):
            t0 = time.perf_counter()
            st = stats.compute(img, key="bench")
            t1 = time.perf_counter()
            out = model.infer([img])[0] if model is not None else None
            t2 = time.perf_counter()
            guard.update(Frame(img, cfg.camera_id, seq, time.time(), time.monotonic(), live=live), st, out)
            t3 = time.perf_counter()
            full_ms.append((t3 - t0) * 1e3)
            stats_ms.append((t1 - t0) * 1e3)
            score_ms.append((t3 - t2) * 1e3)
        passes += 1
    full = float(np.mean(full_ms))
    alone = float(np.mean(model_ms)) if model_ms else None
    return {
        "frames": len(frames), "passes": passes, "profile": origin, "stats_backend": stats.name,
        "model_ms": None if alone is None else round(alone, 3),
        "model_guard_ms": round(full, 3),
        "stats_ms": round(float(np.mean(stats_ms)), 3),
        "score_ms": round(float(np.mean(score_ms)), 3),
        "guard_overhead_ratio": None if not alone else round(full / alone, 3),
        "decode_ms": round(decode_ms, 3),
        "e2e_fps": round(1e3 / (decode_ms + full), 1),
    }


def bench_publisher(cfg: GuardConfig, budget_s: float) -> dict[str, Any]:
    """Health messages/s acknowledged by the configured broker, as a separate bench identity.

    The bench publishes under ``<prefix>/bench`` with node ``<node>-bench``, its own client id
    and a temporary spool, so it never kicks the running agent off the broker nor mixes its
    messages into the agent's topics.
    """
    if cfg.mqtt is None:
        return {"skipped": "no broker configured"}
    host, port = cfg.mqtt.host, cfg.mqtt.port
    try:
        socket.create_connection((host, port), timeout=min(2.0, cfg.mqtt.connect_timeout_s)).close()
    except OSError as exc:
        return {"skipped": f"broker {host}:{port} unreachable ({exc})"}
    from agent.health import HealthSummary  # noqa: PLC0415 (paho only when a broker is configured)
    from agent.sinks.mqtt.identity import AgentIdentity  # noqa: PLC0415
    from agent.sinks.mqtt.sink import MqttSink  # noqa: PLC0415

    node = f"{cfg.mqtt.node or cfg.node}-bench"
    with tempfile.TemporaryDirectory(prefix="edge-guard-bench-") as tmp:
        mcfg = cfg.mqtt.model_copy(update={
            "prefix": f"{cfg.mqtt.prefix}/bench", "node": node,
            # never the agent's own id: the broker would hand the running agent's session to the bench
            "client_id": f"{cfg.mqtt.client_id}-bench" if cfg.mqtt.client_id else f"edge-guard-{cfg.site}-{node}",
            "spool": cfg.mqtt.spool.model_copy(update={"path": Path(tmp) / "spool.sqlite"}),
            "commands": cfg.mqtt.commands.model_copy(update={"enabled": False}),
        })
        try:
            sink = MqttSink(mcfg, AgentIdentity.create(cfg.site, node, ["bench"]))
        except ConfigError as exc:  # e.g. a systemd credential, run from a shell: the rest of the report stands
            return {"skipped": f"cannot connect as configured: {exc}"}
        try:
            deadline = time.monotonic() + mcfg.connect_timeout_s + 1.0
            while not sink.conn.connected and time.monotonic() < deadline:
                time.sleep(0.02)
            if not sink.conn.connected:
                return {"skipped": f"broker {host}:{port} did not accept the connection"}
            t0 = time.monotonic()
            sent = 0
            while time.monotonic() - t0 < budget_s * 0.7:
                now = time.time()
                sink.publish_health(HealthSummary(camera_id="bench", seq=sent, window_start_ts=now - 1.0,
                                                  window_end_ts=now, source_state="up"))
                sent += 1
            drain = time.monotonic() + max(1.0, budget_s * 0.3)
            while sink.backlog().queued_msgs > 0 and time.monotonic() < drain:
                time.sleep(0.01)
            seconds = time.monotonic() - t0
            # what left the spool was acknowledged (QoS 1); the spool also holds the status messages
            delivered = max(0, sent - sink.backlog().queued_msgs)
            return {"broker": f"{host}:{port}", "sent": sent, "acked": delivered, "seconds": round(seconds, 2),
                    "msgs_per_s": round(delivered / seconds, 1)}
        finally:
            sink.close()


def run_bench(cfg: GuardConfig, opts: BenchOptions) -> dict[str, Any]:
    """Every measurement of the module docstring; the report dict."""
    t_start = time.perf_counter()
    d = opts.duration_s
    frames, decode_ms, live = read_frames(cfg, PIPELINE_FRAMES)
    n_backends = 2 if cuda_unavailable_reason() is None else 1
    n_steps = (1 + len(RESOLUTIONS)) * n_backends + (len(model_providers()) if cfg.model.enabled else 0) + 2
    bar = ProgressBar(n_steps, "measurements") if opts.progress else None
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if bar is not None:
            bar.update(min(done, n_steps))

    try:
        stats_rows, stats_skipped = bench_stats(cfg, frames[0], 0.35 * d, step)
        model_rows = bench_model(cfg, frames[0], 0.25 * d, step)
        pipeline = bench_pipeline(cfg, frames, decode_ms, live, 0.3 * d)
        step()
        publisher = bench_publisher(cfg, max(1.0, 0.1 * d))
        step()
    finally:
        if bar is not None:
            bar.update(n_steps)
            bar.close()
    gpu = gpu_info()
    h, w = frames[0].shape[:2]
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "format_version": 1,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "edge_guard_version": __version__,
        "config": opts.config_path,
        "source": cfg.source.uri,
        "camera_wh": [w, h],
        "duration_s": round(time.perf_counter() - t_start, 2),
        "machine": machine_info(),
        "stats": stats_rows,
        "stats_skipped": stats_skipped,
        "model": model_rows,
        "pipeline": pipeline,
        "memory": {
            # ru_maxrss is in KiB on Linux
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
            "gpu_memory": (f"{gpu['gpu_memory_process_mb']} MB (this process)"
                           if gpu.get("gpu_memory_process_mb") is not None else "n/a"),
        },
        "publisher": publisher,
    }
    report["metrics"] = metrics_of(report)
    return report


def cmd_bench(args: argparse.Namespace) -> int:
    """The ``bench`` subcommand."""
    overrides = Overrides()
    if args.source:
        overrides.set("source.uri", args.source, "--source")
    cfg = load_config(args.config, overrides)
    configure_logging(args.log_level or "WARNING", cfg.camera_id)
    if args.out is not None:
        # (--out may be the --compare file: a rolling baseline, read before the atomic write)
        check_output(args.out, "--out", inputs=[args.config, *cfg.input_files()])
    if args.compare is None and args.threshold != 0.1:
        logger.warning("--threshold %g is ignored without --compare (it is the regression margin)", args.threshold)
    old: dict[str, Any] | None = None
    if args.compare is not None:
        try:
            old = json.loads(Path(args.compare).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--compare {args.compare}: cannot read a bench JSON report ({exc})") from exc
        if not isinstance(old, dict) or old.get("format") != REPORT_FORMAT:
            raise ConfigError(f"--compare {args.compare}: not an edge-guard bench report (format {REPORT_FORMAT})")
    report = run_bench(cfg, BenchOptions(duration_s=args.duration, progress=not args.no_progress,
                                         config_path=None if args.config is None else str(args.config)))
    code = exitcodes.OK
    if old is not None:
        rows = compare_reports(old, report, args.threshold)
        report["compare"] = {"baseline": str(args.compare), "threshold": args.threshold, "rows": rows}
        if any(r["status"] == "REGRESSION" for r in rows):
            code = exitcodes.REGRESSION
    print(format_bench(report))
    if old is not None:
        info = f"{args.compare} ({old.get('created_at', '?')}, {old.get('machine', {}).get('host', '?')})"
        print()
        print(format_compare(report["compare"]["rows"], args.threshold, info))
    if args.out is not None:
        write_output(args.out, (json.dumps(report, indent=1) + "\n").encode("utf-8"), "--out")
        print(f"\nwritten: {args.out}")
    return code


_duration = float_arg(lambda v: 1.0 <= v <= 3600.0, "expected seconds in 1..3600")
_fraction = float_arg(lambda v: 0.0 < v < 10.0, "expected a fraction such as 0.1 (= 10%)")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``edge-guard bench``."""
    p = sub.add_parser(
        "bench", help="measure this device: stats, model, pipeline, memory, publisher; compare with a baseline",
        description="Measure what this device sustains with this config and flag regressions against a saved run.",
        epilog=textwrap.dedent(_EPILOG), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_bench)
    p.add_argument("--config", type=Path, default=None, help="YAML config (default: built-in defaults)")
    p.add_argument("--source", default=None, help="override source.uri (video file, folder, camera URL)")
    p.add_argument("--duration", type=_duration, default=12.0, help="seconds of timed loops (default 12)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--compare", type=Path, default=None, help="a previous bench JSON: flag regressions, exit 3")
    p.add_argument("--threshold", type=_fraction, default=0.1,
                   help="regression threshold as a fraction (default 0.1 = 10%%)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p
