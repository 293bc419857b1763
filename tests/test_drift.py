"""Drift: PSI by hand, CUSUM (golden index), block-bootstrap thresholds on correlated streams, the monitor."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
from helpers import synthetic_frames

from agent.frame import Frame
from agent.scoring.calibrate import Calibrator
from agent.scoring.config import CalibrationConfig, DriftConfig, PolicyConfig
from agent.scoring.drift import (
    SURPRISE_CAP,
    UNIFORM_SURPRISE,
    Cusum,
    DriftMonitor,
    DriftSnapshot,
    bootstrap_threshold,
    psi,
)
from agent.scoring.observation import observe
from agent.scoring.policy import Guard
from agent.stats.cpu import CpuStats

Image = npt.NDArray[np.uint8]


def test_psi_by_hand() -> None:
    assert psi([50, 50], [0.5, 0.5]) == pytest.approx(0.0)
    # observed (100.5, 0.5) / 101 against (0.5, 0.5)
    o = np.array([100.5, 0.5]) / 101.0
    assert psi([100, 0], [0.5, 0.5]) == pytest.approx(float(((o - 0.5) * np.log(o / 0.5)).sum()))
    with pytest.raises(ValueError, match="one length"):
        psi([1, 2, 3], [0.5, 0.5])


def test_cusum_golden_index() -> None:
    rng = np.random.default_rng(7)
    c = Cusum(threshold=8.0, mu0=1.0, allowance=0.5)
    xs = np.concatenate([rng.exponential(1.0, 300), rng.exponential(3.0, 100), rng.exponential(1.0, 200)])
    changes = [(i, c.drift_detected) for i, x in enumerate(xs) if c.update(float(x)).changed]
    assert changes == [(309, True), (413, False)]  # raised 9 frames into the shift, cleared 13 frames after it
    assert c.update(math.nan).statistic == c.statistic  # NaN: no evidence


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"threshold": 0.0}, "threshold"), ({"threshold": 1.0, "allowance": 0.0}, "allowance")],
)
def test_cusum_rejects_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Cusum(**kwargs)


def ar1_surprise(n: int, rho: float, seed: int) -> npt.NDArray[np.float64]:
    """-ln U with U = Phi(z), z an AR(1) Gaussian: marginally Exp(1), strongly correlated in time."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n)
    z = np.empty(n)
    z[0] = e[0]
    for t in range(1, n):
        z[t] = rho * z[t - 1] + math.sqrt(1 - rho * rho) * e[t]
    u = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in z])
    out: npt.NDArray[np.float64] = -np.log(np.clip(u, 1e-12, 1.0))
    return out


def alarms(x: npt.NDArray[np.float64], h: float, mu0: float, k: float) -> int:
    c = Cusum(h, mu0, k)
    return sum(c.update(float(v)).changed and c.drift_detected for v in x)


def test_block_bootstrap_holds_the_false_alarm_rate_on_correlated_streams() -> None:
    """An i.i.d. threshold (block 1) fires often on correlated clean data; the block bootstrap does not."""
    cal = ar1_surprise(600, 0.97, seed=1)
    mu0, k, target = float(np.minimum(cal, SURPRISE_CAP).mean()), 0.5, 4000.0
    h_block = bootstrap_threshold(cal, block=50, mu0=mu0, allowance=k, false_alarm_frames=target)
    h_iid = bootstrap_threshold(cal, block=1, mu0=mu0, allowance=k, false_alarm_frames=target)
    assert h_block > 2 * h_iid
    fresh = ar1_surprise(40_000, 0.97, seed=2)  # 10 x the target run length
    n_block, n_iid = alarms(fresh, h_block, mu0, k), alarms(fresh, h_iid, mu0, k)
    assert n_block <= 25  # about 10 expected at the target rate
    assert n_iid >= 4 * max(n_block, 5)


@pytest.fixture(scope="module")
def frames() -> list[Image]:
    return synthetic_frames("synthetic://clean?size=160x90&seed=8&frames=700")


@pytest.fixture(scope="module")
def guard(frames: list[Image]) -> Guard:
    backend = CpuStats((4, 4))
    cal = Calibrator(CalibrationConfig(frames=300), (4, 4))
    for image in frames[:300]:
        cal.update(backend.compute(image), image=image)
    return Guard(cal.build(), PolicyConfig(drift=DriftConfig(window=100)))


def stream(guard: Guard, images: list[Image], start: int) -> list[int]:
    guard.reset()
    backend = CpuStats((4, 4))
    starts = []
    for i, image in enumerate(images, start=start):
        guard.update(Frame(image, "cam", i, float(i), float(i)), backend.compute(image), None)
        starts += [e.seq for e in guard.drift_events() if e.lifecycle == "start"]
    return starts


@dataclass(frozen=True)
class CleanRun:
    """The held-out clean frames streamed through the guard: drift starts seen, the final snapshot."""

    starts: list[int]
    snapshot: DriftSnapshot


@pytest.fixture(scope="module")
def clean_run(guard: Guard, frames: list[Image]) -> CleanRun:
    starts = stream(guard, frames[300:], 300)
    return CleanRun(starts, guard.drift_snapshot())


def test_no_drift_alarm_on_clean_frames(clean_run: CleanRun) -> None:
    assert clean_run.starts == []
    snap = clean_run.snapshot
    assert snap.alarms == [] and 0.0 <= snap.scores["cusum.stats"] < 1.0
    assert {"psi.log_brightness", "psi.sharpness", "psi.motion"} <= set(snap.scores)


def test_gradual_drift_raises_then_clears(guard: Guard, frames: list[Image], clean_run: CleanRun) -> None:
    """The picture darkens by 0.3 % per frame (a lens getting dirty), then recovers."""
    held = frames[300:700]
    gains = np.concatenate([np.linspace(1.0, 0.4, 200), np.ones(200)])
    drifting = [np.clip(im * g, 0, 255).astype(np.uint8) for im, g in zip(held, gains, strict=True)]
    backend = CpuStats((4, 4))
    guard.reset()
    events = []
    for i, image in enumerate(drifting, start=300):
        guard.update(Frame(image, "cam", i, float(i), float(i)), backend.compute(image), None)
        for e in guard.drift_events():
            assert e.camera_id == "cam" and e.to_dict()["type"] == "drift" and e.threshold > 0
            events.append((e.lifecycle, e.seq))
        if i == 499:
            snap = guard.drift_snapshot()
            assert snap.alarms == ["stats"]
            # short windows of correlated video have a sizeable PSI even when clean; darkening is far above
            assert snap.scores["psi.log_brightness"] > 2 * clean_run.snapshot.scores["psi.log_brightness"]
    assert [e[0] for e in events] == ["start", "end"]
    assert 300 < events[0][1] < 500 < events[1][1]


def test_clean_reference_is_at_least_the_uniform_surprise(guard: Guard, frames: list[Image]) -> None:
    """Calibration surprises near 0 (tolerance-widened p-values near 1) do not lower the CUSUM's
    reference below E[-ln p] = 1 of a uniform p-value: 300 frames of one unusual but not
    anomalous episode (p = 0.2 throughout) raise no alarm; p = 0.02 throughout does."""
    monitor = DriftMonitor(guard.profile, DriftConfig(window=100), surprise_stats=[0.05] * 300)
    assert monitor.cusums["stats"].reference == UNIFORM_SURPRISE + DriftConfig().allowance
    obs = observe(CpuStats((4, 4)).compute(frames[400]), None)
    for p, alarmed in ((0.2, []), (0.02, ["stats"])):
        monitor.reset()
        for _ in range(300):
            monitor.update(obs, {"stats": -math.log(p)})
        assert monitor.snapshot().alarms == alarmed, p
