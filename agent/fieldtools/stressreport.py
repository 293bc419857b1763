"""The readable text of a stress report (the JSON is the record; this is for the terminal and tickets)."""

from __future__ import annotations

from typing import Any

from agent.term import format_table

__all__ = ["format_gates", "format_report"]


_KINDS = {"images": "images", "video": "video frames"}


def _pct(v: float | None) -> str:
    return "  n/a" if v is None else f"{100.0 * v:4.0f}%"


def _matrix(report: dict[str, Any], key: str, second: str | None) -> str:
    sevs = report["severities"]
    by = {(c["corruption"], c["severity"]): c for c in report["cells"]}
    rows = []
    for name in report["corruptions"]:
        row: list[object] = [name]
        for s in sevs:
            c = by.get((name, s))
            if c is None:
                row.append("")
            elif second is None:
                row.append(_pct(c[key]).strip())
            else:
                row.append(f"{_pct(c[key]).strip()} / {_pct(c[second]).strip()}")
        rows.append(row)
    return format_table(["corruption", *[f"s{s}" for s in sevs]], rows, right=range(1, len(sevs) + 1))


def format_gates(results: list[dict[str, Any]]) -> str:
    """One line per gate: PASS/FAIL, the measured worst value and where, by how much it failed."""
    lines = []
    for r in results:
        measured = "n/a" if r["measured"] is None else f"{r['measured']:.4g}"
        where = f" at {r['worst_at']}" if r.get("worst_at") else ""
        tail = f": {r['detail']}" if r.get("detail") else ""
        lines.append(f"  {'PASS' if r['passed'] else 'FAIL'}  {r['gate']}  measured {measured}{where}{tail}")
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    """The terminal summary of a stress report."""
    inp, clean = report["inputs"], report["clean"]
    model = report.get("model") or {}
    out = [
        f"edge-guard stress — {model.get('name', 'no model')} on {inp['n']} {_KINDS.get(inp['kind'], inp['kind'])} "
        f"({inp['size_wh'][0]}x{inp['size_wh'][1]}) from {inp['path']}",
        f"profile {report['profile']['profile_id']}: {report['profile']['origin']}",
        *([f"NOTE: {report['guard']['note']}"] if (report.get("guard") or {}).get("note") else []),
        f"corruptions v{report['corruptions_version']}, seed {report['seed']}; "
        f"clean: mean confidence {_pct(clean.get('mean_confidence')).strip()}, "
        f"accuracy {_pct(clean.get('accuracy')).strip()}, "
        f"guard false alarms {_pct(clean.get('guard_false_alarm_rate')).strip()}",
        "",
        "prediction flip rate (share of images whose prediction changes) / guard flagged (FLAG or BLOCK):",
        _matrix(report, "flip_rate", "guard_detect_rate"),
        "",
        "silent failures (prediction flipped and the guard said PASS):",
        _matrix(report, "silent_flip_rate", None),
    ]
    if report["clean"].get("accuracy") is not None:
        out += ["", "accuracy:", _matrix(report, "accuracy", None)]
    cliffs = report.get("cliffs") or []
    out += ["", f"cliffs (performance drop > {report['cliff_threshold']:g} between consecutive severities): "
            + (", ".join(f"{c['corruption']} {c['from_severity']}->{c['to_severity']} -{c['drop']:.2f}" for c in cliffs)
               or "none")]
    probes = report.get("probes")
    if probes:
        rows = [
            [name, p["n"], _pct(p["flip_rate"]).strip(), "n/a" if p["conf_drop"] is None else f"{p['conf_drop']:+.3f}"]
            for name, p in probes.items()
        ]
        out += ["", "shortcut probes (mask corners/borders, replace the background outside the region of interest):",
                format_table(["probe", "images", "flip rate", "conf drop"], rows, right=(1, 2, 3))]
    slices = (report.get("slices") or {}).get("proxies") or {}
    weak = [(proxy, b) for proxy, buckets in slices.items() for b in buckets if b["weak"]]
    overall = (report.get("slices") or {}).get("overall") or {}
    if slices:
        text = "; ".join(
            f"{proxy} {b['range'][0]:g}..{b['range'][1]:g}: confidence {b['mean_confidence']:.2f}"
            + ("" if b["flip_rate"] is None else f", flip {_pct(b['flip_rate']).strip()}")
            for proxy, b in weak
        )
        out += ["", f"weak confidence slices (overall confidence {overall.get('mean_confidence', 0):.2f}, "
                f"flip {_pct(overall.get('flip_rate')).strip()}): {text or 'none'}"]
    if report.get("gates") is not None:
        failed = sum(1 for g in report["gates"] if not g["passed"])
        out += ["", f"gates: {len(report['gates']) - failed} passed, {failed} failed",
                format_gates(report["gates"])]
    return "\n".join(out)
