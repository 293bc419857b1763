"""Config of the MQTT publisher: broker, credentials, topics, spool, frames, commands.

Secrets are never values in this file: passwords and keys are read from a file or from a
systemd credential (``$CREDENTIALS_DIRECTORY/<name>``, see ``LoadCredential=``).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.configbase import StrictModel
from agent.sinks.mqtt.topics import TOPIC_LEVEL

__all__ = [
    "CommandsConfig",
    "EventsConfig",
    "FramesConfig",
    "MqttConfig",
    "SpoolConfig",
    "TlsConfig",
]

_CREDENTIAL = r"^[A-Za-z0-9_.@-]+$"


class TlsConfig(StrictModel):
    ca_file: Path = Field(description="CA certificate (PEM) that signed the broker's certificate.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    key_file: Path | None = Field(None, description="Client private key (PEM) file.")
    key_credential: str | None = Field(
        None, pattern=_CREDENTIAL,
        description="Client private key as a systemd credential name (read from $CREDENTIALS_DIRECTORY).",
    )
    check_hostname: bool = Field(
        True, description="Verify that the broker certificate names the host (disable only for lab setups)."
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> TlsConfig:
        has_key = self.key_file is not None or self.key_credential is not None
        if self.key_file is not None and self.key_credential is not None:
            raise ValueError("set either key_file or key_credential, not both")
        if (self.cert_file is None) != (not has_key):
            raise ValueError("a client certificate needs both cert_file and a key (key_file or key_credential)")
        return self


class SpoolConfig(StrictModel):
    path: Path | None = Field(
        None, description="SQLite spool file. Default: $STATE_DIRECTORY (systemd) or ./var, "
        "named mqtt-spool-<site>-<node>.sqlite; one spool per agent process.",
    )
    max_bytes: int = Field(
        256 * 1024 * 1024, ge=64 * 1024, le=64 * 1024**3,
        description="Cap on the spool's queued bytes (payload, topic and properties of each message). When "
        "full: frames go first (oldest first), health is "
        "thinned, then command responses, events and status are kept longest. Every drop is counted.",
    )
    max_age_s: float = Field(
        7 * 86400.0, ge=60, le=365 * 86400.0, description="Events, status and responses older than this are dropped."
    )
    health_max_age_s: float = Field(
        2 * 86400.0, ge=60, le=365 * 86400.0, description="Queued health summaries older than this are dropped."
    )
    frame_max_age_s: float = Field(
        6 * 3600.0, ge=60, le=365 * 86400.0, description="Queued JPEG frames older than this are dropped."
    )
    synchronous: Literal["normal", "full"] = Field(
        "normal", description="SQLite synchronous mode in WAL: 'normal' survives a process crash (kill -9); "
        "'full' also survives power loss at the cost of an fsync per message.",
    )


class EventsConfig(StrictModel):
    end_after_clean_frames: int = Field(
        5, ge=1, le=100_000, description="An episode ends after this many consecutive PASS frames."
    )
    gap_s: float = Field(
        5.0, gt=0, le=86400, description="An episode also ends when no frame arrived for this many seconds."
    )
    update_interval_s: float = Field(
        10.0, ge=0.5, le=86400, description="A running episode publishes an 'update' at most this often "
        "(and on every escalation FLAG -> BLOCK).",
    )


class FramesConfig(StrictModel):
    enabled: bool = Field(True, description="Publish sampled risky frames as JPEG on <camera>/frames/<event_id>.")
    max_bytes: int = Field(
        128 * 1024, ge=4096, le=4 * 1024 * 1024, description="Byte cap of one JPEG: quality, then size, is reduced."
    )
    max_width: int = Field(1280, ge=64, le=8192, description="Frames wider than this are downscaled first.")
    jpeg_quality: int = Field(85, ge=10, le=100, description="Starting JPEG quality.")
    min_quality: int = Field(35, ge=5, le=100, description="Lowest quality tried before downscaling further.")
    per_minute: float = Field(
        6.0, ge=0, le=6000,
        description="Token-bucket rate of risky (FLAG/BLOCK episode) frames per camera; 0: none (each is counted "
        "as rate-limited), snapshots and reference frames (reference_per_hour) still go out.",
    )
    burst: int = Field(3, ge=1, le=1000, description="Token-bucket depth: frames that may go out back to back.")
    daily_bytes: int = Field(
        200 * 1024 * 1024, ge=0, le=1024**4, description="Daily (UTC) byte budget for frames per agent; 0: no limit."
    )
    reference_per_hour: int = Field(
        2, ge=0, le=60, description="Clean reference frames per camera and hour (reservoir sample of PASS frames)."
    )
    snapshot_min_interval_s: float = Field(
        1.0, ge=0, le=3600, description="Minimum seconds between two snapshot commands (others are rejected)."
    )

    @model_validator(mode="after")
    def _quality_range(self) -> FramesConfig:
        if self.min_quality > self.jpeg_quality:
            raise ValueError(f"min_quality ({self.min_quality}) must be <= jpeg_quality ({self.jpeg_quality})")
        return self


class CommandsConfig(StrictModel):
    enabled: bool = Field(True, description="Subscribe to <node>/cmd/+ and answer commands.")
    require_signature: bool = Field(
        False, description="Reject commands without a valid HMAC-SHA256 signature (key from hmac_key_*)."
    )
    hmac_key_file: Path | None = Field(None, description="File holding the shared command-signing key.")
    hmac_key_credential: str | None = Field(
        None, pattern=_CREDENTIAL, description="Command-signing key as a systemd credential name."
    )
    max_skew_s: float = Field(
        300.0, ge=1, le=86400, description="Signed commands must carry a ts within this many seconds of now."
    )
    max_payload_bytes: int = Field(8192, ge=256, le=1024 * 1024, description="Larger command payloads are rejected.")
    rate_per_s: float = Field(
        20.0, gt=0, le=10_000, description="Commands answered per second; a flood above it is ignored (counted)."
    )
    burst: int = Field(50, ge=1, le=100_000, description="Token-bucket depth of the command rate limit.")
    queue_size: int = Field(16, ge=1, le=1024, description="Accepted commands waiting for the command worker.")

    @model_validator(mode="after")
    def _key(self) -> CommandsConfig:
        if self.hmac_key_file is not None and self.hmac_key_credential is not None:
            raise ValueError("set either hmac_key_file or hmac_key_credential, not both")
        if self.require_signature and self.hmac_key_file is None and self.hmac_key_credential is None:
            raise ValueError("require_signature needs a key: set hmac_key_file or hmac_key_credential")
        return self


class MqttConfig(StrictModel):
    host: str = Field(min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    prefix: str = Field(
        "edge-guard/v1", min_length=1, max_length=128,
        description="Topic prefix; topics are <prefix>/<site>/<node>/... (levels: letters, digits, '_.-').",
    )
    node: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Node name in topics (default: the top-level 'node'). Each agent process needs its own: "
        "with one service per camera use e.g. '<host>-<camera>'.",
    )
    client_id: str | None = Field(
        None, min_length=1, max_length=128, description="MQTT client id (default: edge-guard-<site>-<node>); "
        "must be stable across restarts so a quick restart cancels the delayed last will.",
    )
    username: str | None = Field(None, min_length=1, description="Broker user name.")
    password_file: Path | None = Field(
        None, description="File whose content (trailing newline stripped) is the password."
    )
    password_credential: str | None = Field(
        None, pattern=_CREDENTIAL, description="Password as a systemd credential name ($CREDENTIALS_DIRECTORY/<name>)."
    )
    tls: TlsConfig | None = Field(None, description="TLS settings; null: plain TCP.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval.")
    connect_timeout_s: float = Field(5.0, gt=0, le=120, description="TCP/TLS connect timeout.")
    reconnect_min_s: float = Field(0.5, gt=0, le=3600, description="First reconnect delay (doubles each failure).")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="Longest reconnect delay.")
    auth_backoff_s: float = Field(
        60.0, ge=1, le=86400, description="Delay after the broker refused the credentials (not a crash loop)."
    )
    will_delay_s: int = Field(
        10, ge=0, le=86400, description="MQTT 5 will delay: a blip shorter than this does not flip status to offline."
    )
    session_expiry_s: int = Field(
        300, ge=0, le=7 * 86400, description="MQTT 5 session expiry (>= will_delay_s, or the will is sent at once)."
    )
    max_inflight: int = Field(
        16, ge=1, le=1000, description="Messages handed to paho but not yet acknowledged (bounds memory)."
    )
    flush_timeout_s: float = Field(
        5.0, ge=0, le=600, description="On clean shutdown, wait this long for the spool to drain."
    )
    spool: SpoolConfig = Field(default_factory=SpoolConfig, description="Store-and-forward spool.")
    events: EventsConfig = Field(default_factory=EventsConfig, description="Episode (event) lifecycle.")
    frames: FramesConfig = Field(default_factory=FramesConfig, description="Sampled JPEG frames.")
    commands: CommandsConfig = Field(default_factory=CommandsConfig, description="Remote commands.")

    @field_validator("prefix")
    @classmethod
    def _prefix_levels(cls, v: str) -> str:
        levels = v.split("/")
        bad = [lv for lv in levels if not TOPIC_LEVEL.match(lv)]
        if bad:
            raise ValueError(
                f"prefix must be '/'-separated non-empty levels of letters, digits, '_', '.', '-' "
                f"(no wildcards, no leading/trailing '/'), but got {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _cross(self) -> MqttConfig:
        if self.password_file is not None and self.password_credential is not None:
            raise ValueError("set either password_file or password_credential, not both")
        if (self.password_file is not None or self.password_credential is not None) and self.username is None:
            raise ValueError("a password must be provided with a username")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must be <= reconnect_max_s ({self.reconnect_max_s})"
            )
        if self.session_expiry_s < self.will_delay_s:
            raise ValueError(
                f"session_expiry_s ({self.session_expiry_s}) must be >= will_delay_s ({self.will_delay_s}): "
                "the broker sends the will when the session ends, whatever the delay"
            )
        return self


def pem_problem(
    ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
) -> tuple[Literal["ca", "pair"], str] | None:
    """What keeps these PEM files from making a TLS client context, checked when a command starts
    rather than in a connection retried for ever: ``("ca", why)`` for the CA file, ``("pair", why)``
    for the client certificate and key together; None when they load. An encrypted key fails (an
    empty password is given) instead of prompting on a terminal nobody watches; ``why`` names the
    problem, never the key material."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (ssl.SSLError, OSError) as exc:
        return "ca", str(exc)
    if cert_file is not None and key_file is not None:
        try:
            context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file), password="")
        except (ssl.SSLError, OSError) as exc:
            return "pair", str(exc)
    return None
