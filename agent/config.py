"""The one YAML config file, validated by pydantic (unknown keys rejected, bounds checked).

Values can be overridden from the environment: ``EDGE_GUARD_<SECTION>__<FIELD>``, e.g.
``EDGE_GUARD_MODEL__PATH=/opt/m.onnx`` or ``EDGE_GUARD_POLICY__ALPHA_FLAG=0.005``.
Environment values win over the file, and the command line's options (`Overrides`) over both.
Any other ``EDGE_GUARD_*`` variable (a misspelt section such as ``EDGE_GUARD_MODLE__PATH``) is a
config error, except the few the project reads for other purposes (`OTHER_ENV_VARS`).

Every error names where its value came from: a field of the file (``policy.alpha_flag: ...``),
an environment variable (``policy.alpha_flag (from EDGE_GUARD_POLICY__ALPHA_FLAG='abc'): ...``) or
a command-line option (``calibration.frames (from --frames 5): ...``, see `Overrides`); an error of
an option's value is a `UsageError` (exit 2).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import shlex
import socket
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from agent.configbase import StrictModel, load_yaml
from agent.errors import ConfigError, UsageError
from agent.model.config import ModelConfig
from agent.scoring.config import CalibrationConfig, PolicyConfig
from agent.sinks.config import FileSinkConfig
from agent.sinks.mqtt.config import MqttConfig
from agent.sinks.mqtt.topics import TOPIC_LEVEL, reserved_camera_problem
from agent.sources.config import SourceConfig
from agent.stats.config import StatsConfig

__all__ = [
    "ENV_PREFIX",
    "OTHER_ENV_VARS",
    "GuardConfig",
    "HealthConfig",
    "Overrides",
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
#: Where an error's value came from, in the report's first line (the file is named by its path).
_ON_COMMAND_LINE = "on the command line"
_IN_ENVIRONMENT = "in the environment"


#: The values the command line's options give while `load_config` builds a GuardConfig.
_OPTION_VALUES: ContextVar[Mapping[str, Any] | None] = ContextVar("edge_guard_option_values", default=None)


class _OptionsSource(PydanticBaseSettingsSource):
    """The command line's values (`Overrides.values`), the first settings source: an option wins
    over an environment variable for the same field, which wins over the file."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # the whole mapping is given at once by __call__

    def __call__(self) -> dict[str, Any]:
        return copy.deepcopy(dict(_OPTION_VALUES.get() or {}))


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
        # First wins: the command line's options, then the environment, then the YAML file's values.
        return (_OptionsSource(settings_cls), env_settings, init_settings)

    @model_validator(mode="after")
    def _mqtt_topic_levels(self) -> GuardConfig:
        """What the MQTT topics (agent.sinks.mqtt.topics) need of ``camera_id`` and ``node``, checked
        here so that check-config and every loader report it, not only the MQTT sink at run's start."""
        if self.mqtt is None:
            return self
        errors: list[InitErrorDetails] = []
        if (reserved := reserved_camera_problem(self.camera_id)) is not None:
            errors.append(_field_error("camera_id", self.camera_id, reserved))
        if self.mqtt.node is None and not TOPIC_LEVEL.match(self.node):
            errors.append(_field_error(
                "node", self.node, "node names the MQTT topic level of this agent: it must be letters, digits, "
                "'_', '.', '-'; rename it or set mqtt.node",
            ))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

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


def _field_error(name: str, value: Any, message: str) -> InitErrorDetails:
    """An error of the field ``name`` raised by a check across fields (a model validator), so that the
    report names that field rather than the whole config."""
    return InitErrorDetails(type=PydanticCustomError("value_error", message), loc=(name,), input=value)


@dataclass
class Overrides:
    """Values given on the command line: ``values`` nested like the file's sections and merged over them,
    and ``flags``, the option that gave each (dotted field path -> ``"--frames 5"``), so that a value out
    of bounds is reported as that option's error (`UsageError`, exit 2), not as the file's."""

    values: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)

    def set(self, path: str, value: Any, flag: str | None = None) -> None:
        """Set the field ``path`` (``"source.max_frames"``) to ``value``; ``flag`` (``"--max-frames"``)
        is the option that gave it, None for a value the command sets itself."""
        *sections, name = path.split(".")
        target = self.values
        for section in sections:
            target = target.setdefault(section, {})
        target[name] = value
        if flag is not None:
            self.flags[path] = f"{flag} {shlex.quote(str(value))}"
        else:
            self.flags.pop(path, None)


@dataclass(frozen=True)
class _Origin:
    """A value that did not come from the file: the field it set, and how the user gave it."""

    path: tuple[str, ...]  # ("calibration", "frames")
    label: str  # "--frames 5", "EDGE_GUARD_POLICY__ALPHA_FLAG='abc'"
    place: str  # _ON_COMMAND_LINE or _IN_ENVIRONMENT


@dataclass(frozen=True)
class _Line:
    """One line of an error report and where its values came from (None: the config file)."""

    text: str
    places: tuple[str | None, ...] = (None,)


def _origins(flags: Mapping[str, str], environ: Mapping[str, str]) -> list[_Origin]:
    """The command-line options' and the environment overrides' fields (the unknown variables that
    `env_errors` reports are included: their path matches no error)."""
    out = [_Origin(tuple(path.split(".")), label, _ON_COMMAND_LINE) for path, label in flags.items()]
    for var in sorted(environ):
        upper = var.upper()
        if upper.startswith(ENV_PREFIX) and upper not in OTHER_ENV_VARS:
            path = tuple(upper[len(ENV_PREFIX):].lower().split("__"))
            out.append(_Origin(path, f"{var}={environ[var]!r}", _IN_ENVIRONMENT))
    return out


def _origin_of(loc: tuple[str, ...], origins: Sequence[_Origin]) -> _Origin | None:
    """Where the value at ``loc`` came from: an option wins over the environment (as in `GuardConfig`),
    a variable or option for the field itself over one for its section."""
    matches = [o for o in origins if loc[:len(o.path)] == o.path]
    return max(matches, key=lambda o: (o.place == _ON_COMMAND_LINE, len(o.path)), default=None)


def _format_error(err: Any, origins: Sequence[_Origin] = ()) -> _Line:
    path = tuple(str(p) for p in err["loc"])
    loc = ".".join(path)
    msg = str(err["msg"]).removeprefix("Value error, ")  # a validator's own message says what is wrong
    if not loc:  # a check across sections: its message names the fields itself
        return _Line(msg)
    if err["type"] == "extra_forbidden":
        msg = "unknown key (not a field of this section; check spelling)"
    origin = _origin_of(path, origins)
    got = err.get("input")
    show_got = err["type"] != "extra_forbidden" and not isinstance(got, dict)
    if origin is not None:  # the label shows the value, unless it gave a section or list around it
        got_text = f" (got {got!r})" if show_got and origin.path != path else ""
        return _Line(f"{loc} (from {origin.label}): {msg}{got_text}", (origin.place,))
    within = [o for o in origins if o.path[:len(path)] == path]  # a section's check: values set inside it too
    with_text = f" (with {', '.join(o.label for o in within)})" if within else ""
    text = f"{loc}{with_text}: {msg} (got {got!r})" if show_got else f"{loc}{with_text}: {msg}"
    return _Line(text, (None, *(o.place for o in within)))


def config_errors(exc: ValidationError) -> list[str]:
    """One human-readable line per error: ``field.path: what is expected (got ...)``."""
    return [line.text for line in _error_lines(exc, ())]


def _error_lines(exc: ValidationError, origins: Sequence[_Origin]) -> list[_Line]:
    """`config_errors`' lines, a value that did not come from the file named with its origin:
    ``field.path (from EDGE_GUARD_X__Y='v'): ...``."""
    return [_format_error(e, origins) for e in exc.errors()]


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | Overrides | None = None
) -> GuardConfig:
    """Load and validate a YAML config; raise ConfigError listing every problem, a `UsageError` when
    a command-line option's value is one of them.

    ``path=None`` gives the built-in defaults (the demo); ``overrides`` are merged on top of
    the file's top-level sections (used by the CLI flags: an `Overrides` names the option of each).
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
    given = overrides if isinstance(overrides, Overrides) else Overrides(dict(overrides or {}))
    origins = _origins(given.flags, os.environ)
    lines = [_Line(text, (_IN_ENVIRONMENT,)) for text in env_errors(os.environ)]
    # the options' values come in as the first settings source (`_OptionsSource`): over the environment and the file
    token = _OPTION_VALUES.set(given.values)
    try:
        cfg = GuardConfig(**data)
    except ValidationError as exc:
        lines += _error_lines(exc, origins)
        raise _report_error(path, lines) from exc
    except SettingsError as exc:  # an override of a list/mapping field that is not JSON
        json_lines = env_json_errors(os.environ) or [f"environment override: {exc} ({exc.__cause__})"]
        lines += [_Line(text, (_IN_ENVIRONMENT,)) for text in json_lines]
        raise _report_error(path, lines) from None
    finally:
        _OPTION_VALUES.reset(token)
    if lines:
        raise _report_error(path, lines)
    return cfg


def _report_error(path: str | Path | None, lines: list[_Line]) -> ConfigError:
    """The error listing every line: a `UsageError` when a command-line option alone gave a bad value."""
    error = UsageError if any(line.places == (_ON_COMMAND_LINE,) for line in lines) else ConfigError
    return error(_error_report(path, lines))


def _error_report(path: str | Path | None, lines: list[_Line]) -> str:
    """``N config error(s) in cam.yaml and in the environment:`` and one ``  - ...`` line per error."""
    in_file = f"in {path}" if path is not None else ""  # no file: the built-in defaults
    places = {place or in_file for line in lines for place in line.places}
    ordered = [p for p in (in_file, _ON_COMMAND_LINE, _IN_ENVIRONMENT) if p and p in places]
    where = ", ".join(ordered[:-1]) + " and " + ordered[-1] if len(ordered) > 1 else "".join(ordered)
    head = f"{len(lines)} config error(s)" + (f" {where}" if where else "")
    return f"{head}:\n" + "\n".join(f"  - {line.text}" for line in lines)


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
    section's own validation (``policy.alfa (from EDGE_GUARD_POLICY__ALFA='1'): unknown key``).
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
