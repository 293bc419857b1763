"""The NumPy reference against hand-computed values, and every exactness claim the fast backend relies on.

agent/stats/cpu.py replaces the definitions in docs/stats.md with OpenCV calls; each test
here pins one of those substitutions against the plain reference formulas.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.stats.finish import RAW_FIELDS
from agent.stats.reference import (
    check_grid,
    reference_laplacian,
    reference_luma,
    reference_noise_response,
    reference_raw,
    reference_saturation,
)

U8 = npt.NDArray[np.uint8]
_D2 = np.array([1.0, -2.0, 1.0], dtype=np.float32)


def _all_colours() -> U8:
    """Every 24-bit BGR value exactly once, as a (4096, 4096, 3) uint8 image."""
    v = np.arange(1 << 24, dtype=np.uint32)
    bgr = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=-1).astype(np.uint8)
    return bgr.reshape(4096, 4096, 3)


def _checkerboard(h: int, w: int, phase: int = 0) -> U8:
    """0/255 checkerboard: the extreme values of L (±1020) and K (±2040)."""
    yy, xx = np.indices((h, w))
    return np.where((yy + xx + phase) % 2 == 0, 255, 0).astype(np.uint8)


def _gray_and_extremes(seed: int) -> list[U8]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, (97, 131), dtype=np.uint8),
        _checkerboard(33, 40),
        _checkerboard(33, 40, phase=1),
        rng.choice(np.array([0, 255], dtype=np.uint8), size=(50, 61)),
    ]


@pytest.mark.slow
def test_luma_and_saturation_formulas_equal_opencv_for_all_2_24_colours() -> None:
    img = _all_colours()
    assert np.array_equal(reference_luma(img), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    assert np.array_equal(reference_saturation(img), cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[:, :, 1])


@pytest.mark.parametrize(
    ("bgr", "luma", "sat"),
    [
        ((0, 0, 0), 0, 0),  # black: q(0) = 0
        ((255, 255, 255), 255, 0),  # white: (32768·255 + 16384) >> 15
        ((255, 0, 0), 29, 255),  # blue: (3735·255 + 16384) >> 15 = 29
        ((0, 255, 0), 150, 255),  # green: (19235·255 + 16384) >> 15 = 150
        ((0, 0, 255), 76, 255),  # red: (9798·255 + 16384) >> 15 = 76
        ((200, 50, 50), 67, 191),  # Y = 2215034 >> 15 = 67; q(200) = 5222, (150·5222 + 2048) >> 12 = 191
        ((1, 0, 0), 0, 255),  # q(1) = 1044480, (1·1044480 + 2048) >> 12 = 255
    ],
)
def test_luma_and_saturation_by_hand(bgr: tuple[int, int, int], luma: int, sat: int) -> None:
    img = np.array([[bgr]], dtype=np.uint8)  # (1, 1, 3)
    assert int(reference_luma(img)[0, 0]) == luma
    assert int(reference_saturation(img)[0, 0]) == sat
    assert int(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[0, 0]) == luma


@pytest.mark.parametrize("seed", [0, 1])
def test_opencv_laplacian_and_immerkaer_are_exact_in_the_interior(seed: int) -> None:
    for y in _gray_and_extremes(seed):
        y64 = y.astype(np.int64)
        lap = cv2.Laplacian(y, cv2.CV_16S, ksize=1)[1:-1, 1:-1]
        k = cv2.sepFilter2D(y, cv2.CV_16S, _D2, _D2)[1:-1, 1:-1]
        assert np.array_equal(lap, reference_laplacian(y64))
        assert np.array_equal(k, reference_noise_response(y64))


def test_checkerboard_reaches_the_extremes_without_saturation() -> None:
    y = _checkerboard(9, 9).astype(np.int64)
    assert set(np.unique(reference_laplacian(y)).tolist()) == {-1020, 1020}
    assert set(np.unique(reference_noise_response(y)).tolist()) == {-2040, 2040}


def test_opencv_sums_of_int16_int32_uint8_are_exact_integers() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        shape = (int(rng.integers(1, 200)), int(rng.integers(1, 200)))
        x = rng.integers(-4080, 4081, shape, dtype=np.int16)
        x64 = x.astype(np.int64)
        a, b = (rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(2))
        bgr = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        assert cv2.sumElems(x)[0] == x64.sum()
        assert cv2.norm(x, cv2.NORM_L1) == np.abs(x64).sum()
        assert round(cv2.norm(x, cv2.NORM_L2SQR)) == (x64 * x64).sum()  # rounded: OpenCV 5 squares a sqrt
        assert cv2.norm(a, b, cv2.NORM_L1) == np.abs(a.astype(np.int64) - b).sum()
        assert cv2.sumElems(bgr)[:3] == tuple(bgr.sum(axis=(0, 1), dtype=np.int64).tolist())


def test_opencv_sums_stay_exact_beyond_32_bits() -> None:
    y = _checkerboard(2002, 2002)  # interior 2000x2000, every |L| = 1020
    lap = cv2.Laplacian(y, cv2.CV_16S, ksize=1)[1:-1, 1:-1]
    expected = 2000 * 2000 * 1020 * 1020  # ~4.2e12 > 2^32
    assert round(cv2.norm(lap, cv2.NORM_L2SQR)) == expected
    assert int(cv2.norm(lap, cv2.NORM_L1)) == 2000 * 2000 * 1020
    white = np.full((3000, 3000, 3), 255, dtype=np.uint8)
    assert cv2.sumElems(white)[:3] == (255 * 9_000_000,) * 3


def test_calchist_equals_bincount_on_tile_rois() -> None:
    y = np.random.default_rng(3).integers(0, 256, (300, 401), dtype=np.uint8)
    roi = y[17:250, 33:399]  # a non-contiguous view, like a tile
    h = cv2.calcHist([roi], [0], None, [256], [0, 256]).reshape(256)
    assert np.array_equal(h.astype(np.int64), np.bincount(roi.ravel(), minlength=256))


def test_hand_computed_3x3_raw_sums() -> None:
    # Grey pixels (B = G = R = v) so Y = v; values chosen so L and K are non-zero.
    y = np.array([[0, 10, 20], [30, 100, 50], [60, 70, 80]], dtype=np.uint8)
    img = np.repeat(y[:, :, None], 3, axis=2)
    raw, hist = reference_raw(img, np.zeros_like(img), grid=(1, 1))
    expected = {
        "n": 9, "m": 1, "sum_y": 420, "sum_y2": 28800, "sum_s": 0,
        "sum_b": 420, "sum_g": 420, "sum_r": 420, "n_dark": 2, "n_clip": 0,
        "sum_l": -240, "sum_l2": 57600, "sum_abs_k": 240, "sum_abs_diff": 420,
    }  # fmt: skip
    assert dict(zip(RAW_FIELDS, raw[0, 0].tolist(), strict=True)) == expected
    assert hist.sum() == 9
    assert [int(i) for i in np.flatnonzero(hist)] == [0, 1, 2, 3, 6, 7, 8, 10, 12]


def test_tiles_follow_floor_boundaries_and_centre_pixels() -> None:
    img = np.random.default_rng(5).integers(0, 256, (7, 3, 3), dtype=np.uint8)
    raw, _ = reference_raw(img, grid=(3, 5))
    # rows: floor(i·7/3) = 0, 2, 4, 7; cols: floor(j·3/5) = 0, 0, 1, 1, 2, 3
    assert raw[:, :, 0].tolist() == [[0, 2, 0, 2, 2], [0, 2, 0, 2, 2], [0, 3, 0, 3, 3]]
    # interior centres: rows 1..5, column 1 only (tile column 3)
    assert raw[:, :, 1].tolist() == [[0, 0, 0, 1, 0], [0, 0, 0, 2, 0], [0, 0, 0, 2, 0]]


@pytest.mark.parametrize(
    ("grid", "ok"),
    [
        ((4, 4), True),
        ((1, 16), True),
        ((0, 4), False),  # zero rows
        ((4, -1), False),  # negative cols
        ((2.0, 2), False),  # not an integer
        ((1, 2, 3), False),  # not a pair
    ],
)
def test_check_grid(grid: tuple[int, int], ok: bool) -> None:
    if ok:
        assert check_grid(grid) == grid
    else:
        with pytest.raises(ValueError, match="grid must be"):
            check_grid(grid)
