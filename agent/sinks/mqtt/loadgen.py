"""A synthetic agent for MQTT tests and benchmarks: N cameras at F fps with scheduled faults.

It drives a real :class:`MqttSink` with verdicts (faulty stretches become FLAG/BLOCK
episodes), health summaries and camera status, without the model pipeline, so the
publisher can be exercised alone::

    python -m agent.sinks.mqtt.loadgen --host 127.0.0.1 --port 1883 --fps 25 --health-s 1 \\
        --spool /tmp/spool.sqlite --ledger /tmp/ledger.jsonl

``--ledger`` appends one JSON line per message committed to the spool (msg id, type,
camera, seq, event id, lifecycle), flushed at once, so a test can compare what was sent
with what a collector received, even across kill -9.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from agent.frame import Frame
from agent.health import HealthSummary
from agent.sinks.mqtt.config import MqttConfig
from agent.sinks.mqtt.identity import AgentIdentity
from agent.sinks.mqtt.sink import MqttSink
from agent.sinks.mqtt.spool import OutMessage
from agent.stats.types import HIST_BINS, TILE_FIELDS, FrameStats
from agent.verdict import Decision, Reason, Verdict

__all__ = ["FakeTarget", "LoadGen", "main", "synthetic"]

#: Fault schedule: (reason code, decision) cycled through, one faulty stretch per period.
FAULTS: tuple[tuple[str, Decision], ...] = (
    ("dark", Decision.BLOCK), ("blur", Decision.FLAG), ("glare", Decision.FLAG), ("covered", Decision.BLOCK),
)


def _image(seed: int, level: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((240, 320, 3), level, np.uint8)
    img += rng.integers(0, 40, img.shape, dtype=np.uint8)
    return img


_IMAGES: dict[str, np.ndarray] = {}


def synthetic(camera_id: str, seq: int, fault: str | None, decision: Decision) -> tuple[Verdict, Frame]:
    """A verdict and frame for one synthetic frame (images are shared, frames are immutable)."""
    key = fault or "clean"
    if key not in _IMAGES:
        _IMAGES[key] = _image(len(_IMAGES), 10 if key == "dark" else 120)
    now = time.time()
    frame = Frame(_IMAGES[key], camera_id, seq, now, time.monotonic(), fault=fault)
    stats = FrameStats(
        width=320, height=240, brightness=20.0 if fault == "dark" else 130.0, contrast=11.0, saturation=5.0,
        blur=50.0, noise=3.0, dark_frac=0.9 if fault == "dark" else 0.0, clip_frac=0.0, mean_b=130.0,
        mean_g=130.0, mean_r=130.0, diff_prev=float("nan"), hist=np.zeros(HIST_BINS, np.int64),
        tiles=np.full((1, 1, len(TILE_FIELDS)), np.nan),
    )
    reasons: tuple[Reason, ...] = ()
    if fault is not None:
        p = 1e-4 * (1 + seq % 7)
        reasons = (Reason(fault, decision, 5.0 + seq % 3, p),)
    verdict = Verdict(camera_id, seq, now, decision if fault else Decision.PASS, reasons,
                      {r.code: r.score for r in reasons}, {r.code: r.p_value or 1.0 for r in reasons}, stats, None,
                      {"total": 1.0}, fault)
    return verdict, frame


class FakeTarget:
    """A CommandTarget that records what commands did."""

    def __init__(self) -> None:
        self.last: Frame | None = None
        self.alphas: tuple[float, float] = (0.01, 0.001)
        self.frames = 0
        self.reloads = 0

    def snapshot(self) -> Frame | None:
        return self.last

    def set_alphas(self, alpha_flag: float, alpha_block: float) -> None:
        if alpha_block > alpha_flag:
            raise ValueError(f"alpha_block ({alpha_block}) must be <= alpha_flag ({alpha_flag})")
        self.alphas = (alpha_flag, alpha_block)

    def reload_profile(self) -> str:
        self.reloads += 1
        return f"profile-{self.reloads}"

    def ping(self) -> dict[str, object]:
        return {"frames_processed": self.frames}

    def limits(self) -> dict[str, object]:
        """One limit, shaped as the daemon's (limits.GuardLimits.as_dict)."""
        dark = {"reason": "dark", "test": "dark", "quantity": "mean luma", "side": "below", "value": 106.0,
                "low": 118.0, "median": 119.0, "high": 124.0}
        return {"profile_id": f"profile-{self.reloads}", "alpha_flag": self.alphas[0], "level": 0.001,
                "limits": [dark]}


class LoadGen:
    """Feeds ``sink`` from one thread: ``cameras`` x ``fps`` verdicts, a fault stretch of
    ``fault_s`` every ``period_s``, a health summary per camera every ``health_s``."""

    def __init__(self, sink: MqttSink, cameras: list[str], fps: float, health_s: float, *,
                 period_s: float = 4.0, fault_s: float = 1.0) -> None:
        self.sink, self.cameras, self.fps, self.health_s = sink, cameras, fps, health_s
        self.period_s, self.fault_s = period_s, fault_s
        self.target = FakeTarget()
        self.stop = threading.Event()
        self.publish_s = 0.0  # time spent inside sink calls (process CPU is measured by the caller)

    def run(self, duration_s: float | None = None) -> None:
        t0 = time.monotonic()
        seq = 0
        health_seq = 0
        next_health = t0 + self.health_s
        window_start = time.time()
        counts: dict[str, int] = {}
        for cam in self.cameras:
            self.sink.publish_camera_status(cam, "online", "synthetic source running")
        while not self.stop.is_set() and (duration_s is None or time.monotonic() - t0 < duration_s):
            phase = (time.monotonic() - t0) % self.period_s
            k = int((time.monotonic() - t0) // self.period_s)
            code, decision = FAULTS[k % len(FAULTS)]
            fault = code if phase < self.fault_s else None
            t_pub = time.perf_counter()
            for cam in self.cameras:
                verdict, frame = synthetic(cam, seq, fault, decision)
                self.target.last = frame
                self.sink.publish_verdict(verdict, frame)
                counts[str(verdict.decision)] = counts.get(str(verdict.decision), 0) + 1
            self.target.frames += 1
            if time.monotonic() >= next_health:
                now = time.time()
                for cam in self.cameras:
                    self.sink.publish_health(HealthSummary(
                        camera_id=cam, seq=health_seq, window_start_ts=window_start, window_end_ts=now,
                        frames_in=sum(counts.values()), frames_processed=sum(counts.values()),
                        fps=self.fps, decisions=dict(counts), source_state="up",
                    ))
                health_seq += 1
                counts, window_start = {}, now
                next_health += self.health_s
            self.publish_s += time.perf_counter() - t_pub
            seq += 1
            wait = t0 + seq / self.fps - time.monotonic()
            if wait > 0:
                self.stop.wait(wait)


def ledger_writer(out: IO[str]) -> Callable[[OutMessage], None]:
    """A sink listener that appends one JSON line per spooled message."""

    def write(msg: OutMessage) -> None:
        rec: dict[str, object] = {"msg_id": msg.msg_id, "cls": msg.cls, "topic": msg.topic, "t": time.time()}
        if msg.props.get("content_type") == "application/json":
            body = json.loads(msg.payload)
            rec.update({k: body.get(k) for k in ("type", "seq", "camera_id", "event_id", "lifecycle", "state")})
            if body.get("type") == "health":
                rec["health_seq"] = body["summary"]["seq"]
        out.write(json.dumps(rec) + "\n")
        out.flush()

    return write


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.sinks.mqtt.loadgen", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--site", default="lab")
    ap.add_argument("--node", default="loadgen")
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--health-s", type=float, default=1.0)
    ap.add_argument("--period-s", type=float, default=4.0)
    ap.add_argument("--duration", type=float, default=None, help="seconds (default: until SIGTERM)")
    ap.add_argument("--spool", type=Path, required=True)
    ap.add_argument("--ledger", type=Path)
    ap.add_argument("--config-json", default="{}", help="extra MqttConfig fields as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    extra = json.loads(args.config_json)
    extra.setdefault("spool", {})["path"] = str(args.spool)
    cfg = MqttConfig.model_validate({"host": args.host, "port": args.port, **extra})
    cams = [f"cam{i}" for i in range(args.cameras)]
    ident = AgentIdentity.create(args.site, args.node, cams, model_sha256="0" * 64, profile_id="synthetic",
                                 config_hash="loadgen")
    sink = MqttSink(cfg, ident)
    gen = LoadGen(sink, cams, args.fps, args.health_s, period_s=args.period_s)
    sink.attach(gen.target)
    ledger = args.ledger.open("a", encoding="utf-8") if args.ledger else None
    if ledger is not None:
        sink.add_listener(ledger_writer(ledger))
    signal.signal(signal.SIGTERM, lambda *_: gen.stop.set())
    sys.stdout.write("STARTED\n")
    sys.stdout.flush()
    try:
        gen.run(args.duration)
    finally:
        sink.close()
        if ledger is not None:
            ledger.close()
    sys.stdout.write("STOPPED\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
