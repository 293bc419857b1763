"""``edge-guard tail``: watch a fleet from any machine that can reach the broker.

Subscribes to the edge-guard topics and shows a refreshing table of every camera: status,
fps, PASS/FLAG/BLOCK rates of the last health window, open/total events, drift alarms,
publisher backlog and drops. ``--save-frames DIR`` writes received JPEG frames to
``DIR/<site>/<node>/<camera>/<event_id>_<seq>_<role>.jpg`` (sha256 checked);
``--save-health DIR`` appends every health summary to ``DIR/<site>/<node>/<camera>/health.jsonl``
(QoS 1 re-deliveries dropped by ``msg_id``), the files ``edge-guard report DIR`` reads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.argtypes import float_arg
from agent.errors import ConfigError
from agent.fsutil import check_output
from agent.sinks.mqtt.config import pem_problem
from agent.sinks.mqtt.topics import Topics

__all__ = ["CameraRow", "FleetView", "add_parser", "run_tail"]


@dataclass
class CameraRow:
    """What the table knows about one camera (or one node, with ``camera`` empty)."""

    site: str
    node: str
    camera: str
    state: str = "?"
    reason: str = ""
    fps: float | None = None
    rates: dict[str, float] = field(default_factory=dict)
    drift_alarms: list[str] = field(default_factory=list)
    backlog: int | None = None
    drops: int = 0
    health_seq: int | None = None
    health_gaps: int = 0
    last_health: float | None = None
    open_events: set[str] = field(default_factory=set)
    events: int = 0
    frames: int = 0


class FleetView:
    """Folds received messages into per-camera rows and renders them as text (no I/O)."""

    def __init__(self, prefix: str, save_frames: Path | None = None, save_health: Path | None = None) -> None:
        self.topics = Topics(prefix, "x", "x")
        self.save_frames = save_frames
        self.save_health = save_health
        self.health_saved = 0
        self._health_ids: set[str] = set()
        self.nodes: dict[tuple[str, str], CameraRow] = {}
        self.cameras: dict[tuple[str, str, str], CameraRow] = {}
        self.messages = 0
        self.bad = 0
        self.saved: list[Path] = []
        self.connected = False  # a CONNACK that accepted us was seen (set by the MQTT thread)
        self._lock = threading.Lock()

    def feed(self, topic: str, payload: bytes, user: dict[str, str] | None = None) -> None:
        parsed = self.topics.parse(topic)
        if parsed is None:
            return
        with self._lock:
            self.messages += 1
            try:
                if parsed.kind == "frames" and parsed.camera is not None:
                    self._frame((parsed.site, parsed.node, parsed.camera), parsed.name or "x", payload, user or {})
                elif parsed.kind in ("status", "camera_status", "health", "events"):
                    body = json.loads(payload) if payload else {}
                    self._json(parsed.kind, parsed.site, parsed.node, parsed.camera, body)
            except (ValueError, KeyError, TypeError, AttributeError):
                self.bad += 1

    def _row(self, site: str, node: str, camera: str) -> CameraRow:
        key = (site, node, camera)
        if key not in self.cameras:
            self.cameras[key] = CameraRow(site, node, camera)
        return self.cameras[key]

    def _json(self, kind: str, site: str, node: str, camera: str | None, body: dict[str, Any]) -> None:
        if kind == "status":
            row = self.nodes.setdefault((site, node), CameraRow(site, node, ""))
            row.state, row.reason = str(body.get("state", "?")), str(body.get("reason", ""))
            return
        assert camera is not None
        row = self._row(site, node, camera)
        if kind == "camera_status":
            row.state, row.reason = str(body["state"]), str(body.get("reason", ""))
        elif kind == "health":
            s = body["summary"]
            seq = int(s["seq"])
            if row.health_seq is not None and seq > row.health_seq + 1:
                row.health_gaps += seq - row.health_seq - 1
            row.health_seq = max(seq, row.health_seq or 0)
            row.fps = float(s.get("fps", 0.0))
            decisions = s.get("decisions", {})
            n = max(1, sum(int(v) for v in decisions.values()))  # frames_processed also counts calibration
            row.rates = {d: int(decisions.get(d, 0)) / n for d in ("PASS", "FLAG", "BLOCK")}
            row.drift_alarms = list(s.get("drift_alarms", []))
            b = body.get("backlog", {})
            row.backlog = int(b.get("queued_msgs", 0))
            row.drops = int(sum(b.get("drops", {}).values()))
            row.last_health = time.time()
            self._save_health((site, node, camera), body)
        elif kind == "events" and body.get("type", "event") == "event":
            # (drift_event messages share the topic; their alarms show via the health summary)
            eid = str(body["event_id"])
            if body["lifecycle"] == "new":
                row.events += 1
                row.open_events.add(eid)
            elif body["lifecycle"] == "end":
                row.open_events.discard(eid)

    def _save_health(self, where: tuple[str, str, str], body: dict[str, Any]) -> None:
        msg_id = str(body.get("msg_id", ""))
        if self.save_health is None or (msg_id and msg_id in self._health_ids):
            return
        self._health_ids.add(msg_id)
        folder = self.save_health.joinpath(*where)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "health.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(body["summary"], separators=(",", ":")) + "\n")
        self.health_saved += 1

    def _frame(self, where: tuple[str, str, str], event_id: str, payload: bytes, user: dict[str, str]) -> None:
        site, node, camera = where
        row = self._row(site, node, camera)
        row.frames += 1
        if self.save_frames is None:
            return
        if user.get("sha256") and hashlib.sha256(payload).hexdigest() != user["sha256"]:
            self.bad += 1
            return
        folder = self.save_frames / site / node / camera
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{event_id}_{user.get('seq', 'x')}_{user.get('role', 'frame')}.jpg"
        path.write_bytes(payload)
        self.saved.append(path)

    def render(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        head = ("SITE/NODE", "CAMERA", "STATE", "FPS", "PASS%", "FLAG%", "BLOCK%", "EVENTS", "DRIFT",
                "BACKLOG", "DROPS", "HEALTH")
        rows: list[tuple[str, ...]] = []
        with self._lock:
            keys = sorted(set(self.nodes) | {(s, n) for s, n, _ in self.cameras})
            for site, node in keys:
                nrow = self.nodes.get((site, node))
                rows.append((f"{site}/{node}", "-", nrow.state if nrow else "?", "", "", "", "", "", "", "", "", ""))
                for (s, n, _), r in sorted(self.cameras.items()):
                    if (s, n) != (site, node):
                        continue
                    pct = {d: f"{100 * r.rates[d]:.1f}" if r.rates else "" for d in ("PASS", "FLAG", "BLOCK")}
                    age = f"#{r.health_seq} {now - r.last_health:.0f}s ago" if r.last_health else "-"
                    if r.health_gaps:
                        age += f" gaps={r.health_gaps}"
                    rows.append((
                        "", r.camera, r.state, f"{r.fps:.1f}" if r.fps is not None else "", pct["PASS"], pct["FLAG"],
                        pct["BLOCK"], f"{len(r.open_events)}/{r.events}", ",".join(r.drift_alarms) or "-",
                        str(r.backlog) if r.backlog is not None else "", str(r.drops), age,
                    ))
        if not rows:
            return "no edge-guard agents seen yet\n"
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *rows]]
        return "\n".join(lines) + "\n"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``edge-guard tail``."""
    p = sub.add_parser("tail", help="watch fleet status and health from an MQTT broker",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", required=True, help="broker host")
    p.add_argument("--port", type=_port, default=None, help="broker port (default 1883, 8883 with --tls-ca)")
    p.add_argument("--prefix", default="edge-guard/v1", help="topic prefix (default %(default)s)")
    p.add_argument("--site", default="+", help="only this site (default: all)")
    p.add_argument("--tls-ca", type=Path, help="CA file: connect with TLS")
    p.add_argument("--tls-cert", type=Path, help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", type=Path, help="client key (mutual TLS)")
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password-file", type=Path, help="file holding the password")
    p.add_argument("--save-frames", type=Path, metavar="DIR", help="write received JPEG frames here")
    p.add_argument("--save-health", type=Path, metavar="DIR",
                   help="append health summaries to DIR/<site>/<node>/<camera>/health.jsonl (for edge-guard report)")
    p.add_argument("--once", action="store_true", help="collect for --duration (default 3 s), print once, exit")
    p.add_argument("--duration", type=_positive, help="stop after this many seconds")
    p.add_argument("--refresh", type=_positive, default=1.0, help="seconds between table refreshes")
    p.set_defaults(func=run_tail)


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1..65535, got {text!r}")
    return port


_positive = float_arg(lambda v: v > 0, "expected more than 0 seconds")


def _usage_errors(args: argparse.Namespace) -> list[str]:
    """What makes the options unusable, checked before connecting (each line names the option)."""
    out: list[str] = []
    if not args.host.strip():
        out.append("--host is empty")
    for flag, value in (("--prefix", args.prefix), ("--site", args.site)):
        if not value or "#" in value or ("+" in value and value != "+") or (flag == "--site" and "/" in value):
            out.append(f"{flag} {value!r}: topic levels without '#' or '+' (--site '+' means every site)")
    if args.password_file is not None and not args.username:
        out.append("--password-file needs --username")
    if (args.tls_cert is None) != (args.tls_key is None):
        out.append("--tls-cert and --tls-key go together (mutual TLS)")
    if args.tls_cert is not None and args.tls_ca is None:
        out.append("--tls-cert/--tls-key need --tls-ca (the CA that signed the broker's certificate)")
    problem = pem_problem(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca is not None else None
    if problem is not None:
        out.append(f"--tls-ca/--tls-cert/--tls-key: cannot load them as PEM ({problem[1]})")
    if args.password_file is not None:
        try:
            args.password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            out.append(f"--password-file {args.password_file}: cannot read it as text ({exc})")
    for flag, folder in (("--save-frames", args.save_frames), ("--save-health", args.save_health)):
        if folder is not None:
            try:
                check_output(folder, flag, folder=True)
            except ConfigError as exc:
                out.append(str(exc))
    return out


def _client(args: argparse.Namespace, view: FleetView, errors: list[str]) -> mqtt.Client:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if args.username:
        pw = args.password_file.read_text(encoding="utf-8").rstrip("\r\n") if args.password_file else None
        client.username_pw_set(args.username, pw)
    if args.tls_ca:
        client.tls_set(ca_certs=str(args.tls_ca), certfile=str(args.tls_cert) if args.tls_cert else None,
                       keyfile=str(args.tls_key) if args.tls_key else None)
    base = f"{args.prefix}/{args.site}/+"
    filters = [f"{base}/status", f"{base}/+/status", f"{base}/+/health", f"{base}/+/events"]
    if args.save_frames is not None:
        filters.append(f"{base}/+/frames/+")

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.value >= 0x80:
            errors.append(f"broker {args.host} refused the connection: {rc}")
            return
        view.connected = True
        c.subscribe([(f, 1) for f in filters])

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        user = dict(getattr(msg.properties, "UserProperty", []) or []) if msg.properties else {}
        try:
            view.feed(msg.topic, bytes(msg.payload), user)
        except OSError as exc:  # --save-frames / --save-health: a full disk, a folder removed meanwhile
            errors.append(f"cannot save what arrived on {msg.topic}: {exc}")

    client.on_connect = on_connect
    client.on_message = on_message
    return client


def run_tail(args: argparse.Namespace) -> int:
    """Run ``edge-guard tail``; returns the exit code (2: unusable options, 1: the broker could not
    be used or what arrived could not be saved)."""
    usage = _usage_errors(args)
    if usage:
        sys.stderr.write("".join(f"edge-guard tail: {line}\n" for line in usage))
        return 2
    view = FleetView(args.prefix, args.save_frames, args.save_health)
    errors: list[str] = []
    client = _client(args, view, errors)
    port = args.port or (8883 if args.tls_ca else 1883)
    try:
        client.connect(args.host, port)
    except (OSError, ValueError) as exc:  # ValueError: paho's own check of the host name
        sys.stderr.write(f"edge-guard tail: cannot connect to {args.host}:{port}: {exc}\n")
        return 1
    client.loop_start()
    duration = args.duration if args.duration is not None else (3.0 if args.once else None)
    tty = sys.stdout.isatty()
    t0 = time.monotonic()
    try:
        while duration is None or time.monotonic() - t0 < duration:
            time.sleep(min(args.refresh, max(0.05, (duration or 1e9) - (time.monotonic() - t0))))
            if errors:
                sys.stderr.write(f"edge-guard tail: {errors[0]}\n")
                return 1
            if not args.once:
                sys.stdout.write(("\x1b[H\x1b[2J" if tty else "\n") + view.render())
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    if not view.connected:
        sys.stderr.write(f"edge-guard tail: no MQTT session with {args.host}:{port} in {time.monotonic() - t0:.0f} s "
                         "(is it an MQTT broker, and reachable? TLS needs --tls-ca)\n")
        return 1
    if args.once:
        sys.stdout.write(view.render())
    if args.save_frames is not None:
        sys.stdout.write(f"{len(view.saved)} frame(s) saved under {args.save_frames}\n")
    if args.save_health is not None:
        sys.stdout.write(f"{view.health_saved} health summaries saved under {args.save_health}\n")
    return 0
