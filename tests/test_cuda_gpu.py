"""CUDA backend parity on a real GPU: identical FrameStats to the NumPy reference.

Every test here needs an NVIDIA GPU, its driver, cuda-python and NVRTC; elsewhere the
whole module is skipped with probe()'s reason. The kernel's integer sums must equal the
reference's exactly, so the FrameStats (finished by the same code) must be bit-identical:
random frames, real photos and video, odd sizes, grids, batches of mixed sizes, BGR and
NV12, host and device input, diff_prev across frames.

Memory and race checking: benchmarks/sanitize_gpu_stats.sh runs this module under
compute-sanitizer memcheck and racecheck (test_compute_sanitizer_clean below calls it when
compute-sanitizer is on PATH).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.errors import BackendUnavailable, FrameError
from agent.gpu.nv12 import nv12_reference_raw
from agent.stats.cuda import CudaStats, probe
from agent.stats.finish import finish
from agent.stats.reference import reference_stats
from agent.stats.types import FrameStats

pytestmark = pytest.mark.gpu

U8 = npt.NDArray[np.uint8]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cuda() -> Iterator[CudaStats]:
    reason = probe()
    if reason is not None:
        pytest.skip(f"CUDA backend unavailable: {reason}")
    backend = CudaStats((4, 4))
    yield backend
    backend.close()


def _same(got: FrameStats, want: FrameStats, what: str) -> None:
    """Bit-identical FrameStats (NaN == NaN)."""
    assert (got.width, got.height) == (want.width, want.height), what
    np.testing.assert_array_equal(got.hist, want.hist, err_msg=f"{what}: hist")
    np.testing.assert_array_equal(got.vector(), want.vector(), err_msg=f"{what}: scalars")
    np.testing.assert_array_equal(got.tiles, want.tiles, err_msg=f"{what}: tiles")


def _image(h: int, w: int, seed: int) -> U8:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[h // 2 :, :, 1] = (np.arange(w) * 255 // max(w - 1, 1)).astype(np.uint8)
    img[: h // 4, : w // 4] = 0
    img[h // 4 : h // 2, w // 2 : (3 * w) // 4] = 255
    return img


@pytest.mark.parametrize(
    ("h", "w"), [(1, 1), (7, 3), (3, 7), (2, 2), (3, 3), (17, 33), (480, 640), (1081, 1921), (1080, 1920)]
)
def test_random_frames_match_reference(cuda: CudaStats, h: int, w: int) -> None:
    a, b = _image(h, w, 1), _image(h, w, 2)
    key = f"rand-{h}x{w}"
    cuda.reset(key)
    _same(cuda.compute(a, key), reference_stats(a, None, (4, 4)), f"{w}x{h} first")
    _same(cuda.compute(b, key), reference_stats(b, a, (4, 4)), f"{w}x{h} diff_prev")


@pytest.mark.parametrize("grid", [(1, 1), (3, 5), (16, 16)])
@pytest.mark.parametrize("rows", [64, 5])
def test_grids_and_block_rows(grid: tuple[int, int], rows: int) -> None:
    reason = probe()
    if reason is not None:
        pytest.skip(reason)
    with CudaStats(grid, max_block_rows=rows) as backend:
        for h, w in [(7, 3), (129, 300), (1081, 1921)]:
            a, b = _image(h, w, 3), _image(h, w, 4)
            _same(backend.compute(a, "k"), reference_stats(a, None, grid), f"{grid} {rows} {w}x{h}")
            _same(backend.compute(b, "k"), reference_stats(b, a, grid), f"{grid} {rows} {w}x{h} prev")


def test_mixed_batch_one_launch(cuda: CudaStats) -> None:
    frames = [_image(97, 131, 5), _image(1, 1, 6), _image(1080, 1920, 7), _image(7, 3, 8), _image(97, 131, 9)]
    keys = ["b-a", "b-b", "b-c", "b-d", "b-a"]  # b-a twice: the second diffs against the first
    for k in set(keys):
        cuda.reset(k)
    got = cuda.compute_batch(frames, keys)
    want = [reference_stats(f, None, (4, 4)) for f in frames[:4]]
    want.append(reference_stats(frames[4], frames[0], (4, 4)))
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        _same(g, w, f"batch frame {i}")


def test_diff_prev_needs_same_size_and_is_reset(cuda: CudaStats) -> None:
    a, b, c = _image(48, 64, 10), _image(48, 64, 11), _image(50, 64, 12)
    cuda.reset("d")
    assert np.isnan(cuda.compute(a, "d").diff_prev)
    assert cuda.compute(b, "d").diff_prev == reference_stats(b, a, (4, 4)).diff_prev
    assert np.isnan(cuda.compute(c, "d").diff_prev)  # size changed
    cuda.reset("d")
    assert np.isnan(cuda.compute(c, "d").diff_prev)


def test_views_and_bad_input(cuda: CudaStats) -> None:
    img = _image(200, 300, 13)
    for view in (img[10:150, 7:251], img[:, ::-1], img[::-1]):
        cuda.reset("v")
        _same(cuda.compute(view, "v"), reference_stats(np.ascontiguousarray(view), None, (4, 4)), "view")
    with pytest.raises(FrameError):
        cuda.compute(np.zeros((4, 4), dtype=np.uint8))


def _photos(test_data: Path) -> Iterator[U8]:
    for path in sorted((test_data / "images" / "photos").iterdir())[:8]:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None:
            yield np.asarray(img, dtype=np.uint8)


def test_photos_and_video(cuda: CudaStats, test_data: Path) -> None:
    for i, img in enumerate(_photos(test_data)):
        cuda.reset("photo")
        _same(cuda.compute(img, "photo"), reference_stats(img, None, (4, 4)), f"photo {i}")
    cap = cv2.VideoCapture(str(test_data / "videos" / "opencv_vtest.avi"))
    prev: U8 | None = None
    cuda.reset("vtest")
    for n in range(6):
        ok, frame = cap.read()
        assert ok, f"vtest.avi frame {n}"
        cur = np.asarray(frame, dtype=np.uint8)
        _same(cuda.compute(cur, "vtest"), reference_stats(cur, prev, (4, 4)), f"vtest frame {n}")
        prev = cur
    cap.release()


@pytest.mark.parametrize("video_range", ["limited", "full"])
def test_nv12_host_frames(cuda: CudaStats, video_range: str) -> None:
    rng = np.random.default_rng(14)
    prev_luma = None
    cuda.reset("nv12")
    for h, w in [(48, 64), (48, 64), (1080, 1920)]:
        nv12 = rng.integers(0, 256, (h * 3 // 2, w), dtype=np.uint8)
        raw, hist, luma = nv12_reference_raw(nv12[:h], nv12[h:], video_range, prev_luma, (4, 4))
        has_prev = prev_luma is not None and prev_luma.shape == luma.shape
        want = finish(raw, hist, w, h, has_prev)
        got = cuda.compute_nv12(nv12, "nv12", video_range="limited" if video_range == "limited" else "full")
        _same(got, want, f"NV12 {video_range} {w}x{h}")
        prev_luma = luma


def test_device_frames_any_pitch_and_alignment(cuda: CudaStats) -> None:
    gpu = cuda.launcher
    for h, w, pad, offset in [(37, 51, 0, 0), (37, 51, 5, 1), (1081, 1921, 64, 0), (1, 1, 0, 3)]:
        img = _image(h, w, h + w)
        pitch = 3 * w + pad
        host = np.zeros((h, pitch), dtype=np.uint8)
        host[:, : 3 * w] = img.reshape(h, 3 * w)
        base = gpu.alloc(h * pitch + 16)
        try:
            gpu.copy_htod(base + offset, host)
            gpu.synchronize()
            cuda.reset("dev")
            got = cuda.compute_device(base + offset, pitch, w, h, fmt="bgr", key="dev")
        finally:
            gpu.free(base)
        _same(got, reference_stats(img, None, (4, 4)), f"device BGR {w}x{h} pitch {pitch} offset {offset}")
    # NV12 on the device with odd sizes (chroma rows ceil(H/2), pairs ceil(W/2)).
    rng = np.random.default_rng(15)
    h, w = 7, 5
    y_plane = rng.integers(0, 256, (h, w), dtype=np.uint8)
    uv = rng.integers(0, 256, ((h + 1) // 2, (w + 1) // 2 * 2), dtype=np.uint8)
    ybuf, cbuf = gpu.alloc(y_plane.nbytes), gpu.alloc(uv.nbytes)
    try:
        gpu.copy_htod(ybuf, y_plane)
        gpu.copy_htod(cbuf, uv)
        gpu.synchronize()
        cuda.reset("dev-nv12")
        got = cuda.compute_device(
            ybuf, w, w, h, fmt="nv12", key="dev-nv12", chroma=cbuf, chroma_pitch=uv.shape[1], video_range="full"
        )
    finally:
        gpu.free(ybuf)
        gpu.free(cbuf)
    raw, hist, _ = nv12_reference_raw(y_plane, uv, "full", None, (4, 4))
    _same(got, finish(raw, hist, w, h, False), "device NV12 7x5")


def test_pycuda_launcher_when_installed() -> None:
    reason = probe()
    if reason is not None:
        pytest.skip(reason)
    try:
        backend = CudaStats((4, 4), launcher="pycuda")
    except BackendUnavailable as exc:
        pytest.skip(f"pycuda launcher unavailable: {exc}")
    with backend:
        img = _image(123, 77, 16)
        _same(backend.compute(img), reference_stats(img, None, (4, 4)), "pycuda launcher")


@pytest.mark.slow
def test_compute_sanitizer_clean() -> None:
    if shutil.which("compute-sanitizer") is None:
        pytest.skip("compute-sanitizer not on PATH")
    script = REPO / "benchmarks" / "sanitize_gpu_stats.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "ERROR SUMMARY: 0 errors" in proc.stdout + proc.stderr
