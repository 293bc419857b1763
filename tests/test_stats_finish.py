"""finish(): raw integer sums -> FrameStats, checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from agent.stats.finish import RAW_FIELDS, finish
from agent.stats.reference import reference_raw, reference_stats
from agent.stats.types import HIST_BINS, SCALAR_FIELDS, TILE_FIELDS

I64 = npt.NDArray[np.int64]
_NOISE_K = math.sqrt(math.pi / 2)

# 3x3 grey frame (B = G = R = Y): ΣY = 420, ΣY² = 28800, L(centre) = -240, K(centre) = 240.
_Y3 = np.array([[0, 10, 20], [30, 100, 50], [60, 70, 80]], dtype=np.uint8)
_IMG3 = np.repeat(_Y3[:, :, None], 3, axis=2)  # (3, 3, 3)


def _raw(**sums: int) -> I64:
    """One tile's raw vector, (1, 1, 14), missing fields 0."""
    out = np.zeros((1, 1, len(RAW_FIELDS)), dtype=np.int64)
    for name, value in sums.items():
        out[0, 0, RAW_FIELDS.index(name)] = value
    return out


def _hist(n: int) -> I64:
    h = np.zeros(HIST_BINS, dtype=np.int64)
    h[0] = n
    return h


def test_hand_computed_3x3_frame() -> None:
    s = reference_stats(_IMG3, np.zeros_like(_IMG3), grid=(1, 1))
    assert (s.width, s.height) == (3, 3)
    assert s.brightness == pytest.approx(420 / 9, rel=1e-12)
    assert s.contrast == pytest.approx(math.sqrt((9 * 28800 - 420**2) / 81), rel=1e-12)  # sqrt(1022.2)
    assert s.saturation == 0.0
    assert s.blur == 0.0  # one interior pixel: variance 0
    assert s.noise == pytest.approx(_NOISE_K * 240 / 6, rel=1e-12)
    assert s.dark_frac == pytest.approx(2 / 9)  # Y = 0 and 10
    assert s.clip_frac == 0.0
    assert (s.mean_b, s.mean_g, s.mean_r) == pytest.approx((420 / 9,) * 3)
    assert s.diff_prev == pytest.approx(420 / 9)  # previous frame all black
    assert int(s.hist.sum()) == 9


def test_hand_computed_3x3_frame_on_a_3x3_grid() -> None:
    s = reference_stats(_IMG3, grid=(3, 3))
    assert s.tiles.shape == (3, 3, len(TILE_FIELDS))
    assert np.array_equal(s.tile("brightness"), _Y3.astype(np.float64))  # one pixel per tile
    assert np.all(s.tile("contrast") == 0.0)
    noise = s.tile("noise")
    assert noise[1, 1] == pytest.approx(_NOISE_K * 240 / 6)
    assert np.count_nonzero(noise) == 1  # only the centre tile has an interior pixel (m = 1)
    assert np.all(s.tile("blur") == 0.0)
    assert s.tile("dark_frac").tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert np.all(np.isnan(s.tile("diff_prev")))  # no previous frame
    assert math.isnan(s.diff_prev)


def test_blur_is_the_population_variance_of_the_laplacian() -> None:
    # m = 4 interior pixels with L = 1, 2, 3, 4: ΣL = 10, ΣL² = 30, var = (4·30 − 100) / 16 = 1.25
    s = finish(_raw(n=16, m=4, sum_l=10, sum_l2=30), _hist(16), width=4, height=4, has_prev=False)
    assert s.blur == 1.25
    assert s.tile("blur")[0, 0] == 1.25


def test_variance_is_exact_for_huge_constant_frames() -> None:
    # 10^12 pixels of Y = 200: float64 cancellation would give a non-zero variance.
    n = 10**12
    raw = _raw(n=n, sum_y=200 * n, sum_y2=40000 * n, sum_b=200 * n, sum_g=200 * n, sum_r=200 * n)
    s = finish(raw, _hist(n), width=10**6, height=10**6, has_prev=False)
    assert s.contrast == 0.0
    assert s.brightness == 200.0


def test_shapes_and_field_order() -> None:
    s = reference_stats(_IMG3, grid=(2, 5))
    assert s.hist.shape == (HIST_BINS,) and s.hist.dtype == np.int64
    assert s.tiles.shape == (2, 5, len(TILE_FIELDS))
    assert s.grid == (2, 5)
    assert s.vector().shape == (len(SCALAR_FIELDS),)
    assert list(s.scalars()) == list(SCALAR_FIELDS)
    assert s.to_dict()["diff_prev"] is None  # NaN becomes None for JSON


def test_empty_tiles_are_nan_and_tiles_without_interior_have_zero_blur_and_noise() -> None:
    raw = np.zeros((1, 2, len(RAW_FIELDS)), dtype=np.int64)
    raw[0, 1, RAW_FIELDS.index("n")] = 4
    raw[0, 1, RAW_FIELDS.index("sum_y")] = 40
    raw[0, 1, RAW_FIELDS.index("sum_y2")] = 400
    s = finish(raw, _hist(4), width=2, height=2, has_prev=True)
    assert np.all(np.isnan(s.tiles[0, 0]))  # n = 0
    assert s.tile("brightness")[0, 1] == 10.0
    assert s.tile("blur")[0, 1] == 0.0 and s.tile("noise")[0, 1] == 0.0  # m = 0
    assert s.blur == 0.0 and s.noise == 0.0
    assert s.diff_prev == 0.0  # has_prev with Σ|ΔY| = 0


def test_tiny_frames_match_the_reference_shape_rules() -> None:
    one = np.full((1, 1, 3), 7, dtype=np.uint8)
    s = reference_stats(one, grid=(4, 4))
    assert np.count_nonzero(~np.isnan(s.tile("brightness"))) == 1  # only tile (3, 3) holds the pixel
    assert s.tile("brightness")[3, 3] == 7.0
    assert s.dark_frac == 1.0 and s.blur == 0.0 and s.noise == 0.0
    raw, _ = reference_raw(one, grid=(4, 4))
    assert int(raw[:, :, RAW_FIELDS.index("n")].sum()) == 1


@pytest.mark.parametrize(
    ("raw_shape", "hist_shape", "match"),
    [
        ((1, 1, 13), (HIST_BINS,), "raw must have shape"),  # one raw field missing
        ((4, 14), (HIST_BINS,), "raw must have shape"),  # no grid axis
        ((1, 1, 14), (16,), "hist must have shape"),  # wrong number of bins
    ],
)
def test_finish_rejects_bad_shapes(raw_shape: tuple[int, ...], hist_shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        finish(np.zeros(raw_shape, np.int64), np.zeros(hist_shape, np.int64), width=1, height=1, has_prev=False)
