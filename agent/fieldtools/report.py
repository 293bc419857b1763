"""``edge-guard report``: what changed on each camera since calibration, from its health summaries.

For the ML engineer deciding whether a camera's model needs retraining (or its guard a new
profile): reads ``health.jsonl`` files (or MQTT health payloads a collector stored, one per
line), prints one table per camera with a row per time bucket, then what changed between the
first and the last guarded bucket; ``--out`` writes it all as JSON, ``--plot`` draws the
timelines. The aggregation is in ``healthreport.py``.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from agent.errors import ConfigError
from agent.fieldtools.healthreport import Bucket, CameraReport, build_reports, load_summaries
from agent.fieldtools.plots import timeline_png
from agent.fsutil import check_output, write_output, writing_output

__all__ = ["add_parser", "cmd_report", "format_camera", "parse_duration"]

_EPILOG = """\
examples:
  edge-guard report /var/lib/edge-guard/cam1/health.jsonl
  edge-guard report runs/ --bucket 1h --plot cam-health.png --out cam-health.json
  edge-guard report collector/health-2026-12.jsonl --camera front-door --bucket 1d

Reading the drift columns: PSI (population stability index) of each statistic's recent window
against the calibration profile; the usual reading is < 0.1 little change, 0.1-0.25 some,
> 0.25 a large shift. 'alarms' is the share of health windows with a CUSUM drift alarm.
A camera whose confidence falls, whose class mix moves, or whose PSI stays high for days is
one whose frames no longer look like its calibration: recalibrate the guard if the change is
benign (new season, new lighting), collect and label frames for retraining if the model's
outputs moved with it.
exit codes: 0 ok, 2 usage (a bad option), 78 nothing to report on as named: a PATH that does not
exist, no health*.jsonl or no health summary in them, an unknown --camera (as stress and demo for
their inputs), or an --out/--plot that cannot be written (checked first); 1 a write that failed after it.
"""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'90s', '15m', '1h', '1d' or 'auto' (0) -> seconds.

    >>> parse_duration("15m"), parse_duration("2h"), parse_duration("auto")
    (900, 7200, 0)
    """
    t = text.strip().lower()
    if t == "auto":
        return 0
    if len(t) >= 2 and t[-1] in _UNITS and t[:-1].isdigit() and int(t[:-1]) > 0:
        return int(t[:-1]) * _UNITS[t[-1]]
    raise argparse.ArgumentTypeError(f"expected a duration like 15m, 1h, 1d or 'auto', got {text!r}")


def _ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _bucket_len(seconds: int) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % n == 0:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


def _row(b: Bucket) -> list[str]:
    top = ", ".join(f"{k} {v}" for k, v in b.reasons.most_common(2)) or "-"
    psi = b.top_psi(1)
    drift = f"{psi[0][0][4:]} {psi[0][1]:.2f}" if psi else "-"
    conf = b.confidence_p50
    frames = str(b.frames) if b.frames or not b.frames_calibrating else f"(cal {b.frames_calibrating})"
    alarms = f"{100 * b.alarm_summaries / b.guarded_summaries:.0f}%" if b.guarded_summaries else "-"
    return [_ts(b.start), frames, _pct(b.rate("FLAG")), _pct(b.rate("BLOCK")), top, drift, alarms,
            "-" if conf is None else f"{conf:.3f}"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_camera(rep: CameraReport) -> str:
    """The camera's table and its 'since the first guarded bucket' lines."""
    head = (f"camera {rep.camera_id}: buckets of {_bucket_len(rep.bucket_s)} (UTC), "
            f"{len(rep.profiles)} profile(s), {rep.seq_gaps} summaries missing, {rep.restarts} restart(s)")
    table = _table(["bucket", "frames", "FLAG %", "BLOCK %", "top reasons", "drift (top PSI)", "alarms", "conf p50"],
                   [_row(b) for b in rep.buckets])
    ch = rep.changes()
    trouble = _trouble(rep.buckets)
    if not ch:
        return "\n".join([head, table, "  no guarded frames yet (calibrating only)", *trouble])
    lines = [f"since the first guarded bucket ({_ts(ch['first_bucket_ts'])} -> {_ts(ch['last_bucket_ts'])}):"]
    (f0, f1), (b0, b1) = ch["flag_rate"], ch["block_rate"]
    lines.append(f"  FLAG rate {_pct(f0)}% -> {_pct(f1)}%, BLOCK rate {_pct(b0)}% -> {_pct(b1)}%")
    c0, c1 = ch["confidence_p50"]
    if c0 is not None and c1 is not None:
        lines.append(f"  model confidence (median) {c0:.3f} -> {c1:.3f}")
    tv = ch["class_mix_total_variation"]
    if tv is not None:
        moved = ", ".join(f"{k} {100 * a:.0f}% -> {100 * b:.0f}%" for k, (a, b) in ch["classes_moved"].items())
        lines.append(f"  class mix moved by {tv:.2f} (total variation): {moved}")
    if ch["top_drift_last_bucket"]:
        top = ", ".join(f"{k[4:]} {v:.2f}" for k, v in ch["top_drift_last_bucket"].items())
        lines.append(f"  drifting most in the last bucket (PSI): {top}")
    lines.append(f"  drift alarms in {100 * ch['drift_alarm_share_overall']:.0f}% of the guarded health windows")
    return "\n".join([head, table, *lines, *trouble])


def _trouble(buckets: list[Bucket]) -> list[str]:
    """One line of the frames the guard lost and the errors counted over every bucket (none: no line).

    >>> b = Bucket(0.0, dropped=3, reconnects=1); b.errors.update({"model_output": 50})
    >>> _trouble([b, Bucket(60.0, corrupt=2)])
    ['  frames dropped 3, corrupt 2; source reconnects 1; errors: model_output 50']
    """
    frames = {k: sum(getattr(b, k) for b in buckets) for k in ("dropped", "corrupt", "skipped")}
    reconnects = sum(b.reconnects for b in buckets)
    errors: Counter[str] = Counter()
    for b in buckets:
        errors.update(b.errors)
    parts = []
    if any(frames.values()):
        parts.append("frames " + ", ".join(f"{k} {v}" for k, v in frames.items() if v))
    if reconnects:
        parts.append(f"source reconnects {reconnects}")
    if +errors:
        parts.append("errors: " + ", ".join(f"{k} {v}" for k, v in errors.most_common() if v))
    return ["  " + "; ".join(parts)] if parts else []


def cmd_report(args: argparse.Namespace) -> int:
    """The ``report`` subcommand."""
    inputs = [*args.paths, *(f for p in args.paths if p.is_dir() for f in p.rglob("health*.jsonl"))]
    if args.out:
        check_output(args.out, "--out", inputs=inputs)
    if args.plot:
        check_output(args.plot, "--plot", inputs=inputs, suffixes=(".png", ".jpg", ".jpeg"))
    loaded = load_summaries(args.paths)
    skipped = sum(loaded.bad_lines.values())
    if not loaded.summaries:
        why = "".join(f"\n  {q}" for q in loaded.quoted)
        raise ConfigError(f"report: no health summaries in {', '.join(map(str, args.paths))}: {skipped} line(s), none "
                          f"a health summary (a health.jsonl of the file sink, or stored MQTT health messages){why}")
    reports = build_reports(loaded.summaries, args.bucket or None, args.camera)
    print(f"edge-guard report: {len(loaded.summaries)} health summaries, {len(reports)} camera(s)"
          + (f"; {skipped} line(s) skipped (not health summaries):" if skipped else ""))
    for q in loaded.quoted:
        print(f"  {q}")
    for rep in reports:
        print()
        print(format_camera(rep))
    if args.out:
        doc = {"skipped_lines": loaded.bad_lines, "cameras": [r.as_dict() for r in reports]}
        write_output(args.out, json.dumps(doc, indent=1).encode("utf-8"), "--out")
        print(f"\nwritten: {args.out}")
    if args.plot:
        with writing_output(args.plot, "--plot"):
            timeline_png(reports, args.plot)
        print(f"written: {args.plot}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``edge-guard report``."""
    p = sub.add_parser(
        "report", help="what changed on each camera since calibration, from its health summaries",
        description=textwrap.dedent(__doc__ or "").strip().splitlines()[0],
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_report)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="health.jsonl files, or folders searched for health*.jsonl")
    p.add_argument("--bucket", type=parse_duration, default=0,
                   help="bucket length: 15m, 1h, 1d, ... (default auto: about 24 buckets over the span)")
    p.add_argument("--camera", default=None, help="only this camera id")
    p.add_argument("--out", type=Path, default=None, help="write the report as JSON")
    p.add_argument("--plot", type=Path, default=None, help="draw the timelines to this PNG")
    return p
