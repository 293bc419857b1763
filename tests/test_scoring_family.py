"""Family-wise combination of p-values, and the realised clean FLAG rate of the whole guard."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from agent.frame import Frame
from agent.scoring.calibrate import DEFAULT_TESTS, Calibrator
from agent.scoring.config import CalibrationConfig, PolicyConfig
from agent.scoring.family import FamilyCombiner
from agent.scoring.policy import FAMILY_KEY, Guard
from agent.sources.synthetic_scene import SyntheticScene
from agent.stats.cpu import CpuStats
from agent.stats.types import HIST_BINS, TILE_FIELDS, FrameStats
from agent.verdict import Decision

# Leave-one-out p-values of 4 calibration frames under 2 tests; row minima m = 0.2, 0.1, 1, 0.05.
LOO = [[0.5, 0.2], [0.1, 0.9], [1.0, 1.0], [0.3, 0.05]]


@pytest.mark.parametrize(
    ("p_min", "expected"),
    [
        (1.0, 5 / 5),  # (1 + #{m_i <= p}) / (n + 1), n = 4
        (0.5, 4 / 5),
        (0.1, 3 / 5),
        (0.06, 2 / 5),
        (0.05, 2 / 5),
        (0.04, 0.08),  # below every m_i: Bonferroni fallback min(1/(n+1), K * p) = 2 * 0.04
        (0.2, 4 / 5),
        (1e-9, 2e-9),
    ],
)
def test_family_p_value_by_hand(p_min: float, expected: float) -> None:
    fam = FamilyCombiner(LOO)
    assert fam.p_value(p_min) == pytest.approx(expected)
    assert fam.p_values(np.array([p_min]))[0] == pytest.approx(expected)


def test_family_is_monotone_and_level_is_consistent() -> None:
    rng = np.random.default_rng(0)
    fam = FamilyCombiner(rng.uniform(size=(150, 6)))
    grid = np.sort(np.concatenate([np.geomspace(1e-8, 1.0, 400), fam._m]))
    p = fam.p_values(grid)
    assert (np.diff(p) >= 0).all()
    assert ((p > 0) & (p <= 1)).all()
    for alpha in (0.2, 0.05, 0.01, 0.001):
        level = fam.level(alpha)
        assert fam.p_value(level * (1 - 1e-9)) <= alpha
        assert fam.p_value(min(1.0, level * 1.5 + 1e-12)) > alpha or level * 1.5 >= 1.0


def test_family_is_never_looser_than_a_single_test() -> None:
    """Calibration frames unremarkable under every test (m_i ~ 1) must not make p = 0.3 a FLAG."""
    fam = FamilyCombiner(np.full((200, 5), 0.9))
    assert fam.p_value(0.3) >= 0.3 and fam.p_values(np.array([0.3]))[0] >= 0.3
    assert fam.level(0.05) <= 0.05
    assert fam.p_value(1e-6) == pytest.approx(5e-6)  # below every m_i: Bonferroni


def test_family_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        FamilyCombiner(np.ones(3))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        FamilyCombiner([[0.0, 1.0]])


def random_stats(
    rng: np.random.Generator, grid: tuple[int, int] = (4, 4), z: npt.NDArray[np.float64] | None = None
) -> FrameStats:
    """An i.i.d. draw of plausible frame statistics (log-normal levels, zero-inflated clipping).

    ``z`` (10,) replaces the standard-normal latent levels (e.g. by an AR(1) process: video).
    """
    z = rng.normal(size=10) if z is None else z
    brightness = 110.0 * np.exp(0.15 * z[0])
    contrast = 45.0 * np.exp(0.15 * z[1])
    mean_g = brightness * np.exp(0.05 * z[2])
    clip = 0.0 if rng.random() < 0.7 else float(rng.beta(1.0, 300.0))
    vals = {
        "brightness": brightness,
        "contrast": contrast,
        "saturation": 60.0 * np.exp(0.2 * z[3]),
        "blur": contrast**2 * np.exp(0.3 * z[4]),
        "noise": 3.0 * np.exp(0.2 * z[5]),
        "dark_frac": float(rng.beta(1.0, 60.0)),
        "clip_frac": clip,
        "mean_b": mean_g * np.exp(0.06 * z[6]),
        "mean_g": mean_g,
        "mean_r": mean_g * np.exp(0.06 * z[7]),
        "diff_prev": 2.0 * np.exp(0.3 * z[8]),
    }
    rows, cols = grid
    tiles = np.empty((rows, cols, len(TILE_FIELDS)))
    for k, name in enumerate(TILE_FIELDS):
        jitter = np.exp(0.1 * rng.normal(size=(rows, cols)))
        tiles[:, :, k] = vals[name] * (jitter if not name.endswith("_frac") else 1.0)
    return FrameStats(width=64, height=48, hist=np.zeros(HIST_BINS, np.int64), tiles=tiles,
                      **{k: float(v) for k, v in vals.items()})


def _rate(cal_cfg: CalibrationConfig, alpha_flag: float, alpha_block: float, held_out: int) -> tuple[float, float]:
    rng = np.random.default_rng(2024)
    cal = Calibrator(cal_cfg, (4, 4))
    while not cal.done:
        cal.update(random_stats(rng))
    guard = Guard(cal.build(), PolicyConfig(alpha_flag=alpha_flag, alpha_block=alpha_block))
    image = np.zeros((2, 2, 3), np.uint8)
    flags = blocks = 0
    for i in range(held_out):
        v = guard.update(Frame(image, "cam", i, 0.0, 0.0), random_stats(rng), None)
        assert (v.decision >= Decision.FLAG) == (v.p_values[FAMILY_KEY] <= alpha_flag)
        flags += v.decision >= Decision.FLAG
        blocks += v.decision == Decision.BLOCK
    return flags / held_out, blocks / held_out


def test_realised_clean_flag_rate_matches_alpha_on_iid_frames() -> None:
    """Family-wise: alpha is the share of clean frames flagged by ANY of the ~10 tests."""
    exact = CalibrationConfig(frames=1000, tolerances=dict.fromkeys(DEFAULT_TESTS, 0.0))
    flag, block = _rate(exact, 0.05, 0.005, 6000)
    assert 0.025 <= flag <= 0.075, flag  # within +-50 % of alpha (sd about 0.01 here)
    assert block <= 0.0125, block


def test_default_tolerances_are_conservative() -> None:
    flag, block = _rate(CalibrationConfig(frames=600), 0.05, 0.005, 3000)
    assert flag <= 0.075, flag
    assert block <= 0.0125, block


def test_realised_rate_on_correlated_frames() -> None:
    """Video-like frames (AR(1) latent levels, correlation time ~10 frames): out-of-block calibration
    of the family keeps the clean FLAG rate at about alpha (tolerances 0: the exact p-values).

    A single calibration of 600 such frames holds only ~30 independent states, so one draw lands
    anywhere in 0.026..0.086 at alpha = 0.05; the mean over calibrations is what must match.
    """
    def video(seed: int) -> Iterator[FrameStats]:
        rng = np.random.default_rng(seed)
        z = np.zeros(10)
        while True:
            z = 0.9 * z + np.sqrt(1 - 0.81) * rng.normal(size=10)
            yield random_stats(rng, z=z)

    rates = []
    for seed in range(4):
        frames = video(seed)
        cal = Calibrator(CalibrationConfig(frames=600, tolerances=dict.fromkeys(DEFAULT_TESTS, 0.0)), (4, 4))
        while not cal.done:
            cal.update(next(frames))
        guard = Guard(cal.build(), PolicyConfig(alpha_flag=0.05, alpha_block=0.005))
        image = np.zeros((2, 2, 3), np.uint8)
        rates.append(np.mean([
            guard.update(Frame(image, "cam", i, 0.0, 0.0, live=False), next(frames), None).decision >= Decision.FLAG
            for i in range(2000)
        ]))
    assert 0.025 <= float(np.mean(rates)) <= 0.075, rates


def test_realised_rate_on_rendered_frames_at_random_times() -> None:
    """The whole guard on pixels (every image test: tiles, chroma floor, thumbnail, ...): frames of
    the synthetic scene rendered at random times are exchangeable, so with exact p-values the clean
    FLAG rate is about alpha, and the default physical tolerances only lower it (they are dropped
    when the calibrator is told alpha_flag and its frames resolve it)."""
    scene = SyntheticScene(seed=7, size_wh=(256, 144))
    times = np.random.default_rng(11).choice(200_000, 1600, replace=False)
    backend = CpuStats((4, 4))
    frames = [scene.render(int(t))[0] for t in times]
    stats = [backend.compute(im) for im in frames]  # diff_prev: between two random times

    def rate(tolerances: dict[str, float], alpha_flag: float | None = None) -> float:
        cal = Calibrator(CalibrationConfig(frames=600, tolerances=tolerances), (4, 4))
        for im, st in zip(frames[:600], stats[:600], strict=True):
            cal.update(st, None, image=im, live=False)
        guard = Guard(cal.build(alpha_flag=alpha_flag), PolicyConfig(alpha_flag=0.05, alpha_block=0.005))
        return float(np.mean([
            guard.update(Frame(im, "cam", i, 0.0, 0.0, live=False), st, None).decision >= Decision.FLAG
            for i, (im, st) in enumerate(zip(frames[600:], stats[600:], strict=True))
        ]))

    exact = rate(dict.fromkeys(DEFAULT_TESTS, 0.0))
    assert 0.025 <= exact <= 0.075, exact  # within +-50 % of alpha (sd about 0.009 over 1000 frames)
    assert rate({}) <= exact  # the calibrator not told alpha: physical tolerances kept
    # Told alpha_flag (as the daemon does), 600 exchangeable frames resolve it: the defaults go.
    assert 0.025 <= rate({}, alpha_flag=0.05) <= 0.075
