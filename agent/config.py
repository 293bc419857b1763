"""The one YAML config file, validated by pydantic (unknown keys rejected, bounds checked).

Values can be overridden from the environment: ``EDGE_GUARD_<SECTION>__<FIELD>``, e.g.
``EDGE_GUARD_MODEL__PATH=/opt/m.onnx`` or ``EDGE_GUARD_POLICY__ALPHA_FLAG=0.005``.
Environment values win over the file. Any other ``EDGE_GUARD_*`` variable (a misspelt section
such as ``EDGE_GUARD_MODLE__PATH``) is a config error, except the few the project reads for
other purposes (`OTHER_ENV_VARS`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from agent.configbase import StrictModel, load_yaml
from agent.errors import ConfigError
from agent.model.config import ModelConfig
from agent.scoring.config import CalibrationConfig, PolicyConfig
from agent.sinks.config import FileSinkConfig
from agent.sinks.mqtt.config import MqttConfig
from agent.sources.config import SourceConfig
from agent.stats.config import StatsConfig

__all__ = [
    "ENV_PREFIX",
    "OTHER_ENV_VARS",
    "GuardConfig",
    "HealthConfig",
    "PipelineConfig",
    "config_errors",
    "config_hash",
    "env_errors",
    "json_schema",
    "load_config",
    "yaml_error_message",
]

#: Prefix of the environment overrides (``EDGE_GUARD_<SECTION>__<FIELD>``).
ENV_PREFIX = "EDGE_GUARD_"
#: ``EDGE_GUARD_*`` variables that are not config overrides, so `load_config` does not reject them.
#: Keep this list in step with the code: ``grep -rn 'EDGE_GUARD_' agent tests benchmarks systemd``.
OTHER_ENV_VARS: frozenset[str] = frozenset({
    "EDGE_GUARD_TEST_DATA",  # tests and benchmarks: the shared test data folder (tests/conftest.py)
    "EDGE_GUARD_CACHE_DIR",  # agent.gpu.nvrtc: kernel cache folder; set by the systemd unit
    "EDGE_GUARD_KERNEL_DIR",  # agent.gpu.nvrtc: folder of the .cu kernel sources
    "EDGE_GUARD_STATE_DIR",  # set by systemd/edge-guard@.service (per-camera state folder)
})


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
        env_prefix=ENV_PREFIX,
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

    def start_up_calibration_error(self) -> str | None:
        """Why ``run`` would decide nothing: the source stops (``source.max_frames``) before the
        start-up calibration (no ``policy.profile``) ends; None when it does not."""
        needed = self.calibration.skip + self.calibration.frames
        limit = self.source.max_frames
        if self.policy.profile is None and limit is not None and limit < needed:
            return (
                f"source.max_frames {limit} stops the source before start-up calibration ends (calibration.skip "
                f"{self.calibration.skip} + calibration.frames {self.calibration.frames} = {needed}) and there is "
                "no policy.profile: no frame would get a decision; raise source.max_frames (--max-frames), lower "
                "calibration.frames or set policy.profile"
            )
        return None

    def input_files(self) -> list[Path]:
        """Files this config makes a command read (model, labels, profile, a file source, TLS files):
        an output flag must never point at one of them (fsutil.check_output)."""
        files = [self.model.path, self.model.labels, self.policy.profile, Path(self.source.uri)]
        if self.mqtt is not None and self.mqtt.tls is not None:
            files += [self.mqtt.tls.ca_file, self.mqtt.tls.cert_file, self.mqtt.tls.key_file]
        return [Path(f) for f in files if f is not None]


def referenced_file_errors(cfg: GuardConfig, *, absolute_only: bool = False) -> list[str]:
    """Files the config names that do not exist (``field.path: ...``); ``absolute_only`` skips
    relative paths (a service resolves them in its own working directory, not the caller's)."""
    errors: list[str] = []
    for where, path in (
        ("model.path", cfg.model.path if cfg.model.enabled else None),
        ("model.labels", cfg.model.labels if cfg.model.enabled else None),
        ("policy.profile", cfg.policy.profile),
    ):
        if path is None or (absolute_only and not Path(path).expanduser().is_absolute()):
            continue
        if not (p := Path(path).expanduser()).is_file():
            errors.append(f"{where}: {'a folder, not a file' if p.is_dir() else 'file not found'} (got '{path}')")
    return errors


def _format_error(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if not loc:  # a check across sections: its message names the fields itself
        return str(msg).removeprefix("Value error, ")
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
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {p} is not UTF-8 text (byte {exc.start}: {exc.reason}); is it the YAML config? "
                "Save it as UTF-8"
            ) from None
        try:
            loaded = load_yaml(text)
        except yaml.YAMLError as exc:
            raise ConfigError(yaml_error_message(p, exc)) from exc
        if loaded is None:  # an empty file, or comments only: a truncated copy, not "all defaults"
            raise ConfigError(
                f"config file {p} has no settings (empty or comments only); a camera's config names at least "
                "camera_id and source (start from configs/example.yaml)"
            )
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{p}: the top level must be a mapping of sections, but got {type(loaded).__name__}"
            )
        data = loaded
    if overrides:
        data = _deep_merge(data, overrides)
    lines = env_errors(os.environ)
    try:
        cfg = GuardConfig(**data)
    except ValidationError as exc:
        lines += config_errors(exc)
        raise ConfigError(_error_report(path, lines)) from exc
    except SettingsError as exc:  # an override of a list/mapping field that is not JSON
        lines += env_json_errors(os.environ) or [f"environment override: {exc} ({exc.__cause__})"]
        raise ConfigError(_error_report(path, lines)) from None
    if lines:
        raise ConfigError(_error_report(path, lines))
    return cfg


def _error_report(path: str | Path | None, lines: list[str]) -> str:
    where = f" in {path}" if path is not None else ""
    return f"{len(lines)} config error(s){where}:\n" + "\n".join(f"  - {ln}" for ln in lines)


def yaml_error_message(path: Path, exc: yaml.YAMLError) -> str:
    """``<path> is not valid YAML at line L, column C: <problem>`` with the offending line.

    PyYAML names a parsed string ``<unicode string>``; this names the file instead.
    """
    mark = getattr(exc, "problem_mark", None)
    if not isinstance(exc, yaml.MarkedYAMLError) or mark is None:
        return f"{path} is not valid YAML: {exc}"
    msg = f"{path} is not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    ctx = exc.context_mark
    if exc.context and ctx is not None:
        msg += f" ({exc.context} at line {ctx.line + 1}, column {ctx.column + 1})"
    snippet = mark.get_snippet()
    return f"{msg}\n{snippet}" if snippet else msg


def env_errors(environ: Mapping[str, str]) -> list[str]:
    """One line per ``EDGE_GUARD_*`` variable that is neither an override nor in `OTHER_ENV_VARS`.

    pydantic-settings only looks up the variables of known fields, so a misspelt section
    (``EDGE_GUARD_MODLE__PATH``) or top-level field would be silently ignored.
    Unknown fields *inside* a section (``EDGE_GUARD_POLICY__ALFA``) are reported by the
    section's own validation (``policy.alfa: unknown key``).
    """
    fields = GuardConfig.model_fields
    sections = sorted(name for name, f in fields.items() if _is_section(f.annotation))
    out: list[str] = []
    for var in sorted(environ):
        upper = var.upper()  # overrides are case-insensitive, like pydantic-settings' lookup
        if not upper.startswith(ENV_PREFIX) or upper in OTHER_ENV_VARS:
            continue
        head, nested, rest = upper[len(ENV_PREFIX):].partition("__")
        name = head.lower()
        if name in fields and (not nested or name in sections):
            continue
        if name in fields:  # EDGE_GUARD_CAMERA_ID__X: a plain value has no fields
            out.append(f"{var}: unknown environment variable ({name} is a value, not a section; "
                       f"set {ENV_PREFIX}{head}=... instead)")
            continue
        guess = difflib.get_close_matches(name, sections if nested else list(fields), n=1)
        hint = f"; did you mean {ENV_PREFIX}{guess[0].upper()}{nested}{rest}?" if guess else ""
        out.append(
            f"{var}: unknown environment variable (not a config field; expected {ENV_PREFIX}<FIELD> or "
            f"{ENV_PREFIX}<SECTION>__<FIELD> with a section from {', '.join(sections)}{hint})"
        )
    return out


def env_json_errors(environ: Mapping[str, str]) -> list[str]:
    """One line per ``EDGE_GUARD_*`` override of a list, tuple, mapping or model field whose value is
    not JSON: pydantic-settings parses those values as JSON and stops at the first that fails."""
    out: list[str] = []
    for var in sorted(environ):
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        model: Any = GuardConfig
        annotation: Any = None
        for part in upper[len(ENV_PREFIX):].lower().split("__"):
            field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
            if field is None:
                annotation = None
                break
            annotation = field.annotation
            model = next((a for a in (getattr(annotation, "__args__", None) or (annotation,))
                          if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if annotation is None or not _is_structured(annotation):
            continue
        try:
            json.loads(environ[var])
        except ValueError as exc:
            out.append(f"{var}={environ[var]!r}: not JSON ({exc}); a list or mapping is given as JSON, "
                       f"e.g. {ENV_PREFIX}STATS__GRID='[4, 4]' or {ENV_PREFIX}MODEL__PROVIDERS='[\"cpu\"]'")
    return out


def _is_structured(annotation: Any) -> bool:
    """True for list/tuple/set/dict/model annotations (also inside Optional)."""
    args = getattr(annotation, "__args__", None) if getattr(annotation, "__origin__", None) is not None else None
    candidates = (annotation,) if args is None else (annotation, *args)
    for a in candidates:
        origin = getattr(a, "__origin__", None) or a
        if origin in (list, tuple, set, dict) or (isinstance(origin, type) and issubclass(origin, BaseModel)):
            return True
    return False


def _is_section(annotation: Any) -> bool:
    """True when a top-level field is a model (or optional model) that takes ``__`` sub-fields."""
    args = getattr(annotation, "__args__", None) or (annotation,)
    return any(isinstance(a, type) and issubclass(a, BaseModel) for a in args)


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
