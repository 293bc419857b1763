"""``edge-guard stress``: corruption sweep, shortcut probes and deployment gates for a model + guard.

Wires the parts: inputs and profile (``stressinputs``), the sweep (``robustness``), probes and
confidence slices (``probes``), gates (``gates``), the PNG (``plots``) and the text
(``stressreport``). Writes ``stress.json``, ``stress.txt`` and ``robustness.png`` to ``--out``
and exits 3 (``exitcodes.REGRESSION``) when a gate fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent import __version__, exitcodes
from agent.argtypes import float_arg
from agent.config import GuardConfig, config_hash, load_config
from agent.corruptions import CORRUPTIONS_VERSION, SEVERITIES, resolve_names
from agent.errors import ConfigError
from agent.fieldtools.gates import Gate, evaluate_gates, gate_cells, load_gates
from agent.fieldtools.plots import robustness_png
from agent.fieldtools.probes import confidence_slices, run_probes
from agent.fieldtools.robustness import Evaluator, find_cliffs, robustness_curves, sweep
from agent.fieldtools.stressinputs import build_profile, load_inputs, parse_labels, parse_size
from agent.fieldtools.stressreport import format_report
from agent.fsutil import check_output
from agent.logsetup import configure_logging
from agent.model.factory import load_warm_model
from agent.scoring.policy import Guard
from agent.scoring.profile import Profile
from agent.stats.factory import create_backend
from agent.term import ProgressBar

__all__ = ["REPORT_FORMAT", "StressOptions", "add_parser", "cmd_stress", "run_stress"]

logger = logging.getLogger(__name__)

REPORT_FORMAT = "edge-guard-stress"
REPORT_VERSION = 1

_EPILOG = """\
examples:
  edge-guard stress --config configs/squeezenet.yaml --images ../shared/data/images/photos
  edge-guard stress --config cam1.yaml --source clean-recording.mp4 --gates gates.yaml --out runs/stress
  edge-guard stress --config cam1.yaml --images stills/ --corruptions fog,glare --severities 1,3,5
  edge-guard stress --config cam1.yaml --images stills/ --labels stills/labels.csv --corruptions imagenet-c

what it measures, for every corruption x severity (no labels needed):
  flip rate        share of images whose prediction changes against the clean image
  conf drop        mean drop of the model's top-1 confidence (or best detection score)
  guard flagged    share the guard FLAGs or BLOCKs (it should rise with severity)
  silent flips     prediction changed AND the guard said PASS: failures nobody would see
  accuracy         with --labels (lines "image_name,class" with a class index or name)
plus shortcut probes (corners, border strips, background masked) and confidence slices by
brightness / blur / saturation. Corruption groups: camera (default), imagenet-c, all.

profile: policy.profile from the config, else calibrated on the inputs first (the output
says which). Images are centre-cropped and resized to one size (the profile's, or --size).
outputs in --out: stress.json (the record), stress.txt (this summary), robustness.png.
exit codes: 0 ok, 3 a gate failed (which and by how much is printed), 78 bad config/gates.
See docs/field-guide.md for gates files and how to read the curves.
"""


@dataclass
class StressOptions:
    """Everything ``run_stress`` needs besides the config."""

    images: Path | None = None
    source: str | None = None
    out: Path = Path("stress-report")
    gates: Path | None = None
    labels: Path | None = None
    max_images: int = 50
    corruptions: str = "camera"
    severities: tuple[int, ...] = SEVERITIES
    seed: int = 0
    size_wh: tuple[int, int] | None = None
    every: int = 5
    cliff: float = 0.2
    probes: bool = True
    progress: bool = True
    config_path: str | None = None


def _severities(text: str) -> tuple[int, ...]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or any(v not in SEVERITIES for v in values):
        raise argparse.ArgumentTypeError(f"expected severities from 1..5 separated by commas, got {text!r}")
    return tuple(values)


def _bar(total: int, label: str, enabled: bool) -> ProgressBar | None:
    return ProgressBar(total, label) if enabled and total > 0 else None


def run_stress(cfg: GuardConfig, opts: StressOptions) -> tuple[dict[str, Any], int]:
    """Run the sweep, write the outputs; returns the report and the exit code."""
    t0 = time.perf_counter()
    gates: list[Gate] = load_gates(opts.gates) if opts.gates is not None else []
    try:
        names = list(resolve_names(opts.corruptions))
    except ValueError as exc:
        raise ConfigError(f"--corruptions: {exc}") from exc
    severities = sorted(set(opts.severities))
    extra_names, extra_sevs = gate_cells(gates)
    names += [n for n in extra_names if n not in names]  # gates' cells are always measured
    severities = sorted(set(severities) | set(extra_sevs))
    stats = create_backend(cfg.stats)
    model = load_warm_model(cfg.model)
    has_profile = cfg.policy.profile is not None
    size = opts.size_wh
    if has_profile and opts.images is not None:
        prof = Profile.load(Path(str(cfg.policy.profile)))
        size = (prof.width, prof.height)
    inputs = load_inputs(cfg, images_dir=opts.images, video=opts.source, max_images=opts.max_images,
                         size_wh=size, every=opts.every, has_profile=has_profile)
    bar = _bar(len(inputs.calibration or []), "calibration frames", opts.progress)
    try:
        profile, origin = build_profile(cfg, inputs, stats, model, bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    t_cal = time.perf_counter()
    labels = None
    if opts.labels is not None:
        labels = parse_labels(opts.labels, inputs.names, model.info.labels if model is not None else ())
    guard = Guard(profile, cfg.policy)
    evaluate = Evaluator(stats, model, guard, camera_id=cfg.camera_id)
    n = len(inputs.images)
    bar = _bar(n * len(names), "image x corruption", opts.progress)
    try:
        result = sweep(inputs.images, evaluate, names, severities, seed=opts.seed, labels=labels,
                       contexts=inputs.contexts or None, progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    t_sweep = time.perf_counter()
    probes = None
    if opts.probes and model is not None:
        bar = _bar(n, "probe images", opts.progress)
        try:
            probes = run_probes(inputs.images, result.clean_observed, evaluate, bar.update if bar else None)
        finally:
            if bar:
                bar.close()
    use_accuracy = labels is not None and any(lab is not None for lab in labels)
    curves = robustness_curves(result.cells, result.clean, use_accuracy)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "edge_guard_version": __version__,
        "host": platform.node(),
        "corruptions_version": CORRUPTIONS_VERSION,
        "config": opts.config_path,
        "config_hash": config_hash(cfg),
        "model": None if model is None else {
            "name": Path(model.info.path).name, "path": model.info.path, "sha256": model.info.sha256,
            "kind": model.info.kind, "provider": model.info.provider, "input_wh": list(model.info.input_size_wh),
        },
        "stats_backend": stats.name,
        "profile": {"profile_id": profile.profile_id, "origin": origin},
        "guard": guard_resolution(guard),
        "inputs": {"kind": inputs.kind, "path": inputs.path, "n": n, "size_wh": list(inputs.size_wh),
                   "context_frames": max((len(c) for c in inputs.contexts), default=0),
                   "names": inputs.names, "labelled": 0 if labels is None else sum(x is not None for x in labels)},
        "seed": opts.seed,
        "corruptions": names,
        "severities": severities,
        "performance_metric": "accuracy" if use_accuracy else "agreement with clean (1 - flip rate)",
        "clean": result.clean,
        "cells": result.cells,
        "curves": curves,
        "cliff_threshold": opts.cliff,
        "cliffs": find_cliffs(curves, opts.cliff),
        "probes": probes,
        "slices": confidence_slices(result.slice_rows),
        "gates": None,
        "timing_s": {"calibration": round(t_cal - t0, 2), "sweep": round(t_sweep - t_cal, 2),
                     "probes": round(time.perf_counter() - t_sweep, 2)},
    }
    code = exitcodes.OK
    if gates:
        report["gates"] = [r.model_dump() for r in evaluate_gates(gates, report)]
        if not all(r["passed"] for r in report["gates"]):
            code = exitcodes.REGRESSION
    write_outputs(report, opts.out)
    return report, code


def guard_resolution(guard: Guard) -> dict[str, Any]:
    """How finely the guard's p-values resolve: with n calibration frames the smallest rank-based
    p-value is 1/(n+1); below that only the extrapolated tails can FLAG."""
    n = guard.family.n
    info: dict[str, Any] = {"calibration_frames": n, "min_rank_p": round(1.0 / (n + 1), 6),
                            "alpha_flag": guard.alpha_flag, "alpha_block": guard.alpha_block, "note": ""}
    if 1.0 / (n + 1) > guard.alpha_flag:
        need = math.ceil(1.0 / guard.alpha_flag) - 1
        info["note"] = (
            f"only {n} calibration frames: 1/(n+1) = {1.0 / (n + 1):.3f} > alpha_flag {guard.alpha_flag:g}, so the "
            f"guard flags only far outside the calibrated range; calibrate on >= {need} calibration frames "
            "(a clean recording with --source, or a profile from `edge-guard calibrate`) for meaningful guard rates"
        )
    return info


def write_outputs(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """stress.json, stress.txt and robustness.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "stress.json", "text": out / "stress.txt", "png": out / "robustness.png"}
    paths["json"].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    paths["text"].write_text(format_report(report) + "\n", encoding="utf-8")
    model = (report.get("model") or {}).get("name", "no model")
    inp = report["inputs"]
    robustness_png(
        report["curves"], report["cliffs"], paths["png"],
        title=f"edge-guard stress: {model} on {inp['n']} {'images' if inp['kind'] == 'images' else 'video frames'} "
        f"({inp['size_wh'][0]}x{inp['size_wh'][1]})",
        subtitle=f"corruptions v{report['corruptions_version']}, seed {report['seed']}, profile "
        f"{report['profile']['profile_id']}, cliff threshold {report['cliff_threshold']:g}",
        performance_label="accuracy" if report["performance_metric"] == "accuracy" else "agreement with clean",
    )
    return paths


_cliff = float_arg(lambda v: 0.0 < v <= 1.0, "a drop is a fraction in (0, 1], e.g. 0.2 for 20 %")


def cmd_stress(args: argparse.Namespace) -> int:
    """The ``stress`` subcommand."""
    cfg = load_config(args.config)
    configure_logging(args.log_level or "WARNING", cfg.camera_id)
    check_output(args.out, "--out", folder=True,
                 inputs=[args.config, args.images, args.source, args.gates, args.labels, *cfg.input_files()])
    if args.size and cfg.policy.profile is not None:
        logger.warning("--size %s is ignored: policy.profile fixes the working size to the profile's", args.size)
    if args.every != 5 and args.images is not None:
        logger.warning("--every %d is ignored: it picks frames of a --source video, --images sweeps every image",
                       args.every)
    opts = StressOptions(
        images=args.images, source=args.source, out=args.out, gates=args.gates, labels=args.labels,
        max_images=args.max_images, corruptions=args.corruptions, severities=args.severities, seed=args.seed,
        size_wh=parse_size(args.size) if args.size else None, every=args.every, cliff=args.cliff,
        probes=not args.no_probes, progress=not args.no_progress, config_path=str(args.config),
    )
    report, code = run_stress(cfg, opts)
    print(format_report(report))
    print(f"\nwritten: {opts.out / 'stress.json'}, {opts.out / 'stress.txt'}, {opts.out / 'robustness.png'}")
    if code == exitcodes.REGRESSION:
        failed = [g for g in report["gates"] if not g["passed"]]
        print(f"edge-guard stress: {len(failed)} gate(s) failed", file=sys.stderr)
    return code


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _nonnegative(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``edge-guard stress``."""
    p = sub.add_parser(
        "stress", help="corruption sweep, shortcut probes and deployment gates for the model and guard",
        description="Corrupt clean images (noise, JPEG, exposure, blur, fog, glare, occlusion, ...) at five "
        "fixed severities and measure how the model's predictions change and how often the guard notices.",
        epilog=textwrap.dedent(_EPILOG), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_stress)
    p.add_argument("--config", type=Path, required=True, help="YAML config (model, stats, policy)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="folder of clean still images")
    src.add_argument("--source", help="clean video file (calibrates on its first frames without a profile)")
    p.add_argument("--gates", type=Path, default=None, help="gates YAML; exit 3 if any gate fails")
    p.add_argument("--out", type=Path, default=Path("stress-report"), help="output folder (default stress-report)")
    p.add_argument("--max-images", type=_positive, default=50, help="images/frames to sweep (default 50)")
    p.add_argument("--labels", type=Path, default=None, help="'image_name,class' lines: adds accuracy")
    p.add_argument("--corruptions", default="camera",
                   help="names or groups, comma-separated: camera (default), imagenet-c, all, e.g. fog,glare")
    p.add_argument("--severities", type=_severities, default=SEVERITIES, help="e.g. 1,3,5 (default 1,2,3,4,5)")
    p.add_argument("--seed", type=_nonnegative, default=0, help="corruption seed (default 0); same seed, same images")
    p.add_argument("--size", default=None, help="working size WxH for --images without a profile (default 640x480)")
    p.add_argument("--every", type=_positive, default=5, help="--source: sweep every k-th frame (default 5)")
    p.add_argument("--cliff", type=_cliff, default=0.2,
                   help="performance drop that marks a cliff, a fraction in (0, 1] (default 0.2)")
    p.add_argument("--no-probes", action="store_true", help="skip the shortcut probes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p
