"""The one YAML config file, validated by pydantic (unknown keys rejected, bounds checked).

Values can be overridden from the environment: ``EDGE_GUARD_<SECTION>__<FIELD>``, e.g.
``EDGE_GUARD_MODEL__PATH=/opt/m.onnx`` or ``EDGE_GUARD_POLICY__ALPHA_FLAG=0.005``.
Environment values win over the file.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.configbase import StrictModel
from agent.errors import ConfigError
from agent.model.config import ModelConfig
from agent.scoring.config import CalibrationConfig, PolicyConfig
from agent.sinks.config import FileSinkConfig
from agent.sinks.mqtt.config import MqttConfig
from agent.sources.config import SourceConfig
from agent.stats.config import StatsConfig

__all__ = [
    "GuardConfig",
    "HealthConfig",
    "PipelineConfig",
    "config_errors",
    "config_hash",
    "json_schema",
    "load_config",
]


class PipelineConfig(StrictModel):
    queue_size: int = Field(
        4, ge=1, le=1024, description="Frames buffered between reader and workers; older frames "
        "are dropped (and counted) when full so the camera reader never stalls."
    )
    stall_after_s: float = Field(
        10.0, gt=0, le=3600, description="No processed frame for this long while the source is up "
        "means the pipeline is stalled (watchdog stops, camera status degraded)."
    )


class HealthConfig(StrictModel):
    interval_s: float = Field(
        60.0, ge=1.0, le=86400, description="Seconds between health summaries (minimum 1)."
    )


class LoggingConfig(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")


class GuardConfig(BaseSettings):
    """Top-level config of one edge-guard instance (one camera)."""

    model_config = SettingsConfigDict(
        env_prefix="EDGE_GUARD_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    camera_id: str = Field(
        "cam0", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Camera name: letters, digits, '_', '.', '-' (used in MQTT topics).",
    )
    site: str = Field(
        "default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Site name, for slicing fleet data.",
    )
    node: str = Field(
        default_factory=lambda: socket.gethostname().split(".")[0] or "node",
        min_length=1, max_length=64,
        description="Node (edge box) name; defaults to the host name.",
    )
    source: SourceConfig = Field(default_factory=SourceConfig, description="Where frames come from.")
    stats: StatsConfig = Field(default_factory=StatsConfig, description="Frame statistics backend.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The guarded model.")
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig, description="How a baseline profile is built."
    )
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="PASS/FLAG/BLOCK policy.")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="Queues and stall rule.")
    health: HealthConfig = Field(default_factory=HealthConfig, description="Health summaries.")
    file_sink: FileSinkConfig = Field(
        default_factory=FileSinkConfig, description="Local output used when mqtt is not set."
    )
    mqtt: MqttConfig | None = Field(None, description="MQTT publisher; null: write to file_sink.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first = environment wins over the YAML file's values.
        return (env_settings, init_settings)


def _format_error(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "<root>"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (not a field of this section; check spelling)"
    got = err.get("input")
    if err["type"] != "extra_forbidden" and not isinstance(got, dict):
        return f"{loc}: {msg} (got {got!r})"
    return f"{loc}: {msg}"


def config_errors(exc: ValidationError) -> list[str]:
    """One human-readable line per error: ``field.path: what is expected (got ...)``."""
    return [_format_error(e) for e in exc.errors()]


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> GuardConfig:
    """Load and validate a YAML config; raise ConfigError listing every problem.

    ``path=None`` gives the built-in defaults (the demo); ``overrides`` are merged on top of
    the file's top-level sections (used by the CLI flags).
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{p}: the top level must be a mapping of sections, but got {type(loaded).__name__}"
            )
        data = loaded
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return GuardConfig(**data)
    except ValidationError as exc:
        where = f" in {path}" if path is not None else ""
        lines = config_errors(exc)
        raise ConfigError(
            f"{len(lines)} config error(s){where}:\n" + "\n".join(f"  - {ln}" for ln in lines)
        ) from exc


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def config_hash(cfg: GuardConfig) -> str:
    """Short stable hash of the effective config (sha256 of its canonical JSON, 12 hex)."""
    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def json_schema() -> dict[str, Any]:
    """JSON Schema of the config file (exported to docs/config.schema.json)."""
    schema = GuardConfig.model_json_schema()
    schema["$id"] = "https://edge-guard.invalid/config.schema.json"
    schema["title"] = "edge-guard config"
    # The node default depends on the host; do not bake this machine's name into the docs.
    schema["properties"]["node"].pop("default", None)
    return schema
