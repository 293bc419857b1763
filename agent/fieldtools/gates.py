"""Deployment gates: requirements on a stress report, for CI pipelines and field procedures.

A gates file is a small YAML list of requirements::

    gates:
      - {metric: flip_rate, corruption: jpeg_camera, severity: 3, op: "<=", value: 0.10}   # JPEG q40
      - {metric: guard_detect_rate, corruption: motion_blur, min_severity: 3, op: ">=", value: 0.95}
      - {metric: clean_false_alarm_rate, op: "<=", value: 0.05}
      - {metric: probe_flip_rate, probe: "corner_*", op: "<=", value: 0.05}

With ``min_severity`` (and optionally ``max_severity``, default 5) the requirement must hold
at *every* severity in the range; ``corruption: "*"`` means every corruption measured. The
gate's measured value is the worst one over what it covers. A gate whose cells were not
measured, or whose metric is undefined (accuracy without labels), fails: a gate never passes
by default. ``edge-guard stress --gates FILE`` adds the gates' corruptions and severities to
the sweep and exits with code 3 (``exitcodes.REGRESSION``) when any gate fails.
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from agent.config import config_errors, yaml_error_message
from agent.configbase import StrictModel, load_yaml
from agent.corruptions import CORRUPTIONS, SEVERITIES
from agent.errors import ConfigError

__all__ = [
    "CLEAN_METRICS",
    "CORRUPTION_METRICS",
    "Gate",
    "GateFile",
    "GateResult",
    "evaluate_gates",
    "gate_cells",
    "load_gates",
]

#: Metrics of one corruption x severity cell (see agent.fieldtools.robustness).
CORRUPTION_METRICS: tuple[str, ...] = (
    "flip_rate", "conf_drop", "mean_confidence", "accuracy",
    "guard_detect_rate", "guard_block_rate", "silent_flip_rate",
)
#: Metrics of the clean inputs.
CLEAN_METRICS: tuple[str, ...] = ("clean_false_alarm_rate", "clean_block_rate", "clean_accuracy", "clean_confidence")
_CLEAN_KEYS = {
    "clean_false_alarm_rate": "guard_false_alarm_rate",
    "clean_block_rate": "guard_block_rate",
    "clean_accuracy": "accuracy",
    "clean_confidence": "mean_confidence",
}
Metric = Literal[
    "flip_rate", "conf_drop", "mean_confidence", "accuracy", "guard_detect_rate", "guard_block_rate",
    "silent_flip_rate", "clean_false_alarm_rate", "clean_block_rate", "clean_accuracy", "clean_confidence",
    "probe_flip_rate",
]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
}


class Gate(StrictModel):
    """One requirement on a stress report."""

    metric: Metric = Field(description="What is measured (see docs/field-guide.md).")
    op: Literal["<=", ">=", "<", ">"] = Field(description="Comparison: measured <op> value must hold.")
    value: float = Field(description="The threshold (rates are fractions 0..1).")
    corruption: str | None = Field(None, description="Corruption name, or '*' for every one measured.")
    severity: int | None = Field(None, ge=1, le=5, description="Exactly this severity.")
    min_severity: int | None = Field(None, ge=1, le=5, description="Every severity from this one ...")
    max_severity: int | None = Field(None, ge=1, le=5, description="... up to this one (default 5).")
    probe: str | None = Field(None, description="probe_flip_rate: probe name or glob ('corner_*', '*').")
    name: str | None = Field(None, description="Label printed with the result (default: generated).")

    @model_validator(mode="after")
    def _check(self) -> Gate:
        ranged = self.min_severity is not None or self.max_severity is not None
        if self.metric in CORRUPTION_METRICS:
            if self.corruption is None:
                raise ValueError(f"metric {self.metric} needs a corruption (a name or '*')")
            if self.corruption != "*" and self.corruption not in CORRUPTIONS:
                known = ", ".join(CORRUPTIONS)
                raise ValueError(f"unknown corruption {self.corruption!r}; expected '*' or one of {known}")
            if (self.severity is None) == (not ranged):
                raise ValueError("give either severity or min_severity/max_severity (exactly one of the two)")
            lo, hi = self.min_severity or 1, self.max_severity or 5
            if ranged and lo > hi:
                raise ValueError(f"min_severity ({lo}) must be <= max_severity ({hi})")
        else:
            keys = ("corruption", "severity", "min_severity", "max_severity")
            extra = [k for k in keys if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"metric {self.metric} is not per corruption: remove {', '.join(extra)}")
        if (self.metric == "probe_flip_rate") != (self.probe is not None):
            raise ValueError("probe is required for metric probe_flip_rate and only allowed there")
        least = -1.0 if self.metric == "conf_drop" else 0.0  # a drop can be negative (confidence rose)
        if not least <= self.value <= 1.0:
            raise ValueError(f"value {self.value:g} is outside {least:g}..1: {self.metric} is a fraction "
                             f"(write 0.9 for 90 %), so this gate could never fail or never pass")
        return self

    @property
    def severities(self) -> tuple[int, ...]:
        """The severities this gate covers (empty for non-corruption metrics)."""
        if self.metric not in CORRUPTION_METRICS:
            return ()
        if self.severity is not None:
            return (self.severity,)
        return tuple(range(self.min_severity or 1, (self.max_severity or 5) + 1))

    def describe(self) -> str:
        """``flip_rate jpeg_camera s3 <= 0.1`` style label."""
        if self.name:
            return self.name
        where = ""
        if self.corruption is not None:
            sev = self.severities
            where = f" {self.corruption} s{sev[0]}" if len(sev) == 1 else f" {self.corruption} s{sev[0]}-{sev[-1]}"
        if self.probe is not None:
            where = f" {self.probe}"
        return f"{self.metric}{where} {self.op} {self.value:g}"


class GateFile(StrictModel):
    """The gates YAML: ``gates: [ ... ]``."""

    gates: list[Gate] = Field(min_length=1, description="Requirements; all must pass.")


class GateResult(StrictModel):
    """The outcome of one gate."""

    gate: str
    passed: bool
    measured: float | None
    worst_at: str | None = None
    margin: float | None = Field(
        None, description="value - measured for <=/<, measured - value for >=/> (negative: failed)."
    )
    detail: str = ""


def load_gates(path: str | Path) -> list[Gate]:
    """Read and validate a gates file; ConfigError listing every problem otherwise."""
    p = Path(path)
    try:
        loaded = load_yaml(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read gates file {p}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        # Same wording as a bad config file: line, column, problem and the offending line.
        raise ConfigError(f"gates file {yaml_error_message(p, exc)}") from exc
    if isinstance(loaded, list):
        loaded = {"gates": loaded}
    if not isinstance(loaded, dict):
        raise ConfigError(f"gates file {p}: expected a mapping with a 'gates' list, but got {type(loaded).__name__}")
    try:
        return GateFile.model_validate(loaded).gates
    except ValidationError as exc:
        lines = config_errors(exc)
        listing = "\n".join(f"  - {ln}" for ln in lines)
        raise ConfigError(f"{len(lines)} error(s) in gates file {p}:\n{listing}") from exc


def gate_cells(gates: Sequence[Gate]) -> tuple[list[str], list[int]]:
    """Corruptions and severities the gates need measured ('*' adds nothing)."""
    names = list(dict.fromkeys(g.corruption for g in gates if g.corruption not in (None, "*")))
    sevs = sorted({s for g in gates for s in g.severities})
    return [n for n in names if n is not None], [s for s in sevs if s in SEVERITIES]


def _worst(values: list[tuple[str, float]], op: str) -> tuple[str, float]:
    pick = max if op in ("<=", "<") else min
    return pick(values, key=lambda kv: kv[1])


def _result(gate: Gate, values: list[tuple[str, float | None]], missing: str) -> GateResult:
    label = gate.describe()
    if not values:
        return GateResult(gate=label, passed=False, measured=None, detail=f"not measured: {missing}")
    undefined = [where for where, v in values if v is None]
    if undefined:
        return GateResult(gate=label, passed=False, measured=None,
                          detail=f"{gate.metric} undefined at {', '.join(undefined)} (labels or a model missing?)")
    where, worst = _worst([(w, float(v)) for w, v in values if v is not None], gate.op)
    passed = _OPS[gate.op](worst, gate.value)
    margin = gate.value - worst if gate.op in ("<=", "<") else worst - gate.value
    detail = "" if passed else f"{'over' if gate.op in ('<=', '<') else 'under'} by {abs(margin):.4g}"
    return GateResult(gate=label, passed=passed, measured=round(worst, 6), worst_at=where,
                      margin=round(margin, 6), detail=detail)


def evaluate_gates(gates: Sequence[Gate], report: dict[str, Any]) -> list[GateResult]:
    """Check every gate against a stress report (``cells``, ``clean``, ``probes``)."""
    results: list[GateResult] = []
    cells = report.get("cells", [])
    for gate in gates:
        values: list[tuple[str, float | None]] = []
        if gate.metric in CORRUPTION_METRICS:
            for cell in cells:
                if (gate.corruption in ("*", cell["corruption"])) and cell["severity"] in gate.severities:
                    values.append((f"{cell['corruption']} s{cell['severity']}", cell.get(gate.metric)))
            missing = f"{gate.corruption} at severities {list(gate.severities)} (not in this sweep)"
        elif gate.metric in CLEAN_METRICS:
            clean = report.get("clean") or {}
            if clean:
                values.append(("clean", clean.get(_CLEAN_KEYS[gate.metric])))
            missing = "no clean inputs in the report"
        else:
            probes = report.get("probes") or {}
            pattern = gate.probe or "*"
            for name, pr in probes.items():
                if fnmatch.fnmatchcase(name, pattern) and pr.get("n", 0) > 0:
                    values.append((name, pr.get("flip_rate")))
            missing = f"probe {pattern!r} (probes not run, or no image it applies to)"
        results.append(_result(gate, values, missing))
    return results
