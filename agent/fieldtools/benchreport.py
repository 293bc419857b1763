"""Machine info, the comparable metrics, ``--compare`` and the readable table of ``edge-guard bench``."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from agent.term import format_table

__all__ = [
    "P99_MIN_RUNS",
    "compare_reports",
    "format_bench",
    "format_compare",
    "gpu_info",
    "machine_info",
    "metrics_of",
]


#: A p99 latency is gated in --compare only when both runs timed at least this many inferences.
P99_MIN_RUNS: int = 1000


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def gpu_info() -> dict[str, Any]:
    """GPU name, driver and this process's GPU memory via NVML; ``{"gpu": "n/a: <reason>"}`` without one."""
    try:
        import pynvml  # noqa: PLC0415 (optional, lazy)
    except ImportError:
        return {"gpu": "n/a: nvidia-ml-py not installed"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"gpu": f"n/a: NVML unavailable ({exc})"}
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            return {"gpu": "n/a: no NVIDIA GPU"}
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        driver = pynvml.nvmlSystemGetDriverVersion()
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        own: float | None = None
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                own = round(proc.usedGpuMemory / 1024**2, 1)
        return {
            "gpu": name.decode() if isinstance(name, bytes) else str(name),
            "gpu_count": int(count),
            "driver": driver.decode() if isinstance(driver, bytes) else str(driver),
            "gpu_memory_total_mb": round(mem.total / 1024**2, 1),
            "gpu_memory_used_mb": round(mem.used / 1024**2, 1),
            "gpu_memory_process_mb": own,
        }
    except pynvml.NVMLError as exc:
        return {"gpu": f"n/a: NVML query failed ({exc})"}
    finally:
        pynvml.nvmlShutdown()


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, OS, Python and library versions, and the GPU when there is one."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": _version("numpy"),
        "opencv": _version("opencv-python-headless") or _version("opencv-python"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
    }
    info.update(gpu_info())
    return info


def _metric(out: dict[str, dict[str, Any]], name: str, value: float | None, unit: str, better: str,
            *, gated: bool = True) -> None:
    if value is not None:
        out[name] = {"value": value, "unit": unit, "better": better, "gated": gated}


def metrics_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The flat, comparable metrics of a bench report (``name -> value, unit, better, gated``)."""
    out: dict[str, dict[str, Any]] = {}
    for row in report.get("stats", []):
        _metric(out, f"stats.{row['backend']}.{row['resolution']}.fps", row.get("fps"), "fps", "higher")
    for row in report.get("model", []):
        if "skipped" not in row:
            _metric(out, f"model.{row['provider']}.p50_ms", row.get("p50_ms"), "ms", "lower")
            # the p99 of a short run is set by its few slowest runs: gate it only with >= 1000 runs
            _metric(out, f"model.{row['provider']}.p99_ms", row.get("p99_ms"), "ms", "lower",
                    gated=int(row.get("n", 0)) >= P99_MIN_RUNS)
    pipe = report.get("pipeline") or {}
    if "skipped" not in pipe:
        _metric(out, "pipeline.e2e_fps", pipe.get("e2e_fps"), "fps", "higher")
        _metric(out, "pipeline.model_guard_ms", pipe.get("model_guard_ms"), "ms", "lower")
        _metric(out, "pipeline.guard_overhead_ratio", pipe.get("guard_overhead_ratio"), "x", "lower", gated=False)
    pub = report.get("publisher") or {}
    _metric(out, "publisher.msgs_per_s", pub.get("msgs_per_s"), "msg/s", "higher")
    mem = report.get("memory") or {}
    _metric(out, "memory.peak_rss_mb", mem.get("peak_rss_mb"), "MB", "lower", gated=False)
    return out


def compare_reports(old: dict[str, Any], new: dict[str, Any], threshold: float) -> list[dict[str, Any]]:
    """Metric by metric: REGRESSION when a gated metric is worse by more than ``threshold`` (0.1 = 10%).

    Throughput down or latency up by more than the threshold is a regression; ungated metrics
    (memory, overhead ratio, a p99 from fewer than P99_MIN_RUNS runs) are shown as
    "worse (info)" but never fail; metrics only in one report are listed.
    """
    a, b = metrics_of(old), metrics_of(new)
    rows: list[dict[str, Any]] = []
    for name in list(dict.fromkeys([*b, *a])):
        if name not in a or name not in b:
            rows.append({"metric": name, "old": a.get(name, {}).get("value"), "new": b.get(name, {}).get("value"),
                         "change": None, "status": "new" if name not in a else "missing"})
            continue
        ov, nv, better = float(a[name]["value"]), float(b[name]["value"]), b[name]["better"]
        change = (nv - ov) / ov if ov else 0.0
        worse = -change if better == "higher" else change
        if worse > threshold:
            status = "REGRESSION" if a[name]["gated"] and b[name]["gated"] else "worse (info)"
        elif worse < -threshold:
            status = "improved"
        else:
            status = "ok"
        rows.append({"metric": name, "old": ov, "new": nv, "change": round(change, 4), "status": status})
    return rows


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_compare(rows: list[dict[str, Any]], threshold: float, old_info: str) -> str:
    """The --compare table and a verdict line."""
    table = format_table(
        ["metric", "old", "new", "change", "status"],
        [[r["metric"], _fmt(r["old"], 2), _fmt(r["new"], 2),
          "" if r["change"] is None else f"{100 * r['change']:+.1f}%", r["status"]] for r in rows],
        right=(1, 2, 3),
    )
    bad = [r for r in rows if r["status"] == "REGRESSION"]
    verdict = (f"REGRESSION: {len(bad)} metric(s) worse by more than {100 * threshold:.0f}%: "
               + ", ".join(f"{r['metric']} {100 * r['change']:+.1f}%" for r in bad)) if bad else (
        f"no regression beyond {100 * threshold:.0f}%")
    return f"compared with {old_info}\n{table}\n{verdict}"


def format_bench(report: dict[str, Any]) -> str:
    """The readable bench table."""
    m = report["machine"]
    gpu = m.get("gpu", "n/a")
    lines = [
        f"edge-guard bench {report['edge_guard_version']} on {m['host']}: {m['cpu']}, {m['cores']} cores, "
        f"{m['ram_gb']} GB RAM, {m['os']}",
        f"python {m['python']}, numpy {m['numpy']}, opencv {m['opencv']}, onnxruntime {m['onnxruntime']}; "
        f"GPU: {gpu}" + (f" (driver {m['driver']})" if "driver" in m else ""),
        f"source {report['source']} ({report['camera_wh'][0]}x{report['camera_wh'][1]}), "
        f"duration {report['duration_s']:.1f} s",
        "",
        "statistics backends (one frame at a time):",
        format_table(["backend", "resolution", "size", "fps", "ms p50", "ms p99", "frames"],
                     [[r["backend"], r["resolution"], "x".join(str(v) for v in r.get("size_wh", [])),
                       _fmt(r.get("fps")), _fmt(r.get("p50_ms"), 2),
                       _fmt(r.get("p99_ms"), 2), r.get("n", "")] for r in report["stats"]],
                     right=(3, 4, 5, 6)),
    ]
    for r in report.get("stats_skipped", []):
        lines.append(f"  {r}")
    lines += ["", "model latency (batch 1, preprocessing and decoding included):"]
    lines.append(format_table(
        ["provider", "session uses", "p50 ms", "p99 ms", "mean ms", "runs"],
        [[r["provider"], r.get("ort_provider", "-"), _fmt(r.get("p50_ms"), 2), _fmt(r.get("p99_ms"), 2),
          _fmt(r.get("mean_ms"), 2), r.get("n", r.get("skipped", ""))] for r in report["model"]],
        right=(2, 3, 4),
    ))
    pipe = report["pipeline"]
    if "skipped" in pipe:
        lines += ["", f"pipeline: skipped: {pipe['skipped']}"]
    else:
        lines += [
            "",
            f"pipeline ({pipe['frames']} frames x {pipe['passes']} passes, same frames for both): "
            f"model alone {pipe['model_ms']:.2f} ms, model + guard {pipe['model_guard_ms']:.2f} ms "
            f"(stats {pipe['stats_ms']:.2f} + scoring {pipe['score_ms']:.2f}) -> guard overhead ratio "
            f"{pipe['guard_overhead_ratio']:.2f}x",
            f"end-to-end (decode {pipe['decode_ms']:.2f} ms + stats + model + guard, one thread): "
            f"{pipe['e2e_fps']:.1f} fps; profile: {pipe['profile']}",
        ]
    mem = report["memory"]
    lines += ["", f"memory: peak RSS {mem['peak_rss_mb']:.0f} MB; GPU memory {mem['gpu_memory']}"]
    pub = report["publisher"]
    lines.append("publisher: " + (f"skipped: {pub['skipped']}" if "skipped" in pub else
                                  f"{pub['msgs_per_s']:.0f} msg/s acknowledged by {pub['broker']} "
                                  f"({pub['acked']} of {pub['sent']} health messages in {pub['seconds']:.1f} s)"))
    return "\n".join(lines)
