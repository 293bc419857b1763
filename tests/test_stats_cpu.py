"""Fast CPU backend vs the NumPy reference: exact raw sums, bad input, diff_prev, semantics, factory."""

from __future__ import annotations

import logging
import math
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.errors import BackendUnavailable, FrameError
from agent.stats.config import StatsConfig
from agent.stats.cpu import CpuStats, cpu_raw
from agent.stats.factory import CUDA_MODULE, create_backend, cuda_unavailable_reason
from agent.stats.reference import reference_raw, reference_stats
from agent.stats.types import SCALAR_FIELDS, FrameStats

U8 = npt.NDArray[np.uint8]
GRIDS = [(1, 1), (4, 4), (3, 5), (16, 16)]
PHOTOS = ["ortex_daisy.jpg", "opencv_butterfly.jpg", "opencv_graf1.png", "opencv_aloeL.jpg"]


def _random(shape: tuple[int, int], seed: int) -> U8:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _u8(a: object) -> U8:
    return np.asarray(a, dtype=np.uint8)


def _luma(img: U8) -> U8:
    return _u8(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))


def assert_stats_match(a: FrameStats, b: FrameStats) -> None:
    """Same size and histogram exactly; every float ≤1e-6 relative, NaN equal to NaN."""
    assert (a.width, a.height) == (b.width, b.height)
    assert np.array_equal(a.hist, b.hist)
    for name in SCALAR_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-6, abs=0), name
    np.testing.assert_allclose(a.tiles, b.tiles, rtol=1e-6, atol=0, equal_nan=True)


def assert_raw_parity(img: U8, prev: U8 | None, grid: tuple[int, int]) -> None:
    """cpu_raw (fast paths and forced int64 fallbacks) equals reference_raw exactly."""
    ref_raw, ref_hist = reference_raw(img, prev, grid)
    prev_y = None if prev is None else _luma(prev)
    for limit in (1 << 53, 0):  # 0 forces every NumPy fallback path
        raw, hist, luma = cpu_raw(img, prev_y, grid, exact_limit=limit)
        assert np.array_equal(raw, ref_raw), f"raw sums differ (grid {grid}, limit {limit})"
        assert np.array_equal(hist, ref_hist)
        assert luma.shape == img.shape[:2]


# --- parity -------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 3), (7, 3), (3, 7), (64, 48), (121, 203)])
def test_random_frames_raw_parity(shape: tuple[int, int], grid: tuple[int, int]) -> None:
    seed = shape[0] * 1000 + shape[1]
    assert_raw_parity(_random(shape, seed), _random(shape, seed + 1), grid)


def test_full_hd_plus_one_parity_with_previous_frame() -> None:
    img = _u8(cv2.GaussianBlur(_random((1081, 1921), 11), (0, 0), 1.5))  # image-like, odd size
    prev = _random((1081, 1921), 12)
    backend = CpuStats((4, 4))
    backend.compute(prev)
    assert_stats_match(backend.compute(img), reference_stats(img, prev, (4, 4)))
    ref_raw, ref_hist = reference_raw(img, prev, (4, 4))
    raw, hist, _ = cpu_raw(img, _luma(prev), (4, 4))
    assert np.array_equal(raw, ref_raw) and np.array_equal(hist, ref_hist)
    # One 2-Mpixel tile: processed as many row blocks; raw sums are additive over tiles.
    whole, _, _ = cpu_raw(img, _luma(prev), (1, 1))
    assert np.array_equal(whole[0, 0], ref_raw.sum(axis=(0, 1)))


def test_very_wide_frame_uses_one_row_blocks() -> None:
    # Wider than the block budget (2^17 px): each block is a single row, plus its halo.
    img = _random((4, 140_001), 21)
    assert_raw_parity(img, _random((4, 140_001), 22), (1, 1))


@pytest.mark.parametrize("photo", PHOTOS)
def test_real_photos_parity(test_data: Path, photo: str) -> None:
    read = cv2.imread(str(test_data / "images" / "photos" / photo), cv2.IMREAD_COLOR)
    assert read is not None, f"cannot decode {photo}"
    img = _u8(read)
    for grid in [(4, 4), (3, 5)]:
        assert_stats_match(CpuStats(grid).compute(img), reference_stats(img, grid=grid))
    assert_raw_parity(img[:301, :257], None, (16, 16))  # odd crop, small tiles


def _video_frames(path: Path, count: int) -> Iterator[U8]:
    cap = cv2.VideoCapture(str(path))
    try:
        for _ in range(count):
            ok, frame = cap.read()
            assert ok, f"could not decode a frame of {path}"
            yield _u8(frame)
    finally:
        cap.release()


def test_video_frames_parity_including_diff_prev(test_data: Path) -> None:
    backend = CpuStats()
    prev: U8 | None = None
    for frame in _video_frames(test_data / "videos" / "opencv_vtest.avi", 4):
        fast = backend.compute(frame, key="cam0")
        assert_stats_match(fast, reference_stats(frame, prev))
        assert math.isnan(fast.diff_prev) == (prev is None)
        prev = frame


def test_non_contiguous_input_is_accepted() -> None:
    img = _random((40, 60), 3)
    view = img[::2, ::-1]  # strided, negative step
    assert_stats_match(CpuStats().compute(view), reference_stats(np.ascontiguousarray(view)))


# --- diff_prev state ----------------------------------------------------------------------


def test_diff_prev_follows_keys_sizes_and_reset() -> None:
    a, b, small = _random((30, 40), 1), _random((30, 40), 2), _random((20, 40), 3)
    backend = CpuStats((2, 2))
    assert math.isnan(backend.compute(a).diff_prev)  # first frame
    s = backend.compute(b)
    assert s.diff_prev == pytest.approx(reference_stats(b, a, (2, 2)).diff_prev, rel=1e-12)
    assert not np.isnan(s.tile("diff_prev")).any()
    assert backend.compute(b).diff_prev == 0.0  # frozen
    assert math.isnan(backend.compute(small).diff_prev)  # size changed
    assert np.isnan(backend.compute(a, key="other").tile("diff_prev")).all()  # keys are independent
    backend.reset("default")
    assert math.isnan(backend.compute(small).diff_prev)
    assert backend.compute(a, key="other").diff_prev == 0.0  # "other" kept its frame
    backend.reset()
    assert math.isnan(backend.compute(a, key="other").diff_prev)


# --- bad input ----------------------------------------------------------------------------

BAD_FRAMES = [
    # (frame, fragment of the message)
    (np.zeros((4, 4, 3), dtype=np.float32), "dtype uint8"),  # float frame
    (np.zeros((4, 4, 3), dtype=np.uint16), "dtype uint8"),  # 16-bit frame
    (np.zeros((4, 4), dtype=np.uint8), r"shape \(H, W, 3\)"),  # 2-D grey frame
    (np.zeros((4, 4, 4), dtype=np.uint8), r"shape \(H, W, 3\)"),  # BGRA
    (np.zeros((0, 4, 3), dtype=np.uint8), "must not be empty"),  # no rows
    (np.zeros((4, 0, 3), dtype=np.uint8), "must not be empty"),  # no columns
    ([[[0, 0, 0]]], "numpy.ndarray"),  # a list
    (None, "numpy.ndarray"),
]
COMPUTES: list[Callable[..., object]] = [CpuStats().compute, reference_stats, cpu_raw]


@pytest.mark.parametrize("compute", COMPUTES, ids=["cpu", "reference", "cpu_raw"])
@pytest.mark.parametrize(("frame", "match"), BAD_FRAMES)
def test_bad_frames_raise_frame_error(compute: Callable[..., object], frame: object, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        compute(frame)


def test_bad_grid_is_rejected() -> None:
    with pytest.raises(ValueError, match="grid must be"):
        CpuStats((0, 4))


# --- semantics on constructed frames ------------------------------------------------------


def _textured(seed: int = 0) -> U8:
    noise = np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return np.asarray(cv2.GaussianBlur(noise, (0, 0), 1.0), dtype=np.uint8)


def test_gaussian_blur_lowers_the_blur_score() -> None:
    sharp = _textured()
    blurred = _u8(cv2.GaussianBlur(sharp, (0, 0), 3.0))
    s_sharp, s_blur = CpuStats().compute(sharp), CpuStats().compute(blurred)
    assert s_blur.blur < 0.1 * s_sharp.blur
    assert np.all(s_blur.tile("blur") < s_sharp.tile("blur"))


def test_immerkaer_recovers_the_sigma_of_added_noise() -> None:
    rng = np.random.default_rng(42)
    noise = rng.normal(0.0, 5.0, (480, 640))
    grey = np.clip(np.rint(128 + noise), 0, 255).astype(np.uint8)  # same noise in B, G, R: Y = grey
    s = CpuStats().compute(np.repeat(grey[:, :, None], 3, axis=2))
    assert s.noise == pytest.approx(5.0, rel=0.10)
    flat = CpuStats().compute(np.full((480, 640, 3), 128, dtype=np.uint8))
    assert flat.noise == 0.0 and flat.blur == 0.0 and flat.contrast == 0.0


def test_dark_bright_and_colour_cast_frames() -> None:
    dark = CpuStats().compute(np.full((60, 80, 3), 5, dtype=np.uint8))
    assert (dark.dark_frac, dark.clip_frac, dark.brightness) == (1.0, 0.0, 5.0)
    bright = CpuStats().compute(np.full((60, 80, 3), 255, dtype=np.uint8))
    assert (bright.dark_frac, bright.clip_frac, bright.hist[-1]) == (0.0, 1.0, 60 * 80)
    cast = CpuStats().compute(np.full((60, 80, 3), (200, 50, 50), dtype=np.uint8))
    assert (cast.mean_b, cast.mean_g, cast.mean_r) == (200.0, 50.0, 50.0)
    assert cast.saturation == 191.0  # (150·q(200) + 2048) >> 12, see test_stats_reference
    assert bright.saturation == 0.0


def test_tiles_localise_a_dark_half() -> None:
    img = np.full((80, 80, 3), 180, dtype=np.uint8)
    img[:, :40] = 0  # left half black
    s = CpuStats((4, 4)).compute(img)
    assert np.all(s.tile("dark_frac")[:, :2] == 1.0) and np.all(s.tile("dark_frac")[:, 2:] == 0.0)
    assert s.dark_frac == 0.5
    assert int(s.hist.sum()) == 80 * 80


# --- backend factory ----------------------------------------------------------------------


class _FakeCudaStats(CpuStats):
    """Stands in for agent.stats.cuda.CudaStats (written elsewhere) to test the factory's choice."""

    name = "cuda"

    def __init__(self, grid: tuple[int, int], launcher: str = "cuda-python") -> None:
        super().__init__(grid)
        self.launcher = launcher


def _install_cuda_module(monkeypatch: pytest.MonkeyPatch, reason: str | None) -> None:
    module = types.ModuleType(CUDA_MODULE)
    module.probe = lambda: reason  # type: ignore[attr-defined]
    module.CudaStats = _FakeCudaStats  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, CUDA_MODULE, module)


def _info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "agent.stats.factory" and r.levelno == logging.INFO]


def test_cpu_backend_when_configured(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    backend = create_backend(StatsConfig(backend="cpu", grid=(3, 5)))
    assert isinstance(backend, CpuStats) and backend.name == "cpu" and backend.grid == (3, 5)
    assert _info_lines(caplog) == ["stats backend: cpu (configured)"]


def test_auto_falls_back_to_cpu_when_cuda_backend_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, CUDA_MODULE, None)  # makes the import fail like a missing module
    caplog.set_level(logging.INFO)
    assert cuda_unavailable_reason() == "CUDA backend not installed"
    backend = create_backend(StatsConfig(backend="auto"))
    assert backend.name == "cpu"
    assert _info_lines(caplog) == ["stats backend: cpu (CUDA unavailable: CUDA backend not installed)"]
    with pytest.raises(BackendUnavailable, match="CUDA backend not installed"):
        create_backend(StatsConfig(backend="cuda"))


def test_auto_and_cuda_follow_the_probe(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _install_cuda_module(monkeypatch, "no NVIDIA driver found")
    caplog.set_level(logging.INFO)
    assert create_backend(StatsConfig(backend="auto")).name == "cpu"
    assert _info_lines(caplog) == ["stats backend: cpu (CUDA unavailable: no NVIDIA driver found)"]
    with pytest.raises(BackendUnavailable, match="no NVIDIA driver found"):
        create_backend(StatsConfig(backend="cuda"))

    _install_cuda_module(monkeypatch, None)
    caplog.clear()
    backend = create_backend(StatsConfig(backend="auto", grid=(2, 2), launcher="pycuda"))
    assert isinstance(backend, _FakeCudaStats) and backend.grid == (2, 2) and backend.launcher == "pycuda"
    assert len(_info_lines(caplog)) == 1 and _info_lines(caplog)[0].startswith("stats backend: cuda (auto")
    assert create_backend(StatsConfig(backend="cuda")).name == "cuda"


def test_a_crashing_probe_means_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType(CUDA_MODULE)

    def probe() -> str | None:
        raise RuntimeError("cuInit failed")

    module.probe = probe  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, CUDA_MODULE, module)
    assert cuda_unavailable_reason() == "CUDA probe failed: RuntimeError: cuInit failed"
    assert create_backend(StatsConfig(backend="auto")).name == "cpu"


def test_auto_on_this_machine_gives_a_working_backend(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    backend = create_backend(StatsConfig())
    lines = _info_lines(caplog)
    assert len(lines) == 1 and lines[0].startswith(f"stats backend: {backend.name} (")
    assert backend.compute(_random((8, 8), 0)).width == 8
