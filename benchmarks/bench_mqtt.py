#!/usr/bin/env python3
"""MQTT publisher benchmark with a real mosquitto it starts itself (on a free loopback port).

Measures, in one run:
  1. spool throughput: messages/s committed to the SQLite spool, and end to end
     (spool -> broker -> PUBACK -> row deleted) while connected;
  2. replay rate: messages/s drained from the spool after an outage (broker stopped while
     the messages were written, then started again);
  3. CPU cost of publishing for C cameras x F fps verdict streams (events, health every
     second, sampled frames): process CPU time with the MqttSink minus the same synthetic
     stream into a no-op sink, per second and per frame.

Usage: benchmarks/bench_mqtt.py [--messages 20000] [--cameras 4] [--fps 30] [--duration 20]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mosquitto import Mosquitto, mosquitto_available  # noqa: E402

from agent.sinks.base import NullSink  # noqa: E402
from agent.sinks.mqtt.config import MqttConfig  # noqa: E402
from agent.sinks.mqtt.identity import AgentIdentity  # noqa: E402
from agent.sinks.mqtt.loadgen import LoadGen  # noqa: E402
from agent.sinks.mqtt.sink import MqttSink  # noqa: E402
from agent.sinks.mqtt.spool import OutMessage  # noqa: E402

__all__ = ["main"]


def make_sink(broker: Mosquitto, spool: Path, args: argparse.Namespace, cameras: list[str]) -> MqttSink:
    cfg = MqttConfig.model_validate({
        "host": broker.host, "port": broker.port, "max_inflight": args.inflight, "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5, "flush_timeout_s": 60, "spool": {"path": str(spool), "synchronous": args.synchronous,
                                                                   "max_bytes": 1024**3},
    })
    ident = AgentIdentity.create("bench", spool.stem, cameras, model_sha256="0" * 64, profile_id="p", config_hash="c")
    sink = MqttSink(cfg, ident)
    if not sink.conn.wait_connected(10):
        raise SystemExit(f"could not connect to the benchmark broker: {sink.conn.last_error}")
    return sink


def wait_drained(sink: MqttSink, timeout: float) -> float:
    t0 = time.perf_counter()
    while sink.spool.queued_msgs and time.perf_counter() - t0 < timeout:
        time.sleep(0.002)
    if sink.spool.queued_msgs:
        raise SystemExit(f"spool did not drain in {timeout} s ({sink.spool.queued_msgs} left)")
    return time.perf_counter()


def bench_throughput(broker: Mosquitto, tmp: Path, args: argparse.Namespace) -> None:
    sink = make_sink(broker, tmp / "thr.sqlite", args, ["cam0"])
    payload = b"x" * args.payload_bytes
    topic = sink.topics.events("cam0")
    n = args.messages
    t0 = time.perf_counter()
    for i in range(n):
        sink.spool.put(OutMessage("event", topic, payload, f"m{i}"))
    t_put = time.perf_counter()
    t_done = wait_drained(sink, 300)
    print(f"spool put:       {n / (t_put - t0):10.0f} msg/s  ({args.payload_bytes} B payloads, "
          f"synchronous={args.synchronous}, committed one by one)")
    print(f"end to end:      {n / (t_done - t0):10.0f} msg/s  (put -> broker -> PUBACK -> delete, "
          f"in-flight window {args.inflight})")

    # Replay: write while the broker is down, then start it and time the drain.
    broker.stop()
    deadline = time.monotonic() + 10
    while sink.conn.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    for i in range(n):
        sink.spool.put(OutMessage("event", topic, payload, f"r{i}"))
    broker.start()
    t_up = time.perf_counter()
    if not sink.conn.wait_connected(30):
        raise SystemExit("no reconnect after the outage")
    t_conn = time.perf_counter()
    t_done = wait_drained(sink, 300)
    print(f"replay:          {n / (t_done - t_conn):10.0f} msg/s  ({n} spooled during the outage, drained "
          f"{t_done - t_up:.2f} s after the broker came back, reconnect {t_conn - t_up:.2f} s)")
    sink.close()


def cpu_run(sink: object, cameras: list[str], args: argparse.Namespace) -> tuple[float, float, int, LoadGen]:
    gen = LoadGen(sink, cameras, args.fps, 1.0, period_s=4.0, fault_s=1.0)  # type: ignore[arg-type]
    c0, t0 = time.process_time(), time.perf_counter()
    gen.run(args.duration)
    return time.process_time() - c0, time.perf_counter() - t0, int(gen.target.frames) * len(cameras), gen


def bench_cpu(broker: Mosquitto, tmp: Path, args: argparse.Namespace) -> None:
    cameras = [f"cam{i}" for i in range(args.cameras)]
    base_cpu, base_wall, _, _ = cpu_run(NullSink(), cameras, args)
    sink = make_sink(broker, tmp / "cpu.sqlite", args, cameras)
    cpu, wall, frames, _ = cpu_run(sink, cameras, args)
    stats = sink.stats()
    sink.close()
    extra = max(0.0, cpu / wall - base_cpu / base_wall)
    print(f"publish CPU:     {100 * extra:10.1f} % of one core for {args.cameras} cameras x {args.fps:.0f} fps "
          f"({frames / wall:.0f} verdicts/s; {1e6 * extra / (frames / wall):.1f} us per frame; "
          f"synthetic stream alone {100 * base_cpu / base_wall:.1f} %)")
    print(f"  published in {wall:.0f} s: {stats['acked']:.0f} messages acked, {stats['frames_published']:.0f} "
          f"frames, {stats['frames_rate_limited']:.0f} frames rate-limited, drops {stats['drops_total']:.0f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--messages", type=int, default=20_000, help="messages for throughput and replay")
    ap.add_argument("--payload-bytes", type=int, default=512, help="payload size for throughput and replay")
    ap.add_argument("--inflight", type=int, default=16, help="paho in-flight window (mqtt.max_inflight)")
    ap.add_argument("--synchronous", choices=["normal", "full"], default="normal", help="SQLite synchronous mode")
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of each CPU run")
    ap.add_argument("--skip-cpu", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the outage's "connection lost" warnings are expected here
    if not mosquitto_available():
        print("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as d:
        tmp = Path(d)
        broker = Mosquitto(tmp / "broker", persistence=False).start()
        try:
            bench_throughput(broker, tmp, args)
            if not args.skip_cpu:
                bench_cpu(broker, tmp, args)
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
