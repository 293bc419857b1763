"""The daemon's building blocks against plain references: queue, health aggregation, reload plan."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from agent import pipeline
from agent.config import GuardConfig
from agent.frame import Frame
from agent.framequeue import DropOldestQueue
from agent.health import HealthSummary
from agent.healthagg import HealthAggregator, Reservoir
from agent.model.types import ModelOutput
from agent.reload import changed_paths, plan_reload
from agent.scoring.config import CalibrationConfig, PolicyConfig
from agent.stats.cpu import CpuStats
from agent.tokenbucket import TokenBucket

# -- DropOldestQueue --------------------------------------------------------------------------------


def test_queue_drops_oldest_and_counts() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(3)
    dropped = [q.put(i) for i in range(10)]
    assert dropped == [0, 0, 0] + [1] * 7
    assert q.dropped == 7
    assert q.get_many(10, timeout=0) == [7, 8, 9]  # the freshest survive, in order


def test_queue_close_lets_the_consumer_drain() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(4)
    q.put(1)
    q.put(2)
    q.close()
    assert not q.finished
    assert q.get_many(1, timeout=0) == [1]
    assert q.get_many(5, timeout=5) == [2]
    t0 = time.monotonic()
    assert q.get_many(5, timeout=5) == []  # closed and empty: returns at once
    assert time.monotonic() - t0 < 1 and q.finished
    with pytest.raises(RuntimeError):
        q.put(3)


def test_queue_get_times_out() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(1)
    t0 = time.monotonic()
    assert q.get_many(1, timeout=0.1) == []
    assert 0.09 <= time.monotonic() - t0 < 1


def test_put_wait_is_lossless_back_pressure() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(2)
    got: list[int] = []

    def consume() -> None:
        while not q.finished:
            batch = q.get_many(1, timeout=0.05)
            time.sleep(0.001)
            got.extend(batch)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(200):
        assert q.put_wait(i, timeout=5)
    q.close()
    consumer.join(5)
    assert got == list(range(200)) and q.dropped == 0
    full: DropOldestQueue[int] = DropOldestQueue(1)
    full.put(0)
    assert full.put_wait(1, timeout=0.05) is False


# -- health aggregation -----------------------------------------------------------------------------


def test_reservoir_is_exact_below_capacity_and_bounded_above() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=1000)
    r = Reservoir(capacity=2000)
    for v in values:
        r.add(float(v))
    r.add(float("nan"))  # ignored
    assert r.count == 1000
    assert r.quantiles([0.05, 0.5, 0.95]) == pytest.approx(np.quantile(values, [0.05, 0.5, 0.95]))
    small = Reservoir(capacity=500, seed=1)
    big = rng.uniform(size=100_000)
    for v in big:
        small.add(float(v))
    assert small.count == 100_000 and len(small._values) == 500
    q = small.quantiles([0.5])
    assert q is not None and abs(q[0] - 0.5) < 0.08  # a uniform sample's median
    assert Reservoir().quantiles([0.5]) is None


def test_aggregator_summary_matches_numpy() -> None:
    stats_backend = CpuStats((2, 2))
    rng = np.random.default_rng(1)
    agg = HealthAggregator("cam1", capacity=4096)
    brightness: list[float] = []
    conf: list[float] = []
    for i in range(50):
        image = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
        st = stats_backend.compute(image)
        out = ModelOutput(top1=i % 3, confidence=float(i) / 50, label=None if i % 3 else "person")
        agg.frame_in(read_ms=1.0)
        if i < 10:
            agg.record(st, out, {"stats": 2.0})  # calibration: no decision
        else:
            decision = "FLAG" if i % 10 == 0 else "PASS"
            agg.record(st, out, {"stats": 2.0, "model": float(i), "total": 5.0}, decision,
                       ["blur", "noise"] if decision == "FLAG" else [])
        brightness.append(st.brightness)
        conf.append(float(i) / 50)
    agg.dropped(3)
    agg.corrupt(2)
    summary = agg.summarize(source_state="up", backend={"stats": "cpu"}, model_sha256="abc", profile_id="p",
                            config_hash="c", publisher={"backlog": 0.0}, phase="guarding", uptime_s=12.0)
    assert summary == HealthSummary.model_validate(summary.model_dump(mode="json"))
    assert (summary.frames_in, summary.frames_processed, summary.frames_dropped, summary.frames_corrupt) == (
        50, 50, 3, 2)
    assert summary.frames_calibrated == 10
    assert summary.decisions == {"PASS": 36, "FLAG": 4}
    assert summary.reasons == {"blur": 4, "noise": 4}
    q = np.quantile(brightness, [0.05, 0.5, 0.95])
    b = summary.stats["brightness"]
    assert [b.p5, b.p50, b.p95] == pytest.approx(list(q))
    assert summary.confidence.p50 == pytest.approx(np.quantile(conf, 0.5))
    assert summary.class_counts == {"person": 17, "1": 17, "2": 16}
    assert summary.latency["model"].count == 40
    assert summary.latency["model"].p50_ms == pytest.approx(np.quantile(np.arange(10, 50), 0.5))
    assert summary.latency["read"].count == 50 and "publish" not in summary.latency
    assert summary.fps > 0 and summary.seq == 0
    # the next window starts empty; totals keep counting
    nxt = agg.summarize()
    assert nxt.seq == 1 and nxt.frames_in == 0 and nxt.decisions == {}
    assert agg.totals().frames_in == 50 and agg.totals().decisions["FLAG"] == 4


# -- SIGHUP reload plan -----------------------------------------------------------------------------


def _cfg(**kw: object) -> GuardConfig:
    return GuardConfig(node="n", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("new", "live", "restart"),
    [
        # nothing changed
        ({}, {}, []),
        # alphas travel as a pair even when one changed
        ({"policy": {"alpha_flag": 0.05}}, {"policy.alpha_flag": 0.05, "policy.alpha_block": 0.001}, []),
        ({"health": {"interval_s": 5}}, {"health.interval_s": 5.0}, []),
        ({"logging": {"level": "DEBUG"}}, {"logging.level": "DEBUG"}, []),
        # everything else needs a restart, named by its path
        ({"source": {"uri": "rtsp://cam/1"}, "stats": {"grid": [2, 2]}}, {}, ["source.uri", "stats.grid"]),
        ({"policy": {"disabled_reasons": ["noise"]}}, {}, ["policy.disabled_reasons"]),
        ({"mqtt": {"host": "broker"}}, {}, ["mqtt"]),
    ],
)
def test_plan_reload(new: dict[str, object], live: dict[str, object], restart: list[str]) -> None:
    plan = plan_reload(_cfg(), _cfg(**new))
    assert plan.live == live
    assert plan.restart == restart
    assert plan.empty == (not live and not restart)


def test_changed_paths() -> None:
    assert changed_paths({"a": {"b": 1, "c": [1]}}, {"a": {"b": 2, "c": [1]}, "d": 0}) == ["a.b", "d"]
    assert changed_paths(1, 1) == [] and changed_paths(1, 2) == ["<root>"]


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_s=2.0, burst=3.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back
    assert bucket.take() and not bucket.take()
    now[0] = 100.0  # capped at the burst
    assert sum(bucket.take() for _ in range(10)) == 3
    with pytest.raises(ValueError, match="rate_per_s must be >= 0"):
        TokenBucket(-1.0, 1.0)


def test_calibration_size_change_warnings_are_throttled(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream changing size on every frame: the warning comes at most once per SIZE_CHANGE_LOG_S and
    counts the size changes it did not report; each size keeps its own calibration frames."""
    clock = iter([1.0, 2.0, 3.0, 1.0 + pipeline.SIZE_CHANGE_LOG_S + 0.5])
    monkeypatch.setattr(pipeline, "time", SimpleNamespace(monotonic=lambda: next(clock),
                                                          perf_counter=time.perf_counter))
    scorer = pipeline.Scorer(None, PolicyConfig(), CalibrationConfig(frames=20), (4, 4),
                             lambda f: pipeline.ProfileIds(None, (0, 0), (4, 4), "x"))
    backend = CpuStats((4, 4))
    with caplog.at_level("WARNING", logger="agent.pipeline"):
        for seq in range(5):
            image = np.full((48, 64) if seq % 2 else (64, 96), 100, np.uint8)
            image = np.dstack([image] * 3)
            frame = Frame(image, "cam", seq, float(seq), float(seq), live=True)
            assert scorer.update(pipeline.Measured(frame, backend.compute(image), None, {})) is None
    warned = [r.getMessage() for r in caplog.records]
    assert scorer.calibration_size_changes == 4 and len(warned) == 2
    assert "frame 1 is 64x48, the frame before 96x64" in warned[0] and "(so far 96x64: 1)" in warned[0]
    assert "more size changes" not in warned[0]
    assert "frame 4 is 96x64" in warned[1] and "(so far 96x64: 2, 64x48: 2)" in warned[1]
    assert "(2 more size changes since the last message" in warned[1]
    assert scorer.calibrated == 3  # 96x64 kept frames 0, 2 and 4


def test_repeated_problems_are_logged_sparsely() -> None:
    """One rule for corrupt frames, unusable model outputs and size changes: the first few, then every 100th."""
    import doctest  # noqa: PLC0415

    from agent import logsetup  # noqa: PLC0415

    assert doctest.testmod(logsetup).failed == 0
    assert [n for n in range(1, 201) if logsetup.sparse(n, first=4)] == [1, 2, 3, 4, 100, 200]
