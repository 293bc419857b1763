"""Conformal p-values: the exact formula, validity on i.i.d. data, the GPD tail, leave-one-out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.scoring.conformal import P_MIN, ConformalScorer, fit_gpd_tail, out_of_block_p_values


@pytest.mark.parametrize(
    ("cal", "s", "expected"),
    [
        # p = (1 + #{cal >= s} - t) / (n + 1), n = 4, t = (s - s_lo) / (s_hi - s_lo), s_lo < s <= s_hi
        ([1.0, 2.0, 2.0, 3.0], 0.0, 5 / 5),
        ([1.0, 2.0, 2.0, 3.0], 1.0, 5 / 5),  # at the smallest score: 1
        ([1.0, 2.0, 2.0, 3.0], 1.5, 3.5 / 5),  # 3 scores >= 1.5, half-way from 1 to 2
        ([1.0, 2.0, 2.0, 3.0], 2.0, 3 / 5),  # the left limit at a tie; just above it 2 / 5
        ([1.0, 2.0, 2.0, 3.0], 2.5, 1.5 / 5),
        ([1.0, 2.0, 2.0, 3.0], 3.0, 1 / 5),  # the largest score: 1/(n+1), as just beyond it
        ([1.0, 2.0, 2.0, 3.0], 9.0, 1 / 5),  # beyond every score, no tail: 1/(n+1)
        # zero-inflated: most clean frames score exactly 0 (e.g. no clipped pixel)
        ([0.0, 0.0, 0.0, 0.0, 0.7], 0.0, 6 / 6),  # the point mass at the bottom: 1
        ([0.0, 0.0, 0.0, 0.0, 0.7], 0.1, (2 - 1 / 7) / 6),
        # NaN calibration scores (test not applicable) are left out: n = 2
        ([math.nan, 1.0, 2.0], 1.5, 1.5 / 3),
    ],
)
def test_exact_formula(cal: list[float], s: float, expected: float) -> None:
    c = ConformalScorer(cal, tail_k=0)
    assert c.p_value(s) == pytest.approx(expected, abs=1e-15)
    assert c.p_value(np.array([s]))[0] == pytest.approx(expected, abs=1e-15)


def test_nan_score_is_not_evidence() -> None:
    c = ConformalScorer([1.0, 2.0, 3.0])
    assert c.p_value(math.nan) == 1.0
    assert c.p_value(np.array([math.nan, 0.0]))[0] == 1.0


def test_tolerance_widens_calibration_scores() -> None:
    # the scores widened to 1.5, 2.5, 3.5 (delta = 0.5), then p = (1 + #{cal + delta >= s} - t) / (n + 1)
    c = ConformalScorer([1.0, 2.0, 3.0], tail_k=0, tolerance=0.5)
    assert c.p_value(2.4) == pytest.approx((3 - 0.9) / 4)  # 2.5 and 3.5 >= 2.4, 0.9 of the way from 1.5
    assert c.p_value(3.0) == pytest.approx((2 - 0.5) / 4)
    assert c.p_value(3.5) == pytest.approx(1 / 4) == c.p_value(3.6)
    plain = ConformalScorer([1.0, 2.0, 3.0], tail_k=0)
    assert c.p_value(2.4) == pytest.approx(plain.p_value(1.9))  # a shift by delta
    s = np.linspace(0.0, 5.0, 101)
    assert (c.p_value(s) >= plain.p_value(s)).all()  # widening only ever raises p


def test_vectorized_matches_scalar() -> None:
    rng = np.random.default_rng(3)
    c = ConformalScorer(rng.normal(size=300), tail_k=30, resolution=0.01)
    s = np.concatenate([rng.normal(size=200), np.linspace(2.5, 12.0, 50)])
    vec = c.p_value(s)
    assert vec.shape == s.shape
    assert np.allclose(vec, [c.p_value(float(x)) for x in s], rtol=0, atol=0)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_validity_on_iid_data(alpha: float) -> None:
    """Averaged over calibration draws, P(p <= alpha) = floor(alpha (n+1)) / (n+1) <= alpha."""
    rng = np.random.default_rng(12345)
    n, reps, per_rep = 99, 300, 100
    hits = 0
    for _ in range(reps):
        c = ConformalScorer(rng.standard_t(df=4, size=n), tail_k=20, resolution=1e-3)
        hits += int((c.p_value(rng.standard_t(df=4, size=per_rep)) <= alpha).sum())
    rate = hits / (reps * per_rep)
    exact = math.floor(alpha * (n + 1) + 1e-9) / (n + 1)
    # sd from the test draws and from the calibration draws (Beta coverage), each about 0.002
    sd = math.sqrt(exact * (1 - exact) / (reps * per_rep) + exact * (1 - exact) / ((n + 2) * reps))
    assert abs(rate - exact) <= 4 * sd + 1e-3, (rate, exact)


def test_interpolated_p_values_reach_alpha_between_grid_levels() -> None:
    """At alpha = 0.015 with n = 99 the textbook p-value, on the grid k/100, flags 1 % (a whole grid
    step below alpha); the interpolated one flags about 1.5 %."""
    rng = np.random.default_rng(7)
    n, reps, per_rep, alpha = 99, 1000, 100, 0.015
    hits = textbook = 0
    for _ in range(reps):
        cal = rng.normal(size=n)
        c = ConformalScorer(cal, tail_k=0)
        new = rng.normal(size=per_rep)
        hits += int((c.p_value(new) <= alpha).sum())
        textbook += int(((1 + (cal[None, :] >= new[:, None]).sum(axis=1)) / (n + 1) <= alpha).sum())
    total = reps * per_rep
    assert textbook / total == pytest.approx(0.01, abs=0.002)
    assert hits / total == pytest.approx(alpha, abs=0.002)


def test_tail_extrapolates_below_one_over_n_plus_one_monotonically() -> None:
    rng = np.random.default_rng(7)
    c = ConformalScorer(rng.exponential(2.0, size=200), tail_k=40, resolution=1e-3)
    assert c.tail is not None
    s = np.linspace(c.max_score + 1e-9, c.max_score + 40.0, 400)
    p = c.p_value(s)
    assert (np.diff(p) <= 0).all()  # non-increasing
    assert (p <= c.min_p).all() and (p > 0).all()
    assert p[-1] < 1e-6  # far beyond: far below 1/(n+1)
    # continuity with the empirical part just below the maximum, and at it: no run of scores
    # beyond every calibration score tied at 1/(n+1)
    assert c.p_value(c.max_score) == pytest.approx(1 / 201)
    assert c.p_value(c.max_score - 1e-9) == pytest.approx(1 / 201, rel=1e-6)
    assert c.p_value(c.max_score + 1e-9) == pytest.approx(1 / 201, rel=1e-6)
    assert c.p_value(c.max_score + 0.01) < 1 / 201
    assert c.p_value(1e6) >= P_MIN


def test_gpd_fit_recovers_an_exponential_tail() -> None:
    rng = np.random.default_rng(11)
    x = np.sort(rng.exponential(3.0, size=20_000))
    tail = fit_gpd_tail(x, 2000, resolution=1e-6)
    assert tail is not None
    assert tail.shape == pytest.approx(0.0, abs=0.05)
    assert tail.scale == pytest.approx(3.0, rel=0.1)


def test_tail_shape_is_clamped_and_scale_floored() -> None:
    pareto = np.sort(np.random.default_rng(5).pareto(0.8, size=5000))  # very heavy tail
    heavy = fit_gpd_tail(pareto, 500, resolution=1e-6)
    assert heavy is not None and heavy.shape == 0.5
    ties = fit_gpd_tail(np.zeros(100), 20, resolution=0.25)
    assert ties is not None and ties.scale == 0.25 and ties.shape == 0.0
    assert fit_gpd_tail(np.arange(8.0), 20, resolution=1.0) is not None  # k capped to n - 1 = 7
    assert fit_gpd_tail(np.arange(5.0), 20, resolution=1.0) is None  # fewer than 5 exceedances


def test_threshold_matches_p_value() -> None:
    rng = np.random.default_rng(2)
    c = ConformalScorer(rng.normal(size=199), tail_k=25, resolution=0.01)
    for alpha in (0.2, 0.05, 0.01, 0.001):
        t = c.threshold(alpha)
        assert c.p_value(t + 1e-9) <= alpha
        assert c.p_value(t - 1e-3) > alpha or alpha < c.min_p


def test_loo_p_values_by_hand() -> None:
    # each score against the other three: (1 + #{others >= s_i}) / (n + 1), n = 4; the unique
    # max gets 1/(n+1) (no tail with 3 others); the tolerance does not enter; NaN gets 1
    c = ConformalScorer([3.0, 1.0, 2.0, 2.0, math.nan], tail_k=0, tolerance=10.0)
    assert np.allclose(c.loo_p_values(), [1 / 5, 4 / 5, 3 / 5, 3 / 5, 1.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"calibration_scores": []}, "at least one"),
        ({"calibration_scores": [math.nan]}, "at least one"),
        ({"calibration_scores": [1.0, math.inf]}, "infinite"),
        ({"calibration_scores": [1.0], "tail_k": -1}, "tail_k"),
        ({"calibration_scores": [1.0], "resolution": 0.0}, "resolution"),
        ({"calibration_scores": [1.0], "tolerance": -1.0}, "tolerance"),
    ],
)
def test_bad_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConformalScorer(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("radius", "expected"),
    [
        # blocks 0..3 of two frames; a frame is compared with the n_i frames of blocks farther than
        # radius, its count c = #{others >= s} - t put on the scale of all n = 8: (1 + c * 8 / n_i) / 9
        # e.g. radius 0: 5 vs [0 1 2 4 6 8]: c = 2 - 0.5 -> 2; 4 vs [0 1 5 6 8 9]: c = 4 - 0.75 -> 13/3
        (0, [1 / 9, 3 / 9, 1.0, 1.0, 6 / 9, 16 / 27, 2 / 9, 4 / 27]),
        # radius 1: 5 vs [2 4 6 8]: c = 1.5 -> 3; 6 vs blocks 0, 1 = [9 5 0 1]: c = 0.75 -> 1.5
        (1, [1 / 9, 4 / 9, 1.0, 1.0, 1.0, 1.0, 2.5 / 9, 1.5 / 9]),
    ],
)
def test_out_of_block_p_values_by_hand(radius: int, expected: list[float]) -> None:
    scores = [9.0, 5.0, 0.0, 1.0, 2.0, 4.0, 6.0, 8.0]
    blocks = [0, 0, 1, 1, 2, 2, 3, 3]
    p = out_of_block_p_values(scores, blocks, radius=radius, tail_k=0)
    assert np.allclose(p, expected)


def test_out_of_block_p_values_lie_on_the_run_time_scale() -> None:
    """A calibration frame beyond the other blocks' scores gets what a new frame beyond all n gets:
    1/(n+1) at the largest score and the same tail below it, not the coarser 1/(n_i+1)."""
    rng = np.random.default_rng(3)
    scores = rng.exponential(1.0, size=400)
    blocks = np.repeat(np.arange(40), 10)
    scores[5] = scores.max() + 1e-9  # block 0's frame just beyond every other score
    p = out_of_block_p_values(scores, blocks, radius=1, tail_k=25, resolution=1e-3)
    assert p[5] == pytest.approx(1 / 401, rel=1e-6)
    # the same score as a new frame against all 400, and against the 380 out-of-block ones
    whole = ConformalScorer(np.delete(scores, 5), tail_k=25, resolution=1e-3)
    assert whole.p_value(float(scores[5])) == pytest.approx(1 / 400, rel=1e-6)
    # within a block (one scorer), a larger score never gets a larger p-value; p spans (0, 1]
    for b in range(40):
        mine = np.flatnonzero(blocks == b)
        order = mine[np.argsort(scores[mine])]
        assert (np.diff(p[order]) <= 1e-12).all()
    assert (p > 0).all() and (p <= 1).all() and p.max() == 1.0


def test_out_of_block_p_values_errors() -> None:
    with pytest.raises(ValueError, match="one block id per score"):
        out_of_block_p_values([1.0, 2.0], [0])
    with pytest.raises(ValueError, match="radius"):
        out_of_block_p_values([1.0], [0], radius=-1)
    assert out_of_block_p_values([1.0, 2.0], [0, 0]).tolist() == [1.0, 1.0]  # nothing to compare with
