#!/usr/bin/env python3
"""Soak: the real daemon for minutes against a real mosquitto, with a broker outage in the middle.

What to run before leaving a box unattended: ``edge-guard run`` (a subprocess, exactly what
systemd starts) guards a live-paced camera and publishes to a mosquitto this script starts on a
free loopback port, while a collector subscribed to the camera's topics records every message.
At 40 % of the run the broker is stopped for ``--outage-s`` and started again; at the end the
daemon gets SIGTERM. Measured:

* **memory**: the daemon's resident set every ``--sample-s`` seconds; its growth after the
  warm-up (calibration, first publications: the first 20 % of the run, at least a minute) as a
  least-squares slope in MB/h, next to the start and end values; open file descriptors and
  threads, start and end;
* **throughput**: frames guarded (the health summaries' ``frames_processed``) and frames/s;
* **delivery**: every (type, camera) stream's ``seq`` numbers, after dropping QoS 1
  re-deliveries by ``msg_id``: a gap is a lost message; health summary ``seq`` gaps likewise;
* **outage**: messages created while the broker was away (their ``ts``), and how long after its restart
  the last of them had arrived (the spool's replay, after the daemon's reconnect back-off:
  ``mqtt.reconnect_min_s`` doubling up to ``reconnect_max_s``);
* **exit**: the exit code on SIGTERM, the last camera status, the spool empty afterwards.

Prints one line per figure and PASS/FAIL for: exit 0, no lost message, no lost health summary,
backlog delivered, spool empty, RSS slope after warm-up under ``--max-growth`` MB/h (judged
only on at least 4 minutes after the warm-up, so from ``--minutes 5``; shorter runs print it). Writes
JSON (``--out``) and a PNG of RSS over time with the outage shaded (``--plot``).

    python benchmarks/bench_soak.py                      # 20 min, synthetic street camera, 60 s outage
    python benchmarks/bench_soak.py --minutes 2 --outage-s 15
    python benchmarks/bench_soak.py --source ../shared/data/videos/opencv_vtest.avi --minutes 30
    python benchmarks/bench_soak.py --config /etc/edge-guard/cam1.yaml --minutes 60   # your model and camera

Needs mosquitto on the PATH (``apt-get install mosquitto``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mosquitto import Collector, Mosquitto, Received, mosquitto_available, stop_process  # noqa: E402

from agent.sinks.mqtt.config import SpoolConfig  # noqa: E402
from agent.sinks.mqtt.spool import Spool  # noqa: E402

PREFIX = "edge-guard/v1/soak/bench"
WARMUP_SHARE = 0.2
#: The warm-up lasts at least this long (model load, calibration, first allocations).
WARMUP_MIN_S = 60.0
#: A slope fitted on less than this after the warm-up is printed, not judged: a 1 MB step in
#: one minute (an allocator arena, the outage's spool backlog) would read as +60 MB/h.
MIN_SLOPE_WINDOW_S = 240.0
OUTAGE_AT = 0.4


@dataclass(frozen=True)
class Sample:
    """One look at the daemon process."""

    t: float  # seconds since the daemon started
    rss_mb: float
    fds: int
    threads: int
    cpu_s: float


def sample(pid: int, t: float) -> Sample | None:
    """RSS, open descriptors, threads and CPU seconds of ``pid`` from /proc (None once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rss_kb = float(fields["VmRSS"].split()[0])
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime (fields 14, 15)
    return Sample(t, rss_kb / 1024.0, fds, int(fields["Threads"]), cpu)


def write_config(directory: Path, broker: Mosquitto, args: argparse.Namespace) -> dict[str, Any]:
    """Write the soak's config to ``directory/soak.yaml`` and return it: ``--config``'s model,
    policy and calibration if given, the source paced live and looped, health every 5 s, MQTT
    to the soak's broker."""
    doc: dict[str, Any] = {}
    if args.config is not None:
        loaded = yaml.safe_load(args.config.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise SystemExit(f"bench_soak: {args.config} is not a YAML mapping (an edge-guard config)")
        doc = loaded
    camera = str(doc.get("camera_id") or "cam0")
    source = dict(doc.get("source") or {})
    if args.source is not None or "uri" not in source:
        source["uri"] = args.source or "synthetic://default"
    if args.fps is not None or "fps" not in source:
        source["fps"] = args.fps or 25.0
    source.update(realtime=True, loop=True)
    doc.pop("file_sink", None)
    doc.update(
        camera_id=camera,
        site="soak",
        node="bench",
        source=source,
        health={**(doc.get("health") or {}), "interval_s": 5},
        mqtt={
            "host": broker.host,
            "port": broker.port,
            "will_delay_s": 1,
            "spool": {"path": str(directory / "spool.sqlite")},
        },
    )
    (directory / "soak.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return doc


#: Retained status streams: a newer status replaces a queued one (spool ``superseded``).
_STATUS_TYPES = ("node_status", "camera_status")


def delivery(msgs: list[Received], superseded: int = 0) -> dict[str, Any]:
    """Per (type, camera) stream: messages, duplicates (same msg_id again) and seq gaps.

    A retained status queued while the broker was away is replaced by a newer one on the same
    topic (the spool's ``superseded`` counter): those seq gaps in the status streams, up to that
    count, are state that was overtaken, not lost messages."""
    seen: set[str] = set()
    streams: dict[str, list[int]] = defaultdict(list)
    duplicates = 0
    health_seq: list[int] = []
    for m in msgs:
        if "/frames/" in m.topic:
            # A sampled frame's seq is the video frame's number (sampling is rate-limited, so its
            # gaps are by design): frames are de-duplicated by msg_id and counted, not gap-checked.
            key = m.user.get("msg_id", "")
            stream, seq = "frame", -1
        else:
            body = m.json()
            key, stream, seq = str(body["msg_id"]), f"{body['type']}/{body.get('camera_id', '')}", int(body["seq"])
            if body["type"] == "health" and key not in seen:
                health_seq.append(int(body["summary"]["seq"]))
        if key and key in seen:
            duplicates += 1
            continue
        seen.add(key)
        streams[stream].append(seq)
    gaps = {}
    for stream, seqs in streams.items():
        if min(seqs) < 0:
            continue  # sampled frames: nothing to check
        s = sorted(set(seqs))
        gaps[stream] = sum(b - a - 1 for a, b in itertools.pairwise(s)) + s[0]
    hs = sorted(set(health_seq))
    health_gaps = (hs[-1] + 1 - len(hs)) if hs else 0
    status_gaps = sum(n for stream, n in gaps.items() if stream.split("/")[0] in _STATUS_TYPES)
    overtaken = min(status_gaps, superseded)
    return {
        "messages": len(msgs),
        "unique": len(seen),
        "duplicates": duplicates,
        "streams": {k: len(v) for k, v in streams.items()},
        "seq_gaps": gaps,
        "superseded": overtaken,
        "lost": sum(gaps.values()) - overtaken,
        "health_summaries": len(hs),
        "health_seq_gaps": health_gaps,
    }


def slope_mb_per_h(samples: list[Sample], since: float) -> float:
    pts = [(s.t, s.rss_mb) for s in samples if s.t >= since]
    if len(pts) < 3:
        return float("nan")
    t, r = np.array(pts).T
    return float(np.polyfit(t / 3600.0, r, 1)[0])


def plot(samples: list[Sample], outage: tuple[float, float], warmup: float, path: Path) -> None:
    """RSS over time, the outage shaded, the end of the warm-up dotted (OpenCV, no matplotlib)."""
    import cv2  # noqa: PLC0415

    w, h, x0, y0, pw, ph = 820, 340, 70, 40, 720, 240
    img = np.full((h, w, 3), 255, np.uint8)
    t_end = max(s.t for s in samples) or 1.0
    lo, hi = min(s.rss_mb for s in samples), max(s.rss_mb for s in samples)
    lo, hi = lo - 0.05 * (hi - lo + 1), hi + 0.05 * (hi - lo + 1)

    def xy(t: float, mb: float) -> tuple[int, int]:
        return x0 + int(pw * t / t_end), y0 + ph - int(ph * (mb - lo) / (hi - lo))

    cv2.rectangle(img, (xy(outage[0], hi)[0], y0), (xy(min(outage[1], t_end), hi)[0], y0 + ph), (215, 215, 250), -1)
    wx = xy(warmup, lo)[0]
    for y in range(y0, y0 + ph, 8):
        cv2.line(img, (wx, y), (wx, y + 3), (150, 150, 150), 1)
    cv2.rectangle(img, (x0, y0), (x0 + pw, y0 + ph), (40, 40, 40), 1)
    pts = np.array([xy(s.t, s.rss_mb) for s in samples], np.int32)
    cv2.polylines(img, [pts], False, (200, 110, 30), 2, cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(
        img,
        "edge-guard soak: daemon resident memory (MB); red: broker down; dotted: end of warm-up",
        (x0, y0 - 14),
        font,
        0.42,
        (40, 40, 40),
        1,
        cv2.LINE_AA,
    )
    for f in (0.0, 0.5, 1.0):
        mb = lo + f * (hi - lo)
        cv2.putText(img, f"{mb:.0f}", (8, xy(0, mb)[1] + 4), font, 0.38, (40, 40, 40), 1, cv2.LINE_AA)
        t = f * t_end
        cv2.putText(
            img, f"{t / 60:.1f} min", (xy(t, lo)[0] - 20, y0 + ph + 22), font, 0.38, (40, 40, 40), 1, cv2.LINE_AA
        )
    cv2.imwrite(str(path), img)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    duration = args.minutes * 60.0
    broker = Mosquitto(work / "broker").start()
    col = Collector(broker.host, broker.port, f"{PREFIX}/#", client_id="soak-collector", persistent=True)
    doc = write_config(work, broker, args)
    cfg, camera = work / "soak.yaml", str(doc["camera_id"])
    samples: list[Sample] = []
    outage = (OUTAGE_AT * duration, OUTAGE_AT * duration + args.outage_s)
    wall: list[float] = []  # wall clock when the broker stopped, and when it started again
    restarted = 0.0  # monotonic time of the restart
    with (work / "daemon.log").open("w", encoding="utf-8") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        try:
            next_sample = args.sample_s  # not at 0: the interpreter is still starting
            while (now := time.monotonic() - t0) < duration and proc.poll() is None:
                if broker.running and not wall and now >= outage[0]:
                    broker.stop()
                    wall.append(time.time())
                    print(f"[{now / 60:5.1f} min] broker stopped for {args.outage_s:g} s", flush=True)
                elif not broker.running and now >= outage[1]:
                    broker.start()
                    wall.append(time.time())
                    restarted = time.monotonic()
                    print(f"[{now / 60:5.1f} min] broker started again", flush=True)
                if now >= next_sample:
                    s = sample(proc.pid, now)
                    if s is not None:
                        samples.append(s)
                        if args.progress:
                            print(
                                f"[{now / 60:5.1f} min] RSS {s.rss_mb:6.1f} MB, fds {s.fds}, threads {s.threads}, "
                                f"CPU {s.cpu_s:6.1f} s, messages {len(col.snapshot())}",
                                flush=True,
                            )
                    next_sample += args.sample_s
                time.sleep(0.2)
            crashed = proc.poll() is not None
            code = stop_process(proc, signal.SIGTERM, timeout=30) if not crashed else int(proc.returncode)
            col.wait_for(
                lambda ms: any(m.topic == f"{PREFIX}/status" and m.json().get("state") == "stopped" for m in ms), 30
            )
            time.sleep(1.0)
            msgs = col.snapshot()
        finally:
            stop_process(proc, signal.SIGKILL)
            col.close()
            broker.stop()
    # Messages created while the broker was away (their ts) reached the collector only after the
    # restart, from the spool: how many, and when the last of them arrived.
    spooled = [m for m in msgs if "/frames/" not in m.topic and len(wall) == 2 and wall[0] <= m.json()["ts"] < wall[1]]
    backlog_s = max(m.t for m in spooled) - restarted if spooled else None
    spool = Spool(work / "spool.sqlite", SpoolConfig())
    left, superseded = spool.queued_msgs, spool.counters().get("superseded", 0)
    spool.close()
    health = [m.json()["summary"] for m in msgs if m.topic.endswith("/health")]
    frames = sum(int(h.get("frames_processed", 0)) for h in health)
    status = [m.json().get("state") for m in msgs if m.topic == f"{PREFIX}/{camera}/status"]
    warm = max(WARMUP_SHARE * duration, WARMUP_MIN_S)
    return {
        "minutes": args.minutes,
        "source": doc["source"]["uri"],
        "fps": doc["source"]["fps"],
        "outage_s": args.outage_s,
        "exit_code": code,
        "crashed": crashed,
        "last_camera_status": status[-1] if status else None,
        "frames_guarded": frames,
        "frames_per_s": frames / max(1.0, samples[-1].t if samples else duration),
        "rss_mb": {
            "start": samples[0].rss_mb if samples else None,
            "after_warmup": next((s.rss_mb for s in samples if s.t >= warm), None),
            "end": samples[-1].rss_mb if samples else None,
            "max": max((s.rss_mb for s in samples), default=None),
            "slope_mb_per_h_after_warmup": slope_mb_per_h(samples, warm),
            "slope_window_s": slope_window_s(samples, warm),
        },
        "fds": [samples[0].fds, samples[-1].fds] if samples else None,
        "threads": [samples[0].threads, samples[-1].threads] if samples else None,
        "cpu_s": samples[-1].cpu_s if samples else None,
        "delivery": delivery(msgs, superseded),
        "outage": {
            "start_s": outage[0],
            "end_s": outage[1],
            "messages_spooled": len(spooled),
            "backlog_delivered_after_s": backlog_s,
        },
        "spool_left": left,
        "samples": [asdict(s) for s in samples],
        "_outage": outage,
        "_warm": warm,
    }


def slope_window_s(samples: list[Sample], since: float) -> float:
    """How many seconds of samples the slope after ``since`` is fitted on."""
    t = [s.t for s in samples if s.t >= since]
    return t[-1] - t[0] if len(t) >= 2 else 0.0


def rss_check(slope: float, window_s: float, max_growth: float) -> tuple[str, bool | None]:
    """The RSS-growth target's line and verdict (None: too short a run to judge)."""
    if math.isnan(slope) or window_s < MIN_SLOPE_WINDOW_S:
        return (f"RSS growth: {window_s:.0f} s after the warm-up are too few to judge a slope in MB/h "
                f"(needs {MIN_SLOPE_WINDOW_S:.0f} s: give --minutes 5 or more)"), None
    return f"RSS growth after warm-up <= {max_growth:g} MB/h", slope <= max_growth


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def report(r: dict[str, Any], max_growth: float) -> bool:
    d, rss = r["delivery"], r["rss_mb"]
    print(
        f"\nsoak: {r['minutes']:g} min of {r['source']} at {r['fps']:g} fps, broker down {r['outage_s']:g} s "
        f"from minute {r['outage']['start_s'] / 60:.1f}"
    )
    print(
        f"  frames guarded          {r['frames_guarded']} ({r['frames_per_s']:.1f} frames/s), "
        f"daemon CPU {r['cpu_s']:.0f} s"
    )
    print(
        f"  RSS (MB)                start {rss['start']:.1f}, after warm-up {_mb(rss['after_warmup'])}, "
        f"end {rss['end']:.1f}, max {rss['max']:.1f}; "
        f"slope after warm-up {rss['slope_mb_per_h_after_warmup']:+.2f} MB/h"
    )
    print(f"  fds / threads           {r['fds'][0]} -> {r['fds'][1]} / {r['threads'][0]} -> {r['threads'][1]}")
    print(
        f"  messages                {d['unique']} unique ({d['duplicates']} QoS 1 re-deliveries), "
        f"streams {d['streams']}"
    )
    print(
        f"  lost (seq gaps)         {d['lost']} {d['seq_gaps']} ({d['superseded']} of them statuses a newer "
        f"one replaced in the spool); health summaries {d['health_summaries']}, gaps {d['health_seq_gaps']}"
    )
    backlog, spooled = r["outage"]["backlog_delivered_after_s"], r["outage"]["messages_spooled"]
    print(
        f"  outage backlog          {spooled} messages created while the broker was down, all in "
        f"{backlog:.1f} s after it came back"
        if backlog is not None
        else "  outage backlog          none seen"
    )
    print(
        f"  exit                    code {r['exit_code']}, last camera status {r['last_camera_status']!r}, "
        f"spool left {r['spool_left']}"
    )
    checks = [
        ("daemon exited 0 on SIGTERM (no crash)", r["exit_code"] == 0 and not r["crashed"]),
        ("no message lost (seq gaps per stream)", d["lost"] == 0),
        ("no health summary lost", d["health_seq_gaps"] == 0 and d["health_summaries"] > 0),
        ("outage backlog delivered after the restart", backlog is not None),
        ("spool empty after exit", r["spool_left"] == 0),
    ]
    rss_line, rss_ok = rss_check(rss["slope_mb_per_h_after_warmup"], rss["slope_window_s"], max_growth)
    if rss_ok is not None:
        checks.append((rss_line, rss_ok))
    print("targets:")
    for name, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")
    if rss_ok is None:
        print(f"  [n/a ] {rss_line}")
    return all(ok for _, ok in checks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="length of the run (default 20)")
    ap.add_argument("--outage-s", type=float, default=60.0, help="broker down this long at 40%% of the run")
    ap.add_argument(
        "--source",
        default=None,
        help="camera URI, video file (looped) or folder; default: --config's source, else the synthetic "
        "street with faults",
    )
    ap.add_argument(
        "--fps",
        type=float,
        default=None,
        help="pace the source at this rate (default: the config's source.fps, else 25)",
    )
    ap.add_argument(
        "--config",
        type=Path,
        default=None,
        help="your camera's config: its model, policy, calibration and source are soaked (its mqtt "
        "and file_sink sections are replaced by the soak's broker)",
    )
    ap.add_argument("--sample-s", type=float, default=10.0, help="seconds between process samples (default 10)")
    ap.add_argument(
        "--max-growth", type=float, default=10.0, help="RSS slope after warm-up that fails the run, MB/h (default 10)"
    )
    ap.add_argument("--out", type=Path, help="write the JSON report here")
    ap.add_argument("--plot", type=Path, help="draw RSS over time to this PNG")
    ap.add_argument("--quiet", dest="progress", action="store_false", help="no progress line per sample")
    args = ap.parse_args(argv)
    if not mosquitto_available():
        print("bench_soak: mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 2
    if args.outage_s >= (1 - OUTAGE_AT) * args.minutes * 60:
        ap.error(f"--outage-s {args.outage_s:g} does not fit in the last 60% of {args.minutes:g} min")
    with tempfile.TemporaryDirectory(prefix="edge-guard-soak-") as tmp:
        r = run(args, Path(tmp))
        if r["crashed"] or len(r["samples"]) < 2:
            log = (Path(tmp) / "daemon.log").read_text(errors="replace")
            print(
                f"bench_soak: the daemon stopped after {len(r['samples'])} samples (exit {r['exit_code']}); "
                f"its log ends:\n{log[-3000:]}",
                file=sys.stderr,
            )
            return 1
    ok = report(r, args.max_growth)
    outage, warm = r.pop("_outage"), r.pop("_warm")
    if args.plot and r["samples"]:
        plot([Sample(**s) for s in r["samples"]], outage, warm, args.plot)
        print(f"wrote {args.plot}")
    if args.out:
        args.out.write_text(json.dumps(r, indent=1), encoding="utf-8")
        print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
