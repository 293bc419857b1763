"""TensorRT runner logic that runs everywhere (no TensorRT, no GPU needed).

- the engine cache key changes with every component and validates itself;
- the cache control flow on real files: a fake engine FILE with a real sidecar, a plain
  deserializer that accepts only bytes it recognises (this is the cache's contract with
  TensorRT's ``deserialize_cuda_engine``, not a fake TensorRT): first start builds, second
  start reuses; corrupt, truncated, stale (other TensorRT version) or undeserializable engines
  are discarded and rebuilt exactly once; a fresh engine that cannot load is an error, not a loop;
- the precision plan for TensorRT 10 vs 11, optimization-profile shapes, fast-FP16 table;
- a missing TensorRT gives BackendUnavailable with the install hint.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import wait_until

from agent.errors import BackendUnavailable, ModelError
from agent.gpu.launcher import DeviceInfo
from agent.model.config import ModelConfig, PreprocessConfig
from agent.model.engine_cache import KEY_SCHEMA, EngineCache, EngineKey, default_engine_dir
from agent.model.factory import load_model
from agent.model.trt_build import (
    MAX_BATCH_FACTOR,
    TRT_MISSING,
    PrecisionPlan,
    _Heartbeat,
    batch_profile,
    engine_key,
    has_fast_fp16,
    plan_precision,
    profile_shapes,
)

SHA = "ab" * 32
ORIN = DeviceInfo(ordinal=0, name="Orin (nvgpu)", major=8, minor=7, sm_count=16, l2_bytes=4 << 20)
H200 = DeviceInfo(ordinal=0, name="NVIDIA H200", major=9, minor=0, sm_count=132, l2_bytes=60 << 20)
MAGIC = b"EG-FAKE-ENGINE\0"


def _key(**changes: object) -> EngineKey:
    base = EngineKey(
        onnx_sha256=SHA,
        gpu_name="Orin (nvgpu)",
        compute_capability="8.7",
        trt_version="10.3.0",
        precision="fp16",
        batch_profile=(1, 4, 16),
        input_wh=(224, 224),
        workspace_mib=1024,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- cache key
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("onnx_sha256", "cd" * 32),
        ("gpu_name", "NVIDIA H200"),
        ("compute_capability", "9.0"),
        ("trt_version", "11.4.0"),
        ("precision", "fp32"),
        ("batch_profile", (1, 8, 32)),
        ("input_wh", (416, 416)),
        ("workspace_mib", 512),
        ("schema", KEY_SCHEMA + 1),
    ],
)
def test_key_changes_with_every_component(field: str, value: object) -> None:
    base = _key()
    other = _key(**{field: value})
    assert other.digest() != base.digest()
    assert other.stem() != base.stem()
    assert _key().digest() == base.digest()  # deterministic


def test_key_stem_and_json_roundtrip() -> None:
    key = _key()
    assert key.stem().startswith(SHA[:12] + "-") and len(key.stem()) == 12 + 1 + 16
    fields = key.as_dict()
    assert fields["batch_profile"] == [1, 4, 16] and fields["input_wh"] == [224, 224]
    assert json.loads(json.dumps(fields)) == fields


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"onnx_sha256": "xyz"}, "64 lowercase hex"),
        ({"onnx_sha256": "AB" * 32}, "64 lowercase hex"),
        ({"batch_profile": (0, 1, 1)}, r"1 <= min <= opt <= max"),
        ({"batch_profile": (1, 8, 4)}, r"1 <= min <= opt <= max"),
        ({"precision": "int8"}, "fp32, fp16 or typed"),
    ],
)
def test_key_validation(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _key(**changes)


def test_engine_key_from_config_and_device() -> None:
    cfg = ModelConfig(batch_size=2, preprocess=PreprocessConfig(size=(416, 416)))
    plan = plan_precision(has_fp16_flag=True, want_fp16=True, fast_fp16=True)
    key = engine_key(cfg, SHA, ORIN, trt_version="10.3.0", plan=plan, workspace_mib=256)
    assert key.gpu_name == "Orin (nvgpu)" and key.compute_capability == "8.7" and key.precision == "fp16"
    assert key.batch_profile == (1, 2, 2 * MAX_BATCH_FACTOR) and key.input_wh == (416, 416)
    other_gpu = engine_key(cfg, SHA, H200, trt_version="10.3.0", plan=plan, workspace_mib=256)
    assert other_gpu.digest() != key.digest()
    bigger = engine_key(cfg.model_copy(update={"batch_size": 4}), SHA, ORIN, trt_version="10.3.0", plan=plan,
                        workspace_mib=256)  # fmt: skip
    assert bigger.digest() != key.digest()


def test_default_engine_dir(tmp_path: Path) -> None:
    assert default_engine_dir(tmp_path) == tmp_path / "engines"
    assert default_engine_dir(None) == Path("~/.cache/edge-guard/trt/engines").expanduser()


# --------------------------------------------------------------------------- precision and profiles
@pytest.mark.parametrize(
    "case",
    [
        # (BuilderFlag.FP16 exists, trt_fp16, GPU has fast FP16) -> (precision, flag set, note contains)
        (True, False, True, "fp32", False, None),  # TensorRT 10, FP32 asked
        (True, True, True, "fp16", True, None),  # TensorRT 10, FP16 on a fast-FP16 GPU
        (True, True, False, "fp32", False, "no fast FP16"),  # e.g. a GTX 10x0 (sm_61)
        (False, True, True, "typed", False, "modelopt.onnx.autocast"),  # TensorRT 11: no FP16 flag
        (False, False, True, "typed", False, None),
    ],
)
def test_plan_precision(case: tuple[bool, bool, bool, str, bool, str | None]) -> None:
    has_flag, want, fast, precision, flag, note = case
    plan = plan_precision(has_flag, want, fast)
    assert (plan.precision, plan.fp16_flag) == (precision, flag)
    if note is None:
        assert plan.note is None
    else:
        assert plan.note is not None and note in plan.note


@pytest.mark.parametrize(
    ("cc", "fast"),
    [((8, 7), True), ((9, 0), True), ((7, 2), True), ((6, 1), False), ((6, 2), True), ((5, 3), True), ((5, 2), False)],
)
def test_fast_fp16_table(cc: tuple[int, int], fast: bool) -> None:
    assert has_fast_fp16(*cc) is fast


def test_profile_shapes() -> None:
    pp = PreprocessConfig(size=(416, 320))
    assert profile_shapes((-1, 3, 320, 416), pp, (1, 4, 16)) == ((1, 3, 320, 416), (4, 3, 320, 416), (16, 3, 320, 416))
    assert profile_shapes((-1, 3, -1, -1), pp, (1, 2, 8))[2] == (8, 3, 320, 416)  # dynamic H/W from size
    nhwc = pp.model_copy(update={"layout": "nhwc"})
    assert profile_shapes((-1, -1, -1, 3), nhwc, (1, 1, 4))[1] == (1, 320, 416, 3)
    assert profile_shapes((1, 3, 224, 224), pp, (1, 4, 16)) == ((1, 3, 224, 224),) * 3  # fixed batch stays
    with pytest.raises(ModelError, match="4-D image batch"):
        profile_shapes((1, 1000), pp, (1, 1, 1))
    assert batch_profile(ModelConfig(batch_size=3)) == (1, 3, 3 * MAX_BATCH_FACTOR)


def test_heartbeat_logs_while_building(caplog: pytest.LogCaptureFixture) -> None:
    def lines() -> list[str]:
        return [r.getMessage() for r in list(caplog.records) if "still building" in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="agent.model.trt_build"), _Heartbeat("model.onnx", interval=0.02):
        wait_until(lambda: bool(lines()), 30, "a 'still building' heartbeat line")
    assert "model.onnx" in lines()[0]


# --------------------------------------------------------------------------- cache control flow
class FakeEngines:
    """build() makes recognisable bytes; deserialize() accepts only those (like TensorRT would)."""

    def __init__(self, payload: bytes = b"engine-v1") -> None:
        self.payload = payload
        self.builds = 0
        self.loads = 0

    def build(self) -> bytes:
        self.builds += 1
        return MAGIC + self.payload

    def deserialize(self, data: bytes) -> str | None:
        self.loads += 1
        return data[len(MAGIC) :].decode() if data.startswith(MAGIC) else None


def test_first_start_builds_second_start_reuses(tmp_path: Path) -> None:
    cache, key, fake = EngineCache(tmp_path / "engines"), _key(), FakeEngines()
    first = cache.load_or_build(key, fake.build, fake.deserialize)
    assert (first.engine, first.from_cache, fake.builds) == ("engine-v1", False, 1)
    engine, sidecar, marker = cache.paths(key)
    assert engine.read_bytes() == MAGIC + b"engine-v1" and not marker.exists()
    meta = json.loads(sidecar.read_text())
    assert meta["key"] == key.as_dict() and meta["engine_bytes"] == len(MAGIC) + 9 and meta["build_s"] >= 0
    second = cache.load_or_build(key, fake.build, fake.deserialize)  # "next start"
    assert (second.engine, second.from_cache, fake.builds) == ("engine-v1", True, 1)
    assert second.path == engine


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _stale_version(sidecar: Path) -> None:
    meta = json.loads(sidecar.read_text())
    meta["key"]["trt_version"] = "8.6.1"
    sidecar.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda e, s: _corrupt(e), "does not match the sidecar"),
        (lambda e, s: e.write_bytes(e.read_bytes()[:5]), "does not match the sidecar"),  # truncated
        (lambda e, s: _stale_version(s), "trt_version: '8.6.1' -> '10.3.0'"),
        (lambda e, s: s.unlink(), "sidecar is missing"),
        (lambda e, s: s.write_text("{not json"), "unreadable"),
        (lambda e, s: s.write_text("[1, 2]"), "records another build"),
    ],
    ids=["corrupt", "truncated", "stale-version", "no-sidecar", "bad-json", "bad-sidecar"],
)
def test_damaged_engine_is_discarded_and_rebuilt_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object, reason: str
) -> None:
    cache, key, fake = EngineCache(tmp_path), _key(), FakeEngines()
    cache.load_or_build(key, fake.build, fake.deserialize)
    engine, sidecar, _ = cache.paths(key)
    damage(engine, sidecar)  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="agent.model.engine_cache"):
        again = cache.load_or_build(key, fake.build, fake.deserialize)
    assert (again.engine, again.from_cache, fake.builds) == ("engine-v1", False, 2)
    assert any(reason in r.getMessage() and "rebuilt" in r.getMessage() for r in caplog.records), caplog.text
    assert cache.lookup(key) == MAGIC + b"engine-v1"  # the rebuilt engine is valid and cached


def test_undeserializable_cached_engine_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, key = EngineCache(tmp_path), _key()
    cache._ensure_dir()
    cache.store(key, b"written by another TensorRT build", build_s=1.0)  # consistent sidecar, foreign content
    fake = FakeEngines()
    with caplog.at_level(logging.WARNING):
        loaded = cache.load_or_build(key, fake.build, fake.deserialize)
    assert (loaded.engine, loaded.from_cache, fake.builds) == ("engine-v1", False, 1)
    assert "deserialization failed (the runtime returned no engine)" in caplog.text


def test_deserializer_exception_counts_as_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, key, fake = EngineCache(tmp_path), _key(), FakeEngines()
    cache.load_or_build(key, fake.build, fake.deserialize)
    calls = {"n": 0}

    def flaky(data: bytes) -> str | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("Serialization assertion failed")
        return fake.deserialize(data)

    with caplog.at_level(logging.WARNING):
        loaded = cache.load_or_build(key, fake.build, flaky)
    assert loaded.engine == "engine-v1" and fake.builds == 2
    assert "RuntimeError: Serialization assertion failed" in caplog.text


def test_fresh_engine_that_cannot_load_is_an_error_not_a_loop(tmp_path: Path) -> None:
    cache, key = EngineCache(tmp_path), _key()
    builds = {"n": 0}

    def bad_build() -> bytes:
        builds["n"] += 1
        return b"garbage"

    with pytest.raises(ModelError, match="cannot load it"):
        cache.load_or_build(key, bad_build, FakeEngines().deserialize)
    assert builds["n"] == 1
    engine, sidecar, marker = cache.paths(key)
    assert not engine.exists() and not sidecar.exists() and not marker.exists()  # nothing left to trip on


def test_crash_during_deserialization_is_not_repeated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, key, fake = EngineCache(tmp_path), _key(), FakeEngines()
    cache.load_or_build(key, fake.build, fake.deserialize)
    _, _, marker = cache.paths(key)
    marker.write_text("4242\n")  # what a process killed inside deserialize_cuda_engine leaves behind
    with caplog.at_level(logging.WARNING):
        loaded = cache.load_or_build(key, fake.build, fake.deserialize)
    assert not loaded.from_cache and fake.builds == 2 and not marker.exists()
    assert "pid 4242" in caplog.text and "died while deserializing" in caplog.text


def test_two_agents_build_once(tmp_path: Path) -> None:
    """Two agents start on one key together: the second waits for the first one's lock, then loads its engine.

    No sleep decides the overlap: the first agent's build does not return until the second agent is
    inside load_or_build and either about to wait for the per-key lock or building itself (a missing
    lock: then both build, and the count below fails).
    """
    fake, key = FakeEngines(), _key()
    first_building, second_arrived = threading.Event(), threading.Event()
    overlapped: list[bool] = []

    class Watched(EngineCache):
        @contextmanager
        def _locked(self, key: EngineKey) -> Iterator[None]:
            if first_building.is_set():  # only the second agent gets here while the first one builds
                second_arrived.set()
            with super()._locked(key):
                yield

    def build() -> bytes:
        if not first_building.is_set():
            first_building.set()
            overlapped.append(second_arrived.wait(60))
        else:
            second_arrived.set()  # a second build while the first one runs: no lock
        return fake.build()

    results: list[bool] = []

    def agent() -> None:
        results.append(Watched(tmp_path).load_or_build(key, build, fake.deserialize).from_cache)

    first = threading.Thread(target=agent)
    first.start()
    assert first_building.wait(60), "the first agent did not start building"
    second = threading.Thread(target=agent)
    second.start()
    for t in (first, second):
        t.join(120)
        assert not t.is_alive(), "an agent hangs"
    assert overlapped == [True], "the second agent never reached load_or_build's lock while the first one built"
    assert fake.builds == 1 and sorted(results) == [False, True]
    assert EngineCache(tmp_path).lookup(key) is not None


def test_keys_do_not_collide_in_one_folder(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    a, b = FakeEngines(b"fp16"), FakeEngines(b"fp32")
    cache.load_or_build(_key(precision="fp16"), a.build, a.deserialize)
    cache.load_or_build(_key(precision="fp32"), b.build, b.deserialize)
    assert cache.load_or_build(_key(precision="fp16"), a.build, a.deserialize).engine == "fp16"
    assert cache.load_or_build(_key(precision="fp32"), b.build, b.deserialize).engine == "fp32"
    assert (a.builds, b.builds) == (1, 1)
    assert len(list(tmp_path.glob("*.engine"))) == 2


def test_unusable_cache_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelError, match="cannot create TensorRT engine cache folder"):
        EngineCache(blocker / "engines").load_or_build(_key(), FakeEngines().build, FakeEngines().deserialize)


# --------------------------------------------------------------------------- missing TensorRT
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_missing_tensorrt_is_backend_unavailable(test_data: Path) -> None:
    from agent.model.tensorrt_runner import TensorRTRunner  # noqa: PLC0415

    cfg = ModelConfig(runtime="tensorrt", path=test_data / "models" / "squeezenet1.0_fp32_upcast.onnx")
    with pytest.raises(BackendUnavailable) as err:
        TensorRTRunner(cfg)
    assert str(err.value) == TRT_MISSING
    assert "JetPack 6" in TRT_MISSING and "runtime: onnxruntime" in TRT_MISSING
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        load_model(cfg)  # through the factory, as the daemon does


def test_precision_plan_is_a_value() -> None:
    assert PrecisionPlan("fp32", False) == plan_precision(True, False, False)
