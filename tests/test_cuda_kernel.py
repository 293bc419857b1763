"""The CUDA statistics kernel, checked on machines without a GPU.

(a) nvcc compiles kernels/frame_stats.cu for sm_87 (Jetson Orin) and sm_90 (H100/H200)
    with no spills; the ptxas report is saved and printed.
(b) The kernel's __host__ __device__ arithmetic (kernels/frame_stats_math.h) is compiled
    for the host with g++ (tests/host_harness/frame_stats_host.cpp), run block by block
    and thread by thread exactly as the kernel runs it, and its raw sums must EQUAL the
    NumPy reference (agent/stats/reference.py; agent/gpu/nv12.py for NV12) on random
    frames, real photos and video, odd sizes, several grids, pitches and alignments.
    The same code also runs under AddressSanitizer/UBSan over exact-size buffers.
(c) NVRTC (cuda-python) compiles the kernel to PTX and cubin with no GPU; the disk cache
    is keyed by source, headers, target, NVRTC version and options.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from helpers import find_nvcc

from agent.errors import BackendUnavailable, FrameError
from agent.gpu.kernels import choose_target
from agent.gpu.launcher import DeviceInfo, KernelArg
from agent.gpu.nv12 import nv12_reference_raw, nv12_to_planes, raw_from_planes, yuv_to_bgr
from agent.gpu.nvrtc import (
    CACHE_ENV,
    KERNEL_DIR_ENV,
    KernelSource,
    cache_dir,
    cache_key,
    compile_kernel,
    kernel_dir,
    nvrtc_version,
)
from agent.gpu.statsabi import (
    BH_MAX,
    BW,
    CHUNK,
    DESC_DTYPE,
    HIST_BINS,
    NFIELDS,
    THREADS,
    FramePlan,
    VideoRange,
    fill_desc,
    plan_frame,
)
from agent.stats.cuda import CudaStats
from agent.stats.finish import finish
from agent.stats.reference import reference_luma, reference_raw, reference_stats
from agent.stats.types import FrameStats

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "kernels"
HARNESS_SRC = REPO / "tests" / "host_harness" / "frame_stats_host.cpp"


# --------------------------------------------------------------------------- (a) nvcc
@pytest.mark.parametrize("arch", [87, 90])
def test_nvcc_compiles_kernel_without_spills(arch: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH or /usr/local/cuda-13.0/bin)")
    out = tmp_path_factory.mktemp("nvcc")
    cmd = [
        nvcc, "-cubin", f"-arch=sm_{arch}", "-std=c++17", "-Xptxas", "-v", "--Werror", "all-warnings",
        "-I", str(KERNELS), str(KERNELS / "frame_stats.cu"), "-o", str(out / f"frame_stats_sm{arch}.cubin"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    report = proc.stdout + proc.stderr
    (out / f"ptxas_sm{arch}.txt").write_text(report)
    print(f"ptxas report sm_{arch} (saved to {out / f'ptxas_sm{arch}.txt'}):\n{report}")
    assert proc.returncode == 0, report
    assert f"Compiling entry function 'eg_frame_stats' for 'sm_{arch}'" in report
    assert "0 bytes spill stores, 0 bytes spill loads" in report, report
    regs = int(re.search(r"Used (\d+) registers", report).group(1))  # type: ignore[union-attr]
    assert regs <= 64, f"__launch_bounds__(256, 4) allows 64 registers, ptxas used {regs}"
    assert (out / f"frame_stats_sm{arch}.cubin").read_bytes()[:4] == b"\x7fELF"


# --------------------------------------------------------------------------- (b) host harness
class Harness:
    """ctypes view of the host-compiled kernel arithmetic."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        vp, ll = ctypes.c_void_p, ctypes.c_longlong
        lib.eg_host_frame_stats.argtypes = [vp, ctypes.c_int, ctypes.c_int]
        lib.eg_host_frame_stats.restype = None
        lib.eg_host_pixels.argtypes = [vp, ll, vp, vp]
        lib.eg_host_pixels.restype = None
        lib.eg_host_yuv_pixels.argtypes = [vp, ll, ctypes.c_int, vp, vp]
        lib.eg_host_yuv_pixels.restype = None
        lib.eg_host_desc_offsets.argtypes = [vp]
        lib.eg_host_constants.argtypes = [vp]
        self.lib = lib


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: cannot build the host harness")
    lib = tmp_path_factory.mktemp("harness") / "libframe_stats_host.so"
    cmd = [gxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
           "-I", str(KERNELS), str(HARNESS_SRC), "-o", str(lib)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"host build failed (warnings are errors):\n{proc.stderr}"
    return Harness(lib)


@dataclass
class HostFrame:
    """A frame laid out in host memory the way the kernel reads it."""

    width: int
    height: int
    src: int
    pitch: int
    fmt: str = "bgr"
    video_range: VideoRange = "full"
    chroma: int = 0
    chroma_pitch: int = 0
    prev: int = 0
    luma: U8 | None = None  # (H, luma_pitch) buffer the kernel writes luma into
    keep: list[U8] = field(default_factory=list)


def _pitched(rows: U8, pad: int, misalign: int) -> tuple[U8, int, int]:
    """Copy (H, row_bytes) into a buffer with pitch row_bytes+pad, base address ≡ misalign (mod 16)."""
    h, row_bytes = rows.shape
    pitch = row_bytes + pad
    buf = np.zeros(h * pitch + 32, dtype=np.uint8)
    start = (-buf.ctypes.data) % 16 + misalign
    view = buf[start : start + h * pitch].reshape(h, pitch)
    view[:, :row_bytes] = rows
    return buf, view.ctypes.data, pitch


def bgr_frame(img: U8, prev_luma: U8 | None = None, pad: int = 0, misalign: int = 0) -> HostFrame:
    h, w = img.shape[:2]
    buf, addr, pitch = _pitched(img.reshape(h, 3 * w), pad, misalign)
    f = HostFrame(w, h, addr, pitch, keep=[buf])
    _attach_luma(f, prev_luma)
    return f


def nv12_frame(
    y_plane: U8, uv_plane: U8, video_range: VideoRange, prev_luma: U8 | None = None, *, pad: int = 0, misalign: int = 0
) -> HostFrame:
    h, w = y_plane.shape
    ybuf, yaddr, pitch = _pitched(y_plane, pad, misalign)
    cbuf, caddr, cpitch = _pitched(uv_plane, pad, misalign)
    f = HostFrame(w, h, yaddr, pitch, "nv12", video_range, caddr, cpitch, keep=[ybuf, cbuf])
    _attach_luma(f, prev_luma)
    return f


def _attach_luma(f: HostFrame, prev_luma: U8 | None) -> None:
    """Luma buffer (pitch rounded to 16); holds prev_luma when given (updated in place, as on the GPU)."""
    pitch = (f.width + 15) // 16 * 16
    f.luma = np.zeros((f.height, pitch), dtype=np.uint8)
    if prev_luma is not None:
        f.luma[:, : f.width] = prev_luma
        f.prev = f.luma.ctypes.data


def run_host(
    h: Harness, frames: list[HostFrame], grid: tuple[int, int], max_block_rows: int = BH_MAX
) -> list[tuple[I64, I64]]:
    """Raw sums and histograms of ``frames``, computed in ONE emulated launch."""
    descs = np.zeros(len(frames), dtype=DESC_DTYPE)
    outs: list[tuple[I64, I64]] = []
    block = 0
    for i, f in enumerate(frames):
        plan = plan_frame(f.width, f.height, grid, max_block_rows)
        raw = np.zeros((grid[0], grid[1], NFIELDS), dtype=np.int64)
        hist = np.zeros(HIST_BINS, dtype=np.int64)
        outs.append((raw, hist))
        assert f.luma is not None
        fill_desc(
            descs[i : i + 1], src=f.src, pitch=f.pitch, width=f.width, height=f.height, grid=grid, plan=plan,
            block_start=block, raw_out=raw.ctypes.data, hist_out=hist.ctypes.data,
            fmt="nv12" if f.fmt == "nv12" else "bgr", video_range=f.video_range, chroma=f.chroma,
            chroma_pitch=f.chroma_pitch, prev_luma=f.prev, luma_out=f.luma.ctypes.data, luma_pitch=f.luma.shape[1],
        )  # fmt: skip
        block += plan.block_count
    h.lib.eg_host_frame_stats(descs.ctypes.data, len(frames), block)
    return outs


def _image(h: int, w: int, seed: int) -> U8:
    """Random pixels over a gradient, with a black and a white patch (dark/clip counts)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    grad = (np.arange(w, dtype=np.int64) * 255 // max(w - 1, 1)).astype(np.uint8)
    img[h // 2 :, :, 1] = grad  # smooth half: small Laplacian values
    img[: h // 4, : w // 4] = 0
    img[h // 4 : h // 2, w // 2 : (3 * w) // 4] = 255
    return img


def _assert_same(got: tuple[I64, I64], want: tuple[I64, I64], what: str) -> None:
    raw, hist = got
    wraw, whist = want
    assert np.array_equal(hist, whist), f"{what}: histogram differs"
    if not np.array_equal(raw, wraw):
        idx = np.argwhere(raw != wraw)[0]
        raise AssertionError(f"{what}: raw[{tuple(idx)}] = {raw[tuple(idx)]}, reference {wraw[tuple(idx)]}")


def test_header_layout_and_constants_match_python(harness: Harness) -> None:
    assert harness.lib.eg_host_desc_size() == DESC_DTYPE.itemsize == 128
    offs = np.zeros(64, dtype=np.int64)
    n = harness.lib.eg_host_desc_offsets(offs.ctypes.data)
    fields = DESC_DTYPE.fields
    assert fields is not None
    assert list(offs[:n]) == [fields[name][1] for name, _ in fields.items()]
    consts = np.zeros(16, dtype=np.int64)
    n = harness.lib.eg_host_constants(consts.ctypes.data)
    assert list(consts[:10]) == [THREADS, BW, BH_MAX, CHUNK, NFIELDS, HIST_BINS, 0, 1, 0, 1]


@pytest.mark.slow
def test_pixel_functions_equal_opencv_for_all_2_24_colours(harness: Harness) -> None:
    v = np.arange(1 << 24, dtype=np.uint32)
    img = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=-1).astype(np.uint8).reshape(4096, 4096, 3)
    y = np.empty((4096, 4096), dtype=np.uint8)
    s = np.empty((4096, 4096), dtype=np.uint8)
    harness.lib.eg_host_pixels(img.ctypes.data, 1 << 24, y.ctypes.data, s.ctypes.data)
    assert np.array_equal(y, cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    assert np.array_equal(s, cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[:, :, 1])


@pytest.mark.slow
@pytest.mark.parametrize("video_range", ["limited", "full"])
def test_yuv_conversion_equals_numpy_definition_for_all_2_24_triples(harness: Harness, video_range: VideoRange) -> None:
    for chunk in range(16):  # 1 M triples at a time keeps the int64 temporaries small
        v = np.arange(chunk << 20, (chunk + 1) << 20, dtype=np.int64)
        yuv = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=-1).astype(np.uint8)  # (N, 3)
        bgr = np.empty_like(yuv)
        luma = np.empty(len(v), dtype=np.uint8)
        limited = video_range == "limited"
        harness.lib.eg_host_yuv_pixels(yuv.ctypes.data, len(v), limited, bgr.ctypes.data, luma.ctypes.data)
        want_luma, want_bgr = yuv_to_bgr((v >> 16) & 255, (v >> 8) & 255, v & 255, video_range)
        assert np.array_equal(bgr, want_bgr)
        assert np.array_equal(luma, want_luma)


@pytest.mark.slow
def test_nv12_definition_equals_opencv_conversions() -> None:
    """Limited range = COLOR_YUV2BGR_NV12; full range = COLOR_YCrCb2BGR of the upsampled chroma; all (Y,U,V)."""
    pairs = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), axis=-1)  # (256, 256, 2) U,V
    uv = pairs.reshape(256, 512).astype(np.uint8)
    for k in range(64):  # Y = 4k..4k+3 over each 2x2 block: every (Y, U, V) once in 64 frames
        y_plane = np.empty((512, 512), dtype=np.uint8)
        for i, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            y_plane[dy::2, dx::2] = 4 * k + i
        _, bgr = nv12_to_planes(y_plane, uv, "limited")
        assert np.array_equal(bgr, cv2.cvtColor(np.vstack([y_plane, uv]), cv2.COLOR_YUV2BGR_NV12))
        _, bgr = nv12_to_planes(y_plane, uv, "full")
        up = np.repeat(np.repeat(pairs, 2, axis=0), 2, axis=1).astype(np.uint8)  # (512, 512, 2)
        ycrcb = np.dstack([y_plane, up[:, :, 1], up[:, :, 0]])
        assert np.array_equal(bgr, cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR))


# (height, width, grid, max_block_rows): odd sizes, frames smaller than the grid, tiles that
# split into several blocks, blocks whose edges are and are not 16-aligned.
BGR_CASES = [
    (1, 1, (4, 4), BH_MAX),
    (7, 3, (4, 4), BH_MAX),  # 7 rows x 3 columns
    (3, 7, (4, 4), BH_MAX),
    (2, 2, (1, 1), BH_MAX),
    (3, 3, (1, 1), BH_MAX),  # one interior pixel
    (16, 16, (4, 4), BH_MAX),
    (17, 33, (3, 5), BH_MAX),
    (65, 129, (2, 3), BH_MAX),
    (129, 300, (16, 16), BH_MAX),
    (100, 261, (4, 4), 5),  # many short blocks per tile
    (480, 640, (4, 4), BH_MAX),
    (300, 512, (1, 1), BH_MAX),  # 16-aligned block edges inside the frame: scalar halo columns
]
# (pad, misalign): packed rows, 16-aligned pitch and base (vector loads), misaligned base (byte loads).
LAYOUTS = [(0, 0), (13, 0), (16 - 0, 1)]


def _aligned_pad(row_bytes: int) -> int:
    return (-row_bytes) % 16 + 16


@pytest.mark.parametrize(("h", "w", "grid", "rows"), BGR_CASES)
def test_host_kernel_equals_reference_bgr(harness: Harness, h: int, w: int, grid: tuple[int, int], rows: int) -> None:
    img, prev = _image(h, w, seed=h * 1000 + w), _image(h, w, seed=h * 1000 + w + 1)
    want = reference_raw(img, prev, grid)
    want_first = reference_raw(img, None, grid)
    prev_luma = reference_luma(prev).astype(np.uint8)
    for pad, misalign in [(0, 0), (_aligned_pad(3 * w), 0), (_aligned_pad(3 * w), 1)]:
        what = f"{w}x{h} grid {grid} rows {rows} pad {pad} misalign {misalign}"
        f = bgr_frame(img, prev_luma, pad, misalign)
        _assert_same(run_host(harness, [f], grid, rows)[0], want, what)
        assert f.luma is not None
        assert np.array_equal(f.luma[:, :w], reference_luma(img)), f"{what}: luma written for the next frame"
        first = bgr_frame(img, None, pad, misalign)
        _assert_same(run_host(harness, [first], grid, rows)[0], want_first, what + " (no prev)")


@pytest.mark.slow
def test_host_kernel_equals_reference_1921x1081(harness: Harness) -> None:
    img, prev = _image(1081, 1921, seed=1), _image(1081, 1921, seed=2)
    prev_luma = reference_luma(prev).astype(np.uint8)
    for grid in [(4, 4), (3, 7)]:
        want = reference_raw(img, prev, grid)
        for pad, misalign in [(0, 0), (_aligned_pad(3 * 1921), 0)]:
            got = run_host(harness, [bgr_frame(img, prev_luma, pad, misalign)], grid)[0]
            _assert_same(got, want, f"1921x1081 grid {grid} pad {pad} misalign {misalign}")
            # finish() is shared, so equal sums give identical FrameStats.
            stats = finish(got[0], got[1], 1921, 1081, has_prev=True)
            ref = reference_stats(img, prev, grid)
            assert np.array_equal(stats.vector(), ref.vector()) and np.array_equal(stats.tiles, ref.tiles)


def test_host_kernel_extreme_laplacian_sums_fit(harness: Harness) -> None:
    """0/255 checkerboard: |L| = 1020 and |K| = 4080 at every interior pixel, biggest blocks."""
    yy, xx = np.indices((200, 300))
    img = np.repeat(np.where((yy + xx) % 2 == 0, 255, 0).astype(np.uint8)[:, :, None], 3, axis=2)
    for grid in [(1, 1), (2, 2)]:
        got = run_host(harness, [bgr_frame(img, None, _aligned_pad(900), 0)], grid)[0]
        _assert_same(got, reference_raw(img, None, grid), f"checkerboard grid {grid}")


def test_host_kernel_mixed_batch_in_one_launch(harness: Harness) -> None:
    grid = (4, 4)
    a, b, c = _image(97, 131, 5), _image(1, 1, 6), _image(48, 64, 7)
    pa = _image(97, 131, 8)
    rng = np.random.default_rng(9)
    y_plane: U8 = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    uv: U8 = rng.integers(0, 256, (24, 64), dtype=np.uint8)
    frames = [
        bgr_frame(a, reference_luma(pa).astype(np.uint8)),
        nv12_frame(y_plane, uv, "limited", pad=_aligned_pad(64)),
        bgr_frame(b),
        bgr_frame(c, pad=_aligned_pad(192)),
    ]
    got = run_host(harness, frames, grid)
    _assert_same(got[0], reference_raw(a, pa, grid), "batch frame 0 (BGR, prev)")
    _assert_same(got[1], nv12_reference_raw(y_plane, uv, "limited", None, grid)[:2], "batch frame 1 (NV12)")
    _assert_same(got[2], reference_raw(b, None, grid), "batch frame 2 (1x1)")
    _assert_same(got[3], reference_raw(c, None, grid), "batch frame 3")


@pytest.mark.parametrize("video_range", ["limited", "full"])
@pytest.mark.parametrize(("h", "w", "grid"), [(2, 2, (4, 4)), (7, 3, (2, 2)), (48, 64, (4, 4)), (121, 333, (3, 5))])
def test_host_kernel_equals_reference_nv12(
    harness: Harness, video_range: VideoRange, h: int, w: int, grid: tuple[int, int]
) -> None:
    rng = np.random.default_rng(h * w)
    cw = (w + 1) // 2 * 2
    planes: list[U8] = [rng.integers(0, 256, (h, w), dtype=np.uint8) for _ in range(2)]
    planes += [rng.integers(0, 256, ((h + 1) // 2, cw), dtype=np.uint8) for _ in range(2)]
    y0, y1, uv0, uv1 = planes
    _, _, luma0 = nv12_reference_raw(y0, uv0, video_range, None, grid)
    raw, hist, luma1 = nv12_reference_raw(y1, uv1, video_range, luma0, grid)
    for pad, misalign in [(0, 0), (_aligned_pad(cw), 0), (_aligned_pad(cw), 3)]:
        f = nv12_frame(y1, uv1, video_range, luma0.astype(np.uint8), pad=pad, misalign=misalign)
        _assert_same(run_host(harness, [f], grid)[0], (raw, hist), f"NV12 {video_range} {w}x{h} pad {pad}")
        assert f.luma is not None and np.array_equal(f.luma[:, :w], luma1)


def test_nv12_reference_agrees_with_bgr_reference_on_colour_sums() -> None:
    """raw_from_planes(luma of BGR, BGR) is reference_raw: the NV12 reference shares its definitions."""
    img, prev = _image(37, 45, 3), _image(37, 45, 4)
    got = raw_from_planes(reference_luma(img), img, reference_luma(prev), (3, 2))
    _assert_same(got, reference_raw(img, prev, (3, 2)), "raw_from_planes vs reference_raw")


def _photos(test_data: Path) -> Iterator[tuple[str, U8]]:
    for name in ["opencv_baboon.jpg", "opencv_fruits.jpg", "opencv_butterfly.jpg"]:
        img = cv2.imread(str(test_data / "images" / "photos" / name), cv2.IMREAD_COLOR)
        assert img is not None, f"cannot decode {name}"
        yield name, np.asarray(img, dtype=np.uint8)


def test_host_kernel_equals_reference_on_photos_and_video(harness: Harness, test_data: Path) -> None:
    for name, img in _photos(test_data):
        h, w = img.shape[:2]
        _assert_same(run_host(harness, [bgr_frame(img)], (4, 4))[0], reference_raw(img, None, (4, 4)), name)
        # The same photo as limited-range NV12 from OpenCV's encoder (even crop).
        even = img[: h // 2 * 2, : w // 2 * 2]
        i420 = np.asarray(cv2.cvtColor(even, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)  # (H*3/2, W)
        eh, ew = even.shape[:2]
        u, v = i420[eh : eh + eh // 4].reshape(eh // 2, ew // 2), i420[eh + eh // 4 :].reshape(eh // 2, ew // 2)
        uv: U8 = np.stack([u, v], axis=-1).reshape(eh // 2, ew)  # interleaved U,V
        got = run_host(harness, [nv12_frame(i420[:eh], uv, "limited")], (4, 4))[0]
        _assert_same(got, nv12_reference_raw(i420[:eh], uv, "limited", None, (4, 4))[:2], name + " NV12")
    cap = cv2.VideoCapture(str(test_data / "videos" / "opencv_vtest.avi"))
    ok0, frame0 = cap.read()
    ok1, frame1 = cap.read()
    cap.release()
    assert ok0 and ok1, "cannot decode opencv_vtest.avi"
    f0, f1 = np.asarray(frame0, dtype=np.uint8), np.asarray(frame1, dtype=np.uint8)
    got = run_host(harness, [bgr_frame(f1, reference_luma(f0).astype(np.uint8))], (4, 4))[0]
    _assert_same(got, reference_raw(f1, f0, (4, 4)), "vtest.avi frame 1 vs 0")


def test_host_kernel_under_address_and_ub_sanitizers(tmp_path: Path) -> None:
    """Exact-size buffers and packed pitches: any read or write past a frame is an ASan error."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found")
    exe = tmp_path / "frame_stats_asan"
    cmd = [gxx, "-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-DEG_HOST_MAIN",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-I", str(KERNELS), str(HARNESS_SRC),
           "-o", str(exe)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0 and "asan" in proc.stderr.lower():
        pytest.skip(f"sanitizer runtime not available: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr
    specs = []
    for fmt, rng in [(0, 0), (1, 1), (1, 0)]:
        for w, h in [(1, 1), (7, 3), (3, 7), (17, 33), (129, 65), (1921, 37), (256, 130)]:
            for grid in [(4, 4), (1, 1)]:
                p: FramePlan = plan_frame(w, h, grid, 7 if w == 129 else BH_MAX)
                specs.append(f"{fmt},{rng},{w},{h},{grid[0]},{grid[1]},{p.tile_bx},{p.tile_by},{p.block_rows},{w % 2}")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    run = subprocess.run([str(exe), *specs], capture_output=True, text=True, timeout=300, check=False, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("blocks ")


def test_plan_frame_covers_every_tile() -> None:
    for w, h, grid, rows in [(1, 1, (4, 4), 64), (1921, 1081, (4, 4), 64), (640, 480, (16, 16), 3), (7, 3, (3, 5), 1)]:
        p = plan_frame(w, h, grid, rows)
        tile_h, tile_w = -(-h // grid[0]), -(-w // grid[1])
        assert p.block_rows <= rows and p.tile_by * p.block_rows >= tile_h and (p.tile_by - 1) * p.block_rows < tile_h
        assert p.tile_bx * BW >= tile_w and (p.tile_bx - 1) * BW < tile_w
        assert p.block_count == grid[0] * grid[1] * p.tile_bx * p.tile_by
    with pytest.raises(ValueError, match="max_block_rows"):
        plan_frame(10, 10, (1, 1), 65)


# --------------------------------------------------------------------------- (c) NVRTC
@pytest.fixture(scope="session")
def nvrtc_ready() -> tuple[int, int]:
    try:
        return nvrtc_version()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("arch", [87, 90])
def test_nvrtc_compiles_ptx_and_cubin(nvrtc_ready: tuple[int, int], arch: int, tmp_path: Path) -> None:
    src = KernelSource.from_file(KERNELS / "frame_stats.cu")
    assert [name for name, _ in src.headers] == ["frame_stats_math.h"]
    ptx = compile_kernel(src, arch, kind="ptx", cache=tmp_path)
    assert ptx.target == f"compute_{arch}" and not ptx.from_cache
    assert b".entry eg_frame_stats" in ptx.image and f".target sm_{arch}".encode() in ptx.image
    assert ptx.image.endswith(b"\0")
    cubin = compile_kernel(src, f"sm_{arch}", kind="cubin", cache=tmp_path, extra_options=["--ptxas-options=-v"])
    assert cubin.image[:4] == b"\x7fELF"
    print(f"NVRTC {nvrtc_ready} ptxas log for sm_{arch}:\n{cubin.log}")
    assert "0 bytes spill stores, 0 bytes spill loads" in cubin.log


def test_nvrtc_cache_hits_and_keys(nvrtc_ready: tuple[int, int], tmp_path: Path) -> None:
    src = KernelSource.from_file(KERNELS / "frame_stats.cu")
    first = compile_kernel(src, 90, cache=tmp_path)
    assert not first.from_cache and first.path is not None and first.path.is_file()
    again = compile_kernel(src, 90, cache=tmp_path)
    assert again.from_cache and again.image == first.image and again.key == first.key
    other_arch = compile_kernel(src, 87, cache=tmp_path)
    defined = compile_kernel(src, 90, cache=tmp_path, defines={"EG_UNUSED_FLAG": 1})
    assert len({first.key, other_arch.key, defined.key}) == 3
    assert len(list(tmp_path.glob("frame_stats-*.cubin"))) == 3
    # Every input of the key changes it: a header edit, the NVRTC version, an option.
    opts = ["--gpu-architecture=sm_90"]
    base = cache_key(src, "sm_90", opts, nvrtc_ready)
    edited = KernelSource(src.name, src.text, (("frame_stats_math.h", src.headers[0][1] + "\n// edit"),))
    assert cache_key(edited, "sm_90", opts, nvrtc_ready) != base
    assert cache_key(src, "sm_90", opts, (nvrtc_ready[0], nvrtc_ready[1] + 1)) != base
    assert cache_key(src, "sm_90", [*opts, "-DX=1"], nvrtc_ready) != base
    # An empty (torn) cache entry is recompiled and rewritten.
    assert first.path is not None
    first.path.write_bytes(b"")
    healed = compile_kernel(src, 90, cache=tmp_path)
    assert not healed.from_cache and healed.image == first.image and first.path.read_bytes() == first.image


def test_nvrtc_reports_compile_errors(nvrtc_ready: tuple[int, int], tmp_path: Path) -> None:
    bad = KernelSource("bad.cu", 'extern "C" __global__ void k() { undefined_name = 1; }')
    with pytest.raises(BackendUnavailable, match="undefined_name"):
        compile_kernel(bad, 90, cache=tmp_path)


def test_kernel_source_headers_and_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.cu").write_text('#include "b.h"\nextern "C" __global__ void k() {}\n')
    (tmp_path / "b.h").write_text('#include "c.h"\n')
    (tmp_path / "c.h").write_text("// leaf\n")
    src = KernelSource.from_file(tmp_path / "a.cu")
    assert [n for n, _ in src.headers] == ["b.h", "c.h"]
    (tmp_path / "c.h").unlink()
    with pytest.raises(BackendUnavailable, match=r"includes 'c\.h'"):
        KernelSource.from_file(tmp_path / "a.cu")
    with pytest.raises(BackendUnavailable, match="not found"):
        KernelSource.from_file(tmp_path / "missing.cu")
    assert kernel_dir() == KERNELS
    monkeypatch.setenv(KERNEL_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert kernel_dir() == tmp_path and cache_dir() == tmp_path / "cache" / "kernels"


@pytest.mark.parametrize(
    ("device", "supported", "want"),
    [
        (90, [75, 80, 87, 90, 100], ("cubin", 90)),  # known device: cubin, no JIT
        (87, [75, 80, 87, 90], ("cubin", 87)),
        (121, [75, 80, 90, 120], ("ptx", 120)),  # device newer than NVRTC: PTX the driver JITs
    ],
)
def test_choose_target(device: int, supported: list[int], want: tuple[str, int]) -> None:
    assert choose_target(device, supported) == want


def test_choose_target_rejects_too_old_device() -> None:
    with pytest.raises(BackendUnavailable, match="none usable"):
        choose_target(60, [75, 80])


# --------------------------------------------------------------------------- backend without a GPU
def test_probe_names_the_missing_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.stats.cuda import probe  # noqa: PLC0415

    reason = probe()
    if reason is None:
        pytest.skip("a usable CUDA device is present; tests/test_cuda_gpu.py covers it")
    assert reason and not reason.startswith("CUDA probe failed"), reason
    if ctypes.util.find_library("cuda") is None and not Path("/usr/lib/x86_64-linux-gnu/libcuda.so.1").exists():
        assert reason == "no NVIDIA driver (libcuda.so.1 not found)"
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    assert probe() == "cuda-python not installed (pip install 'edge-guard[gpu]')"


def test_backend_and_launchers_raise_backend_unavailable_without_gpu() -> None:
    from agent.gpu.launcher import open_launcher  # noqa: PLC0415
    from agent.stats.cuda import probe  # noqa: PLC0415

    reason = probe()
    if reason is None:
        pytest.skip("a usable CUDA device is present")
    with pytest.raises(BackendUnavailable):
        CudaStats((4, 4))
    with pytest.raises(BackendUnavailable, match="pycuda"):
        open_launcher("pycuda")
    with pytest.raises(BackendUnavailable, match="launcher must be one of"):
        open_launcher("opencl")


# --------------------------------------------------------------------------- CudaStats on the host harness
class HostLauncher:
    """The Launcher interface over host memory; launches run the host-compiled kernel.

    Lets the whole CUDA backend (planning, descriptors, pitched uploads, buffer growth,
    per-key luma, duplicate keys, result readback, finish) run against the reference on
    machines without a GPU. Every copy is bounds-checked against live allocations, and new
    allocations are filled with garbage, as device memory would be.
    """

    name = "host-harness"
    stream_handle = 0  # no CUDA stream: launches run synchronously on the host

    def __init__(self, harness: Harness) -> None:
        self.device = DeviceInfo(0, "host harness", 9, 0, 1, 0)
        self._h = harness
        self._mem: dict[int, U8] = {}
        self.launches = 0
        self.allocs = 0

    def _check(self, ptr: int, n: int) -> None:
        for base, buf in self._mem.items():
            if base <= ptr and ptr + n <= base + len(buf) - 256:
                return
        raise AssertionError(f"access [{ptr:#x}, +{n}) outside every live device allocation")

    def make_current(self) -> None:
        return None

    def load_module(self, image: bytes) -> object:
        assert image[:4] == b"\x7fELF", "expected the NVRTC cubin"
        return "module"

    def get_function(self, module: object, name: str) -> object:
        assert name == "eg_frame_stats"
        return name

    def function_registers(self, function: object) -> int:
        return 0

    def launch(self, function: object, grid: int, block: int, args: Sequence[KernelArg], shared_bytes: int = 0) -> None:
        assert block == THREADS and [k for k, _ in args] == ["ptr", "i32"]
        descs, n = args[0][1], args[1][1]
        self._check(descs, n * DESC_DTYPE.itemsize)
        self._h.lib.eg_host_frame_stats(descs, n, grid)
        self.launches += 1

    def alloc(self, nbytes: int) -> int:
        buf = np.full(nbytes + 512, 0xCD, dtype=np.uint8)
        ptr = buf.ctypes.data + (-buf.ctypes.data) % 256
        self._mem[ptr] = buf[ptr - buf.ctypes.data :]
        self.allocs += 1
        return ptr

    def free(self, ptr: int) -> None:
        del self._mem[ptr]

    def alloc_host(self, nbytes: int) -> U8:
        return np.zeros(nbytes, dtype=np.uint8)

    def free_host(self, array: U8) -> None:
        return None

    def copy_htod(self, dst: int, src: npt.NDArray[np.generic]) -> None:
        self._check(dst, src.nbytes)
        ctypes.memmove(dst, src.ctypes.data, src.nbytes)

    def copy_htod_2d(self, dst: int, dst_pitch: int, src: npt.NDArray[np.generic], row_bytes: int, rows: int) -> None:
        assert dst_pitch >= row_bytes and src.strides[0] >= row_bytes
        self._check(dst, dst_pitch * (rows - 1) + row_bytes)
        for r in range(rows):
            ctypes.memmove(dst + r * dst_pitch, src.ctypes.data + r * src.strides[0], row_bytes)

    def copy_dtoh(self, dst: npt.NDArray[np.generic], src: int) -> None:
        self._check(src, dst.nbytes)
        ctypes.memmove(dst.ctypes.data, src, dst.nbytes)

    def copy_dtod(self, dst: int, src: int, nbytes: int) -> None:
        self._check(dst, nbytes)
        self._check(src, nbytes)
        ctypes.memmove(dst, src, nbytes)

    def memset(self, dst: int, value: int, nbytes: int) -> None:
        self._check(dst, nbytes)
        ctypes.memset(dst, value, nbytes)

    def record_event(self) -> object:
        return time.perf_counter()

    def elapsed_ms(self, start: object, end: object) -> float:
        assert isinstance(start, float) and isinstance(end, float)
        return (end - start) * 1e3

    def synchronize(self) -> None:
        return None

    def close(self) -> None:
        self._mem.clear()


@pytest.fixture(params=["nvrtc", "prebuilt"])
def host_backend(
    request: pytest.FixtureRequest, harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[CudaStats, HostLauncher]]:
    """CudaStats on the host launcher, its kernel from NVRTC (cached) or a prebuilt nvcc cubin."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    image: bytes | None = None
    if request.param == "nvrtc":
        try:
            nvrtc_version()
        except BackendUnavailable as exc:
            pytest.skip(str(exc))
    else:
        nvcc = find_nvcc()
        if nvcc is None:
            pytest.skip("nvcc not found: no prebuilt cubin")
        out = tmp_path / "frame_stats.cubin"
        cmd = [
            nvcc,
            "-cubin",
            "-arch=sm_90",
            "-std=c++17",
            "-I",
            str(KERNELS),
            str(KERNELS / "frame_stats.cu"),
            "-o",
            str(out),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        image = out.read_bytes()
    launcher = HostLauncher(harness)
    backend = CudaStats((4, 4), launcher=launcher, kernel_image=image)
    assert backend.kernel.compiled.target == ("prebuilt" if image else "sm_90")
    yield backend, launcher
    backend.close()


def _same_stats(got: FrameStats, want: FrameStats, what: str) -> None:
    np.testing.assert_array_equal(got.hist, want.hist, err_msg=f"{what}: hist")
    np.testing.assert_array_equal(got.vector(), want.vector(), err_msg=f"{what}: scalars")
    np.testing.assert_array_equal(got.tiles, want.tiles, err_msg=f"{what}: tiles")


def test_backend_on_host_harness_matches_reference(host_backend: tuple[CudaStats, HostLauncher]) -> None:
    backend, launcher = host_backend
    grid = backend.grid
    a, b, c = _image(37, 51, 20), _image(37, 51, 21), _image(120, 200, 22)
    _same_stats(backend.compute(a, "cam"), reference_stats(a, None, grid), "first frame")
    _same_stats(backend.compute(b, "cam"), reference_stats(b, a, grid), "diff_prev")
    _same_stats(backend.compute(c, "cam"), reference_stats(c, None, grid), "size change: no diff")
    backend.reset("cam")
    assert np.isnan(backend.compute(c, "cam").diff_prev)
    # A batch of mixed sizes, one key twice (two launches), a view and a 1x1 frame.
    frames = [_image(7, 3, 23), c[5:90, 11:150], _image(1, 1, 24), _image(7, 3, 25)]
    keys = ["x", "y", "z", "x"]
    before = launcher.launches
    got = backend.compute_batch(frames, keys)
    assert launcher.launches - before == 2, "a repeated key starts a second launch"
    want = [reference_stats(np.ascontiguousarray(f), None, grid) for f in frames[:3]]
    want.append(reference_stats(frames[3], frames[0], grid))
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        _same_stats(g, w, f"batch frame {i}")
    # Buffers are reused: the same frames again allocate nothing.
    allocs = launcher.allocs
    backend.compute_batch(frames, keys)
    assert launcher.allocs == allocs


def test_backend_on_host_harness_nv12_and_device_input(host_backend: tuple[CudaStats, HostLauncher]) -> None:
    backend, launcher = host_backend
    rng = np.random.default_rng(26)
    nv12: U8 = rng.integers(0, 256, (36 * 3 // 2, 50), dtype=np.uint8)
    raw, hist, luma = nv12_reference_raw(nv12[:36], nv12[36:], "limited", None, backend.grid)
    _same_stats(backend.compute_nv12(nv12, "n"), finish(raw, hist, 50, 36, False), "host NV12")
    nv12b: U8 = rng.integers(0, 256, (36 * 3 // 2, 50), dtype=np.uint8)
    raw, hist, _ = nv12_reference_raw(nv12b[:36], nv12b[36:], "limited", luma, backend.grid)
    _same_stats(backend.compute_nv12(nv12b, "n"), finish(raw, hist, 50, 36, True), "host NV12 diff_prev")
    with pytest.raises(FrameError, match="NV12"):
        backend.compute_nv12(np.zeros((5, 4), dtype=np.uint8))
    # A frame already "on the device", odd pitch and odd address.
    img = _image(29, 41, 27)
    pitch = 3 * 41 + 7
    ptr = launcher.alloc(29 * pitch + 1) + 1
    rows = np.zeros((29, pitch), dtype=np.uint8)
    rows[:, : 3 * 41] = img.reshape(29, 3 * 41)
    launcher.copy_htod(ptr, rows)
    got = backend.compute_device(ptr, pitch, 41, 29, key="dev")
    _same_stats(got, reference_stats(img, None, backend.grid), "device BGR")
    with pytest.raises(FrameError, match="pitch"):
        backend.compute_device(ptr, 10, 41, 29)


def test_benchmark_help_and_no_gpu_exit() -> None:
    from agent.stats.cuda import probe  # noqa: PLC0415

    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = str(REPO / "benchmarks" / "bench_gpu_stats.py")
    helped = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, env=env, check=False)
    assert helped.returncode == 0 and "--rows-per-block" in helped.stdout
    reason = probe()
    if reason is None:
        pytest.skip("a GPU is present: the benchmark would run for real")
    ran = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert ran.returncode == 0 and ran.stdout.strip() == f"no GPU: {reason}"
