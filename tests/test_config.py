"""Config loading: every error names its field path; env overrides win; the example validates."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from agent import REPO_ROOT
from agent.config import OTHER_ENV_VARS, GuardConfig, Overrides, config_hash, json_schema, load_config
from agent.errors import ConfigError, UsageError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge-guard.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("yaml_text", "expected_fragments"),
    [
        # unknown key inside a section: the full path and the hint
        ("policy:\n  alfa_flag: 0.1\n", ["policy.alfa_flag", "unknown key"]),
        # unknown top-level section
        ("polcy:\n  alpha_flag: 0.1\n", ["polcy", "unknown key"]),
        # unknown key two levels deep
        ("source:\n  reconnect:\n    inital_s: 1\n", ["source.reconnect.inital_s", "unknown key"]),
        # bounds: lt=1
        ("policy:\n  alpha_flag: 2\n", ["policy.alpha_flag", "less than 1", "got 2"]),
        # bounds: ge=1
        ("pipeline:\n  queue_size: 0\n", ["pipeline.queue_size", "greater than or equal to 1", "got 0"]),
        # bounds: health interval minimum
        ("health:\n  interval_s: 0.1\n", ["health.interval_s", "got 0.1"]),
        # wrong type
        ("model:\n  batch_size: many\n", ["model.batch_size", "valid integer", "'many'"]),
        # Literal choices
        ("stats:\n  backend: tpu\n", ["stats.backend", "'tpu'"]),
        # pattern
        ("camera_id: 'front door'\n", ["camera_id", "pattern", "'front door'"]),
        # cross-field: alpha_block <= alpha_flag
        ("policy:\n  alpha_flag: 0.01\n  alpha_block: 0.05\n", ["policy", "alpha_block (0.05) must be <= alpha_flag"]),
        # cross-field: back-off cap below the first delay
        (
            "source:\n  reconnect:\n    initial_s: 5\n    max_s: 1\n",
            ["source.reconnect", "max_s (1.0) must be >= initial_s"],
        ),
        # field validator with expected-vs-actual
        ("stats:\n  grid: [0, 40]\n", ["stats.grid", "each in 1..16", "[0, 40]"]),
        # a section that is not a mapping
        ("policy: 3\n", ["policy", "valid dictionary", "got 3"]),
    ],
)
def test_invalid_values_name_their_field(tmp_path: Path, yaml_text: str, expected_fragments: list[str]) -> None:
    path = _write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in expected_fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_every_error_is_listed_not_just_the_first(tmp_path: Path) -> None:
    path = _write(tmp_path, "policy:\n  alpha_flag: 2\n  alfa: 1\nmodel:\n  batch_size: 0\ncamera_id: 'a b'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith("4 config error(s)")
    for path_text in ("policy.alpha_flag", "policy.alfa", "model.batch_size", "camera_id"):
        assert f"  - {path_text}:" in message


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("policy: [1,\n", "is not valid YAML"),  # syntax error: says so, with line/column
        ("- a\n- b\n", "top level must be a mapping of sections, but got list"),
        ("just a string\n", "top level must be a mapping of sections, but got str"),
    ],
)
def test_file_level_errors(tmp_path: Path, yaml_text: str, expected: str) -> None:
    path = _write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "policy:\n  alpha_flag: 0.1\n   bad_indent: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line 3" in str(info.value)


@pytest.mark.parametrize(
    ("yaml_text", "where", "line"),
    [
        ("policy:\n  alpha_flag: 0.1\n   bad_indent: 2\n", "line 3, column 14", "   bad_indent: 2"),
        ("source:\n  uri: [a,\n", "line 3, column 1", None),  # unclosed flow sequence at the end
        ("policy:\n\talpha_flag: 0.1\n", "line 2, column 1", "\talpha_flag: 0.1"),  # a tab
    ],
    ids=["indent", "unclosed", "tab"],
)
def test_yaml_syntax_error_names_the_file_not_a_string(
    tmp_path: Path, yaml_text: str, where: str, line: str | None
) -> None:
    path = _write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path} is not valid YAML at {where}: "), message
    assert "<unicode string>" not in message
    if line is not None:
        assert line in message  # the offending line is quoted


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("EDGE_GUARD_FOO", "EDGE_GUARD_FOO: unknown environment variable"),
        ("EDGE_GUARD_MODLE__PATH", "did you mean EDGE_GUARD_MODEL__PATH?"),  # misspelt section
        ("EDGE_GUARD_CAMERAID", "did you mean EDGE_GUARD_CAMERA_ID?"),  # misspelt top-level field
        ("edge_guard_polcy__alpha_flag", "did you mean EDGE_GUARD_POLICY__ALPHA_FLAG?"),  # any case
        ("EDGE_GUARD_CAMERA_ID__X", "camera_id is a value, not a section"),
    ],
)
def test_unknown_edge_guard_variables_are_errors(monkeypatch: pytest.MonkeyPatch, variable: str, expected: str) -> None:
    monkeypatch.setenv(variable, "1")
    with pytest.raises(ConfigError) as info:
        load_config(None)
    message = str(info.value)
    assert message.startswith("1 config error(s)") and f"  - {variable}: " in message
    assert expected in message


def test_env_errors_are_listed_with_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_GUARD_MODLE__PATH", "/m.onnx")
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "policy:\n  alpha_flag: 2\n"))
    message = str(info.value)
    assert message.startswith("2 config error(s)")
    assert "  - EDGE_GUARD_MODLE__PATH: " in message and "  - policy.alpha_flag: " in message


@pytest.mark.parametrize("variable", sorted(OTHER_ENV_VARS))
def test_variables_used_for_other_purposes_are_not_config_errors(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "/somewhere")
    monkeypatch.setenv("EDGE_GUARD_CAMERA_ID", "cam7")  # a real top-level override still applies
    monkeypatch.setenv("EDGE_GUARD_MQTT__HOST", "broker")  # and a section override of an optional section
    cfg = load_config(None)
    assert cfg.camera_id == "cam7" and cfg.mqtt is not None and cfg.mqtt.host == "broker"


def test_other_env_vars_list_covers_the_code(repo_root: Path) -> None:
    # Every EDGE_GUARD_* name the code, units and scripts mention is either a config override
    # (EDGE_GUARD_<SECTION>__<FIELD> or a top-level field) or on the allow-list: add new ones there.
    files = [repo_root / "tests" / "conftest.py"]
    for folder in ("agent", "benchmarks", "scripts", "systemd"):
        files += [f for f in (repo_root / folder).rglob("*") if f.is_file() and f.suffix in {".py", ".service", ""}]
    names: set[str] = set()
    for f in files:
        names |= set(re.findall(r"\bEDGE_GUARD_[A-Z0-9_]*[A-Z0-9]\b", f.read_text(errors="replace")))
    fields = GuardConfig.model_fields
    plain = {n for n in names if "__" not in n and n.removeprefix("EDGE_GUARD_").lower() not in fields}
    assert "EDGE_GUARD_TEST_DATA" in names  # the scan sees the code
    assert plain - OTHER_ENV_VARS == set()


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert f"cannot read config file {missing}" in str(info.value)
    assert "No such file" in str(info.value)


def test_env_override_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "policy:\n  alpha_flag: 0.02\n  alpha_block: 0.001\n")
    assert load_config(path).policy.alpha_flag == 0.02
    monkeypatch.setenv("EDGE_GUARD_POLICY__ALPHA_FLAG", "0.05")
    cfg = load_config(path)
    assert cfg.policy.alpha_flag == 0.05
    assert cfg.policy.alpha_block == 0.001  # the rest of the section still comes from the file


def test_bad_env_override_names_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_GUARD_POLICY__ALPHA_FLAG", "abc")
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "{}\n"))
    assert "policy.alpha_flag" in str(info.value)
    assert "'abc'" in str(info.value)


def test_unknown_env_field_in_a_section_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_GUARD_POLICY__ALFA", "1")
    with pytest.raises(ConfigError, match=r"policy\.alfa \(from EDGE_GUARD_POLICY__ALFA='1'\): unknown key"):
        load_config(None)


def test_overrides_merge_into_sections(tmp_path: Path) -> None:
    path = _write(tmp_path, "source:\n  uri: synthetic://default\n  loop: true\n")
    cfg = load_config(path, {"source": {"max_frames": 400}})
    assert cfg.source.loop is True
    assert cfg.source.max_frames == 400


def test_a_source_that_stops_before_calibration_ends_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "source:\n  uri: synthetic://default\ncalibration:\n  frames: 100\n  skip: 5\n")
    why = load_config(path, {"source": {"max_frames": 60}}).start_up_calibration_error()
    assert why is not None and why.startswith("source.max_frames 60 stops the source before start-up calibration "
                                              "ends (calibration.skip 5 + calibration.frames 100 = 105)")
    assert load_config(path, {"source": {"max_frames": 105}}).start_up_calibration_error() is None
    with_profile = load_config(path, {"source": {"max_frames": 60}, "policy": {"profile": str(path)}})
    assert with_profile.start_up_calibration_error() is None


def test_config_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    a = load_config(_write(tmp_path, "node: box1\n"))
    b = load_config(_write(tmp_path, "node: box1\n"))
    c = load_config(_write(tmp_path, "node: box1\npolicy:\n  alpha_flag: 0.02\n"))
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)
    assert len(config_hash(a)) == 12


def test_example_config_validates() -> None:
    example = REPO_ROOT / "configs" / "example.yaml"
    cfg = load_config(example)
    assert cfg.camera_id == "front-door"
    # the example documents every top-level section of the config
    text = example.read_text(encoding="utf-8")
    for section in GuardConfig.model_fields:
        assert f"\n{section}:" in text or f"\n# {section}:" in text, f"section {section!r} missing"


def test_committed_schema_is_up_to_date() -> None:
    committed = json.loads((REPO_ROOT / "docs" / "config.schema.json").read_text(encoding="utf-8"))
    assert committed == json_schema(), "docs/config.schema.json is stale: run scripts/export_schema.py"


def test_every_field_has_a_description() -> None:
    schema = json_schema()
    missing: list[str] = []

    def visit(props: dict[str, dict[str, object]], where: str) -> None:
        for name, spec in props.items():
            if "description" not in spec:
                missing.append(f"{where}{name}")

    visit(schema["properties"], "")
    for def_name, definition in schema.get("$defs", {}).items():
        visit(definition.get("properties", {}), f"{def_name}.")
    assert not missing, f"fields without description: {missing}"


def _commented_block(text: str, first_line: str, prefix: str) -> str:
    """The commented-out YAML block starting at ``first_line``, uncommented."""
    lines = text.splitlines()
    start = lines.index(first_line)
    block: list[str] = []
    for line in lines[start:]:
        if not line.startswith(prefix):
            break
        block.append(line[len(prefix):].split("   #")[0].rstrip())
    return "\n".join(block) + "\n"


def test_example_commented_blocks_validate() -> None:
    """The commented-out alternatives in the example (MQTT, own-model preprocessing) are valid too."""
    text = (REPO_ROOT / "configs" / "example.yaml").read_text(encoding="utf-8")
    mqtt = yaml.safe_load(_commented_block(text, "# mqtt:", "# "))
    model = yaml.safe_load(_commented_block(text, "  # preprocess:", "  # "))
    assert set(mqtt) == {"mqtt"} and set(model) == {"preprocess", "output"}
    cfg = GuardConfig(node="box", mqtt=mqtt["mqtt"], model={"path": "/opt/squeezenet.onnx", **model})
    assert cfg.mqtt is not None and cfg.mqtt.port == 8883
    assert cfg.model.preprocess.mean == (104.0, 117.0, 123.0)


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (REPO_ROOT / "configs").glob("*.yaml") if p.name != "gates.example.yaml")
)
def test_every_shipped_agent_config_validates(name: str) -> None:
    cfg = load_config(REPO_ROOT / "configs" / name)
    assert cfg.camera_id
    if name == "yolox.yaml":  # the detector example declares its decoding
        assert cfg.model.kind == "detector" and cfg.model.output.decoder == "yolox"
        assert cfg.model.preprocess.resize == "letterbox" and cfg.model.preprocess.pad_value == 114


@pytest.mark.parametrize(
    ("variable", "bad", "good", "applied"),
    [
        ("EDGE_GUARD_STATS__GRID", "4x4", "[2, 2]", lambda c: c.stats.grid == (2, 2)),
        ("EDGE_GUARD_MODEL__PROVIDERS", "cpu", '["cpu"]', lambda c: c.model.providers == ["cpu"]),
        ("EDGE_GUARD_MODEL__PREPROCESS__MEAN", "104,117,123", "[104, 117, 123]",
         lambda c: c.model.preprocess.mean == (104.0, 117.0, 123.0)),
        ("EDGE_GUARD_POLICY__DISABLED_REASONS", "noise", '["noise"]', lambda c: c.policy.disabled_reasons == ["noise"]),
    ],
)
def test_a_list_override_that_is_not_json_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, bad: str, good: str, applied: Callable[[GuardConfig], bool]
) -> None:
    monkeypatch.setenv(variable, bad)
    with pytest.raises(ConfigError) as info:
        load_config(None)
    assert f"{variable}={bad!r}: not JSON" in str(info.value)
    assert "EDGE_GUARD_STATS__GRID='[4, 4]'" in str(info.value)  # the form it takes
    monkeypatch.setenv(variable, good)
    assert applied(load_config(None))


def test_a_config_file_that_is_not_utf8_or_is_empty_is_refused(tmp_path: Path) -> None:
    binary = tmp_path / "cam.yaml"
    binary.write_bytes(b"\xff\xfec\x00a\x00m\x00")  # UTF-16, as some editors save it
    with pytest.raises(ConfigError, match=r"cam\.yaml is not UTF-8 text \(byte 0: invalid start byte\)"):
        load_config(binary)
    for text in ("", "# camera_id: cam1\n# source: ...\n"):
        empty = tmp_path / "empty.yaml"
        empty.write_text(text)
        with pytest.raises(ConfigError, match=r"empty\.yaml has no settings \(empty or comments only\)"):
            load_config(empty)


def test_a_key_given_twice_is_an_error_with_both_lines(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys; a pasted second section must not win silently."""
    path = _write(tmp_path, "camera_id: a\npolicy:\n  alpha_flag: 0.01\n  alpha_flag: 0.02\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line 4, column 3: key 'alpha_flag' given twice "
                                          r"\(first on line 3\)"):
        load_config(path)
    path = _write(tmp_path, "camera_id: a\nsource: {uri: synthetic://clean}\ncamera_id: b\n")
    with pytest.raises(ConfigError, match=r"key 'camera_id' given twice \(first on line 1\)"):
        load_config(path)
    # the same key in two different mappings is fine
    cfg = load_config(_write(tmp_path, "mqtt: {host: h, spool: {max_bytes: 1000000}, frames: {max_bytes: 65536}}\n"))
    assert cfg.mqtt is not None and (cfg.mqtt.spool.max_bytes, cfg.mqtt.frames.max_bytes) == (1000000, 65536)


def test_yaml_merge_keys_still_work_and_same_line_duplicates_are_caught(tmp_path: Path) -> None:
    path = _write(tmp_path, "x-defaults: &d {max_frames: 400, loop: true}\nsource: {<<: *d, uri: synthetic://clean}\n")
    with pytest.raises(ConfigError, match=r"x-defaults: unknown key"):  # the anchor's own key is not a field ...
        load_config(path)
    from agent.configbase import load_yaml  # noqa: PLC0415  ... but the merge itself reads fine

    assert load_yaml(path.read_text())["source"] == {"max_frames": 400, "loop": True, "uri": "synthetic://clean"}
    with pytest.raises(ConfigError, match=r"key 'uri' given twice \(first on line 1\)"):
        load_config(_write(tmp_path, "source: {uri: synthetic://clean, uri: synthetic://default}\n"))


# -- where a bad value came from: the file, an option, an environment variable ---------------------------
def _flags(*sets: tuple[str, object, str | None]) -> Overrides:
    overrides = Overrides()
    for path, value, flag in sets:
        overrides.set(path, value, flag)
    return overrides


@pytest.mark.parametrize(
    ("path", "value", "flag", "line"),
    [
        ("calibration.frames", 5, "--frames",
         "calibration.frames (from --frames 5): Input should be greater than or equal to 20"),
        ("source.max_frames", 0, "--max-frames",
         "source.max_frames (from --max-frames 0): Input should be greater than or equal to 1"),
        ("source.uri", "", "--source", "source.uri (from --source ''): String should have at least 1 character"),
    ],
)
def test_a_bad_option_value_is_a_usage_error_naming_the_option(
    tmp_path: Path, path: str, value: object, flag: str, line: str
) -> None:
    config = _write(tmp_path, "camera_id: cam1\nsource: {uri: synthetic://default}\ncalibration: {frames: 40}\n")
    with pytest.raises(UsageError) as info:
        load_config(config, _flags((path, value, flag)))
    assert str(info.value) == f"1 config error(s) on the command line:\n  - {line}"  # not "in <file>"


def test_an_option_wins_over_the_environment_which_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write(tmp_path, "camera_id: cam1\nsource: {uri: synthetic://default, max_frames: 100, fps: 12}\n")
    monkeypatch.setenv("EDGE_GUARD_SOURCE__MAX_FRAMES", "200")
    monkeypatch.setenv("EDGE_GUARD_SOURCE__FPS", "15")
    cfg = load_config(config, _flags(("source.max_frames", 300, "--max-frames")))
    assert (cfg.source.max_frames, cfg.source.fps, cfg.source.uri) == (300, 15.0, "synthetic://default")
    assert load_config(config).source.max_frames == 200  # without the option: the variable
    # the option's bad value is the option's error, though the variable sets the field as well
    with pytest.raises(UsageError, match=r"source.max_frames \(from --max-frames 0\): Input should be greater"):
        load_config(config, _flags(("source.max_frames", 0, "--max-frames")))


def test_option_and_file_errors_are_listed_together(tmp_path: Path) -> None:
    config = _write(tmp_path, "policy: {alpha_flag: 2}\n")
    with pytest.raises(UsageError) as info:  # an option's bad value: usage, as argparse's own errors
        load_config(config, _flags(("calibration.frames", 5, "--frames")))
    message = str(info.value)
    assert message.startswith(f"2 config error(s) in {config} and on the command line:\n")
    assert "  - policy.alpha_flag: Input should be less than 1 (got 2)" in message
    assert "  - calibration.frames (from --frames 5): " in message
    # an option that is fine does not make the file's error a usage error, nor take its blame
    with pytest.raises(ConfigError) as file_only:
        load_config(config, _flags(("calibration.frames", 40, "--frames")))
    assert type(file_only.value) is ConfigError
    assert str(file_only.value).startswith(f"1 config error(s) in {config}:\n  - policy.alpha_flag: ")
    # a value the command sets itself (no option) is reported as before
    with pytest.raises(ConfigError) as unnamed:
        load_config(None, _flags(("calibration.frames", 5, None)))
    assert type(unnamed.value) is ConfigError and "  - calibration.frames: " in str(unnamed.value)


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("EDGE_GUARD_POLICY__ALPHA_FLAG", "abc",
         "policy.alpha_flag (from EDGE_GUARD_POLICY__ALPHA_FLAG='abc'): Input should be a valid number"),
        ("EDGE_GUARD_POLICY__ALPHA_FLAGG", "0.1",
         "policy.alpha_flagg (from EDGE_GUARD_POLICY__ALPHA_FLAGG='0.1'): unknown key"),
        ("EDGE_GUARD_CAMERA_ID", "a b", "camera_id (from EDGE_GUARD_CAMERA_ID='a b'): String should match pattern"),
        ("edge_guard_pipeline__queue_size", "0",  # any case, as pydantic-settings reads them
         "pipeline.queue_size (from edge_guard_pipeline__queue_size='0'): Input should be greater than or equal to 1"),
        ("EDGE_GUARD_POLICY", '{"alpha_flag": 5}',  # a whole section as JSON: the field's value is shown
         "policy.alpha_flag (from EDGE_GUARD_POLICY='{\"alpha_flag\": 5}'): Input should be less than 1 (got 5)"),
    ],
)
def test_a_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, line: str
) -> None:
    config = _write(tmp_path, "camera_id: cam1\npolicy: {alpha_flag: 0.02}\n")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert type(info.value) is ConfigError  # a config error (exit 78), not a usage error
    message = str(info.value)
    assert message.startswith("1 config error(s) in the environment:\n  - "), message  # the file is not blamed
    assert line in message


def test_a_check_across_fields_names_the_variables_it_saw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _write(tmp_path, "policy: {alpha_flag: 0.02}\nsource: {reconnect: {initial_s: 2}}\n")
    monkeypatch.setenv("EDGE_GUARD_POLICY__ALPHA_BLOCK", "0.05")
    monkeypatch.setenv("EDGE_GUARD_SOURCE__RECONNECT__MAX_S", "1")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    message = str(info.value)
    assert message.startswith(f"2 config error(s) in {config} and in the environment:\n")
    assert ("  - policy (with EDGE_GUARD_POLICY__ALPHA_BLOCK='0.05'): alpha_block (0.05) must be <= alpha_flag "
            "(0.02)") in message
    assert "  - source.reconnect (with EDGE_GUARD_SOURCE__RECONNECT__MAX_S='1'): max_s (1.0) must be >= " in message


def test_mqtt_topic_rules_are_config_errors_of_their_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the MQTT sink would refuse at run's start is refused by every loader (check-config too)."""
    mqtt = "mqtt: {host: 127.0.0.1, port: 1883}\n"
    for reserved in ("status", "cmd"):
        with pytest.raises(ConfigError) as info:
            load_config(_write(tmp_path, f"camera_id: {reserved}\n{mqtt}"))
        assert (f"  - camera_id: camera id {reserved!r} is reserved for node-level MQTT topics (cmd, status): "
                f"rename the camera (got {reserved!r})") in str(info.value)
    monkeypatch.setenv("EDGE_GUARD_CAMERA_ID", "status")
    with pytest.raises(ConfigError, match=r"camera_id \(from EDGE_GUARD_CAMERA_ID='status'\): camera id 'status' is "
                                          r"reserved"):
        load_config(_write(tmp_path, f"camera_id: cam1\n{mqtt}"))
    assert load_config(_write(tmp_path, "camera_id: cam1\n")).camera_id == "status"  # files only: no topics
    monkeypatch.delenv("EDGE_GUARD_CAMERA_ID")
    with pytest.raises(ConfigError, match=r"  - node: node names the MQTT topic level of this agent: it must be "
                       r"letters, digits, '_', '\.', '-'; rename it or set mqtt.node \(got 'my box'\)"):
        load_config(_write(tmp_path, f"node: my box\n{mqtt}"))
    named = load_config(_write(tmp_path, "node: my box\nmqtt: {host: 127.0.0.1, node: box1}\n"))
    assert named.mqtt is not None and named.mqtt.node == "box1"


@pytest.mark.parametrize(
    ("yaml_text", "line"),
    [
        ("policy: {alpha_block: true}\n", "policy.alpha_block: Input should be a number, not true/false (got True)"),
        ("source: {max_frames: false}\n", "source.max_frames: Input should be a number, not true/false (got False)"),
        ("stats: {grid: [true, 4]}\n", "stats.grid: Input should be a number, not true/false (got [True, 4])"),
        ("mqtt: {host: h, port: true}\n", "mqtt.port: Input should be a number, not true/false (got True)"),
        ("calibration: {tolerances: {dark: true}}\n", "calibration.tolerances: Input should be a number"),
    ],
)
def test_true_or_false_is_not_a_number(tmp_path: Path, yaml_text: str, line: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, yaml_text))
    assert f"  - {line}" in str(info.value)


def test_booleans_and_numbers_still_read_where_they_belong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(_write(tmp_path, "source: {loop: true, max_frames: 50, fps: 12}\npolicy: {alpha_flag: 0.05}\n"))
    assert cfg.source.loop is True and cfg.source.max_frames == 50 and cfg.source.fps == 12.0
    monkeypatch.setenv("EDGE_GUARD_SOURCE__MAX_FRAMES", "70")  # environment values are text
    assert load_config(_write(tmp_path, "{}\n")).source.max_frames == 70


@pytest.mark.parametrize(
    ("yaml_text", "line"),
    [
        ("source: {uri: 'synthetic://nope'}\n",
         "source.uri: synthetic://nope: scenario must be one of clean, default, custom, but got 'nope'"),
        ("source: {uri: 'synthetic://default?colour=red'}\n", "unknown query key 'colour'"),
        ("source: {uri: 'ftp://cam/stream'}\n", "source.uri: source uri 'ftp://cam/stream' has unknown scheme 'ftp'"),
        ("calibration: {tolerances: {blurr: 0.1}}\n",
         "calibration.tolerances: tolerances names unknown tests ['blurr']"),
    ],
)
def test_rules_run_applied_at_start_are_config_errors(tmp_path: Path, yaml_text: str, line: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, yaml_text))
    assert line in str(info.value)


@pytest.mark.parametrize("uri", ["rtsp://10.0.0.7/stream1", "HTTPS://cam/mjpg", "file:///videos/a.mp4", "0",
                                 "/dev/video0", "videos/a.mp4", "synthetic://clean?size=64x48", " synthetic://default"])
def test_uris_the_sources_accept_still_validate(uri: str) -> None:
    assert GuardConfig(source={"uri": uri}).source.uri == uri  # files are checked when opened, not here
