"""A real Mosquitto broker for tests and benchmarks: free loopback port, generated config.

Supports plain TCP, TLS (a CA and server/client certificates generated at test time with the
``openssl`` CLI), a password file (``mosquitto_passwd``), an ACL file, persistence, and
stop/start/restart on the same port for outage tests. Usage::

    with Mosquitto(tmp_path) as broker:          # plain, anonymous
        ... broker.port ...
    broker = Mosquitto(tmp_path, tls=True, users={"agent": "pw"}, acl=acl_text).start()
    broker.stop(); ...; broker.start()           # same port, same persisted state

Run as root, mosquitto would drop to user ``mosquitto``; the config pins ``user`` to the
current user and every generated file is chmod 0644 so either way it can read them.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = [
    "Certs",
    "Collector",
    "Mosquitto",
    "Received",
    "free_port",
    "make_certs",
    "mosquitto_available",
    "read_ledger",
    "start_loadgen",
    "stop_process",
]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def mosquitto_available() -> bool:
    return Path(MOSQUITTO).is_file() and shutil.which("mosquitto_passwd") is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(directory: Path, host: str = "localhost") -> Certs:
    """A throw-away CA plus server (CN/SAN ``host`` and 127.0.0.1) and client certificates (EC P-256)."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=edge-guard test CA", cwd=directory)
    (directory / "server.ext").write_text(f"subjectAltName=DNS:{host},IP:127.0.0.1\n")
    for name, cn in (("server", host), ("client", "edge-guard-client")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=directory)
        extra = ["-extfile", "server.ext"] if name == "server" else []
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", *extra, cwd=directory)
    for f in directory.iterdir():
        f.chmod(0o644)
    return Certs(directory / "ca.crt", directory / "server.crt", directory / "server.key",
                 directory / "client.crt", directory / "client.key")


class Mosquitto:
    """One broker process on 127.0.0.1:<port>; files live in ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        tls: bool = False,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        persistence: bool = True,
        require_client_cert: bool = False,
        extra_conf: str = "",
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.certs = make_certs(self.dir / "certs") if tls else None
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if users else 'true'}",
            # Collectors in tests must not lose QoS 1 messages while they catch up after an outage.
            "max_queued_messages 0",
            "max_inflight_messages 50",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.dir}/",
            f"log_dest file {self.dir / 'mosquitto.log'}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            # Each subscription is logged, so a test can wait until a subprocess has subscribed.
            "log_type subscribe",
            "connection_messages true",
        ]
        if self.certs is not None:
            lines += [f"cafile {self.certs.ca}", f"certfile {self.certs.server_cert}",
                      f"keyfile {self.certs.server_key}",
                      f"require_certificate {'true' if require_client_cert else 'false'}"]
        if users:
            pw = self.dir / "passwd"
            pw.write_text("")
            pw.chmod(0o644)
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True)
            pw.chmod(0o644)
            lines.append(f"password_file {pw}")
        if acl is not None:
            af = self.dir / "acl"
            af.write_text(acl)
            af.chmod(0o644)
            lines.append(f"acl_file {af}")
        conf = self.dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n" + extra_conf)
        conf.chmod(0o644)
        self.conf = conf

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start (or restart after stop) on the same port; returns when it accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the broker saves its persistent state), wait for the exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        p = self.dir / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class Collector:
    """A subscriber that records every message (thread-safe), e.g. a fleet collector.

    ``persistent=True`` uses a fixed client id, clean_start=False and a long session expiry,
    so QoS 1 messages published while it was disconnected (broker restart) are delivered.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic: str = "#",
        *,
        client_id: str = "",
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.topic = topic
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=client_id, protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(ca_certs=str(ca_file))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600 if persistent else 0
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.connect(host, port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("collector did not subscribe")

    def _on_connect(self, client: object, userdata: object, flags: object, rc: object, props: object) -> None:
        self.client.subscribe(self.topic, qos=1)

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        rec = Received.of(msg)
        with self._cond:
            self.messages.append(rec)
            self._cond.notify_all()

    def wait_for(self, pred: object, timeout: float) -> list[Received]:
        """Wait until ``pred(messages)`` is truthy; returns the messages (also on timeout)."""
        assert callable(pred)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
            return list(self.messages)

    def snapshot(self) -> list[Received]:
        with self._cond:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    user: dict[str, str]
    content_type: str | None
    correlation: bytes | None
    t: float

    @classmethod
    def of(cls, msg: object) -> Received:
        props = getattr(msg, "properties", None)
        user = dict(getattr(props, "UserProperty", []) or [])
        corr = getattr(props, "CorrelationData", None)
        return cls(
            topic=str(getattr(msg, "topic", "")),
            payload=bytes(getattr(msg, "payload", b"")),
            retain=bool(getattr(msg, "retain", False)),
            user=user,
            content_type=getattr(props, "ContentType", None),
            correlation=bytes(corr) if corr else None,
            t=time.monotonic(),
        )

    def json(self) -> dict[str, Any]:
        out = json.loads(self.payload)
        assert isinstance(out, dict)
        return out


def start_loadgen(
    broker: Mosquitto,
    spool: Path,
    node: str,
    *,
    ledger: Path | None = None,
    cameras: int = 1,
    fps: float = 25.0,
    health_s: float = 1.0,
    period_s: float = 4.0,
    config: Mapping[str, object] | None = None,
) -> subprocess.Popen[str]:
    """A synthetic agent subprocess (``python -m agent.sinks.mqtt.loadgen``) publishing to ``broker``."""
    cmd = [sys.executable, "-m", "agent.sinks.mqtt.loadgen", "--host", broker.host, "--port", str(broker.port),
           "--node", node, "--cameras", str(cameras), "--fps", str(fps), "--health-s", str(health_s),
           "--period-s", str(period_s), "--spool", str(spool), "--config-json", json.dumps(dict(config or {}))]
    if ledger is not None:
        cmd += ["--ledger", str(ledger)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "STARTED":
        stop_process(proc)
        raise RuntimeError(f"loadgen did not start (got {line!r}, exit {proc.returncode})")
    return proc


def stop_process(proc: subprocess.Popen[str], sig: int = signal.SIGKILL, timeout: float = 20.0) -> int:
    """Send ``sig`` if it still runs, reap it, close its stdout pipe; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return int(proc.returncode)


def read_ledger(path: Path) -> list[dict[str, object]]:
    """The loadgen's ledger: one dict per message committed to its spool (a torn last line is skipped)."""
    out: list[dict[str, object]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
