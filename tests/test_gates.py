"""Deployment gates: validation with clear errors, pass/fail on constructed stress reports."""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextlib import nullcontext as does_not_raise
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from agent.fieldtools.gates import Gate, evaluate_gates, gate_cells, load_gates


def _cell(corruption: str, severity: int, **metrics: float | None) -> dict[str, Any]:
    base: dict[str, Any] = {
        "corruption": corruption, "severity": severity, "n": 10, "flip_rate": 0.0, "conf_drop": 0.0,
        "mean_confidence": 0.8, "accuracy": None, "guard_detect_rate": 0.0, "guard_block_rate": 0.0,
        "silent_flip_rate": 0.0, "top_reasons": {},
    }
    base.update(metrics)
    return base


REPORT: dict[str, Any] = {
    "cells": [
        _cell("jpeg_camera", 3, flip_rate=0.08),
        _cell("jpeg_camera", 4, flip_rate=0.30),
        _cell("motion_blur", 2, guard_detect_rate=0.60),
        _cell("motion_blur", 3, guard_detect_rate=0.97),
        _cell("motion_blur", 4, guard_detect_rate=0.99),
        _cell("motion_blur", 5, guard_detect_rate=1.00),
        _cell("fog", 3, guard_detect_rate=0.90, flip_rate=0.5),
    ],
    "clean": {"n": 10, "mean_confidence": 0.8, "accuracy": None, "guard_false_alarm_rate": 0.02,
              "guard_block_rate": 0.0},
    "probes": {"corner_tl": {"n": 10, "flip_rate": 0.0, "conf_drop": 0.01},
               "corner_br": {"n": 10, "flip_rate": 0.2, "conf_drop": 0.05},
               "background_blur": {"n": 0, "flip_rate": None, "conf_drop": None}},
}


def _gate(**kw: Any) -> Gate:
    return Gate.model_validate(kw)


@pytest.mark.parametrize(
    ("gate", "passed", "measured", "worst_at", "detail"),
    [
        # the examples: flip rate <= 10% at JPEG q40 (jpeg_camera severity 3) ...
        ({"metric": "flip_rate", "corruption": "jpeg_camera", "severity": 3, "op": "<=", "value": 0.10},
         True, 0.08, "jpeg_camera s3", ""),
        ({"metric": "flip_rate", "corruption": "jpeg_camera", "severity": 4, "op": "<=", "value": 0.10},
         False, 0.30, "jpeg_camera s4", "over by 0.2"),
        # ... and "guard flags >= 95% of motion blur at severity >= 3": every severity 3..5 must hold
        ({"metric": "guard_detect_rate", "corruption": "motion_blur", "min_severity": 3, "op": ">=", "value": 0.95},
         True, 0.97, "motion_blur s3", ""),
        ({"metric": "guard_detect_rate", "corruption": "motion_blur", "min_severity": 2, "op": ">=", "value": 0.95},
         False, 0.60, "motion_blur s2", "under by 0.35"),
        # '*' = every measured corruption: the worst cell decides
        ({"metric": "flip_rate", "corruption": "*", "severity": 3, "op": "<", "value": 0.6},
         True, 0.5, "fog s3", ""),
        ({"metric": "flip_rate", "corruption": "*", "severity": 3, "op": "<", "value": 0.5},
         False, 0.5, "fog s3", "over by 0"),
        ({"metric": "clean_false_alarm_rate", "op": "<=", "value": 0.05}, True, 0.02, "clean", ""),
        ({"metric": "clean_false_alarm_rate", "op": "<=", "value": 0.01}, False, 0.02, "clean", "over by 0.01"),
        ({"metric": "probe_flip_rate", "probe": "corner_*", "op": "<=", "value": 0.1},
         False, 0.2, "corner_br", "over by 0.1"),
        ({"metric": "probe_flip_rate", "probe": "corner_tl", "op": "<=", "value": 0.1}, True, 0.0, "corner_tl", ""),
    ],
)
def test_gate_pass_fail(gate: dict[str, Any], passed: bool, measured: float, worst_at: str, detail: str) -> None:
    (result,) = evaluate_gates([_gate(**gate)], REPORT)
    assert result.passed is passed
    assert result.measured == pytest.approx(measured)
    assert result.worst_at == worst_at
    assert result.detail == detail
    assert (result.margin is not None and result.margin >= 0) is passed or result.margin == 0


@pytest.mark.parametrize(
    ("gate", "detail"),
    [
        # a gate never passes by default: unmeasured cells fail ...
        ({"metric": "flip_rate", "corruption": "snow", "severity": 3, "op": "<=", "value": 1.0}, "not measured"),
        ({"metric": "flip_rate", "corruption": "fog", "severity": 5, "op": "<=", "value": 1.0}, "not measured"),
        # ... so do undefined metrics (accuracy without labels) and probes that applied to nothing
        ({"metric": "accuracy", "corruption": "fog", "severity": 3, "op": ">=", "value": 0.0}, "undefined"),
        ({"metric": "clean_accuracy", "op": ">=", "value": 0.0}, "undefined"),
        ({"metric": "probe_flip_rate", "probe": "background_*", "op": "<=", "value": 1.0}, "not measured"),
    ],
)
def test_gate_fails_when_not_measurable(gate: dict[str, Any], detail: str) -> None:
    (result,) = evaluate_gates([_gate(**gate)], REPORT)
    assert not result.passed
    assert result.measured is None
    assert detail in result.detail


@pytest.mark.parametrize(
    ("text", "expectation"),
    [
        ("gates:\n  - {metric: flip_rate, corruption: fog, severity: 3, op: '<=', value: 0.1}\n", does_not_raise()),
        ("- {metric: clean_false_alarm_rate, op: '<=', value: 0.05}\n", does_not_raise()),  # a bare list is fine
        ("gates: []\n", pytest.raises(ConfigError, match="gates: List should have at least 1 item")),
        ("gates:\n  - {metric: flip_rate, corruption: smog, severity: 3, op: '<=', value: 0.1}\n",
         pytest.raises(ConfigError, match="unknown corruption 'smog'")),
        ("gates:\n  - {metric: flip_rate, corruption: fog, op: '<=', value: 0.1}\n",
         pytest.raises(ConfigError, match="either severity or min_severity")),
        ("gates:\n  - {metric: flip_rate, corruption: fog, severity: 3, min_severity: 2, op: '<=', value: 0.1}\n",
         pytest.raises(ConfigError, match="either severity or min_severity")),
        ("gates:\n  - {metric: flip_rate, corruption: fog, severity: 6, op: '<=', value: 0.1}\n",
         pytest.raises(ConfigError, match=r"gates\.0\.severity: Input should be less than or equal to 5")),
        ("gates:\n  - {metric: flip_rate, corruption: fog, severity: 3, op: '=<', value: 0.1}\n",
         pytest.raises(ConfigError, match=r"gates\.0\.op")),
        ("gates:\n  - {metric: flips, corruption: fog, severity: 3, op: '<=', value: 0.1}\n",
         pytest.raises(ConfigError, match=r"gates\.0\.metric")),
        ("gates:\n  - {metric: clean_false_alarm_rate, corruption: fog, op: '<=', value: 0.1}\n",
         pytest.raises(ConfigError, match="not per corruption: remove corruption")),
        ("gates:\n  - {metric: probe_flip_rate, op: '<=', value: 0.1}\n",
         pytest.raises(ConfigError, match="probe is required")),
        ("gates:\n  - {metric: flip_rate, corruption: fog, severity: 3, op: '<=', value: 0.1, colour: red}\n",
         pytest.raises(ConfigError, match=r"gates\.0\.colour: unknown key")),
        ("gates:\n  - {metric: flip_rate, corruption: fog, min_severity: 4, max_severity: 2, op: '<=', value: 1}\n",
         pytest.raises(ConfigError, match="min_severity")),
        ("gates:\n  - {metric: flip_rate, corruption: fog, severity: 3, op: '<=', value: 90}\n",  # meant 90 %
         pytest.raises(ConfigError, match=r"value 90 is outside 0\.\.1: flip_rate is a fraction \(write 0\.9")),
        ("gates:\n  - {metric: conf_drop, corruption: fog, severity: 3, op: '>=', value: -0.1}\n", does_not_raise()),
        ("gates: [unclosed\n", pytest.raises(ConfigError, match="not valid YAML")),
        ("42\n", pytest.raises(ConfigError, match="expected a mapping with a 'gates' list")),
    ],
)
def test_load_gates_validation(tmp_path: Path, text: str, expectation: AbstractContextManager[object]) -> None:
    path = tmp_path / "gates.yaml"
    path.write_text(text, encoding="utf-8")
    with expectation:
        assert load_gates(path)


def test_missing_gates_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read gates file"):
        load_gates(tmp_path / "nope.yaml")


def test_example_gates_file_is_valid(repo_root: Path) -> None:
    gates = load_gates(repo_root / "configs" / "gates.example.yaml")
    assert len(gates) >= 3


def test_gate_cells_and_labels() -> None:
    gates = [
        _gate(metric="flip_rate", corruption="jpeg_camera", severity=3, op="<=", value=0.1),
        _gate(metric="guard_detect_rate", corruption="motion_blur", min_severity=4, op=">=", value=0.95),
        _gate(metric="flip_rate", corruption="*", severity=1, op="<=", value=0.5),
        _gate(metric="clean_false_alarm_rate", op="<=", value=0.05, name="few false alarms"),
    ]
    assert gate_cells(gates) == (["jpeg_camera", "motion_blur"], [1, 3, 4, 5])
    assert [g.describe() for g in gates] == [
        "flip_rate jpeg_camera s3 <= 0.1",
        "guard_detect_rate motion_blur s4-5 >= 0.95",
        "flip_rate * s1 <= 0.5",
        "few false alarms",
    ]


def test_gates_can_share_fields_through_a_yaml_merge(tmp_path: Path) -> None:
    path = tmp_path / "gates.yaml"
    path.write_text("gates:\n"
                    "  - &g {metric: guard_detect_rate, corruption: motion_blur, min_severity: 3, op: '>=',\n"
                    "        value: 0.95}\n"
                    "  - {<<: *g, corruption: defocus_blur}\n")
    gates = load_gates(path)
    assert [g.corruption for g in gates] == ["motion_blur", "defocus_blur"] and gates[1].value == 0.95
