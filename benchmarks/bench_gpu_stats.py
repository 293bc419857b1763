"""Benchmark the fused CUDA statistics kernel against the memory-bandwidth limit and a CuPy composite.

Measures, in one run on one GPU:
- kernel time (CUDA events) for 1 x 1080p, 8 x 1080p and 8 x 4K frames, BGR and NV12,
  with a warm L2 (the same frames every launch) and a cold L2 (rotating through frame sets
  that together exceed several times the L2 size);
- device-to-device copy bandwidth (bytes read + written per second), the practical limit,
  and the kernel's achieved fraction of it (its bytes: the frames, the previous luma it
  reads and the luma it writes);
- the same statistics from a composite of CuPy calls (gray, moments, HSV saturation,
  Laplacian and noise by slicing, histogram, per-tile sums, frame difference), if CuPy is
  importable;
- the Python call overhead per frame end to end (host frame: upload + launch + results +
  finish; device frame: launch + results + finish).

Targets (issue 5): 8 x 1080p BGR at >= 70% of the copy bandwidth, >= 10x faster than the
composite, single 1080p frame <= 6 us kernel time on H100/H200.
Exits 0 with "no GPU: <reason>" where the CUDA backend cannot run.
"""

from __future__ import annotations

import argparse
import importlib
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.gpu.launcher import Launcher
from agent.gpu.statsabi import DESC_DTYPE, HIST_BINS, NFIELDS, THREADS, fill_desc, plan_frame
from agent.stats.cuda import CudaStats, probe

SIZES = {"1080p": (1080, 1920), "4k": (2160, 3840)}
TARGET_BW_FRACTION = 0.70
TARGET_SPEEDUP = 10.0
TARGET_SINGLE_US = 6.0


@dataclass
class FrameSet:
    """Frames on the device plus their descriptors and outputs, ready to launch."""

    descs: int  # device address of n descriptors
    n: int
    blocks: int
    out: int
    out_bytes: int
    bytes_moved: int


def _frame_bytes(h: int, w: int, fmt: str) -> int:
    return h * w * 3 if fmt == "bgr" else h * w * 3 // 2


def make_set(backend: CudaStats, n: int, h: int, w: int, *, fmt: str, rng: np.random.Generator) -> FrameSet:
    """Upload n random frames and build one launch over them (with previous luma: steady state)."""
    gpu = backend.launcher
    grid = backend.grid
    words = grid[0] * grid[1] * NFIELDS + HIST_BINS
    descs = np.zeros(n, dtype=DESC_DTYPE)
    out = gpu.alloc(n * words * 8)
    block = 0
    for i in range(n):
        pitch = (w * (3 if fmt == "bgr" else 1) + 255) // 256 * 256
        rows = h if fmt == "bgr" else h + (h + 1) // 2
        host = rng.integers(0, 256, (rows, pitch), dtype=np.uint8)
        src = gpu.alloc(rows * pitch)
        gpu.copy_htod(src, host)
        luma_pitch = (w + 255) // 256 * 256
        luma = gpu.alloc(luma_pitch * h)
        gpu.memset(luma, 128, luma_pitch * h)
        plan = plan_frame(w, h, grid, backend.max_block_rows)
        fill_desc(
            descs[i : i + 1],
            src=src,
            pitch=pitch,
            width=w,
            height=h,
            grid=grid,
            plan=plan,
            block_start=block,
            raw_out=out + i * words * 8,
            hist_out=out + (i * words + words - HIST_BINS) * 8,
            fmt="nv12" if fmt == "nv12" else "bgr",
            video_range="limited",
            chroma=src + pitch * h if fmt == "nv12" else 0,
            chroma_pitch=pitch if fmt == "nv12" else 0,
            prev_luma=luma,
            luma_out=luma,
            luma_pitch=luma_pitch,
        )
        block += plan.block_count
    dev = gpu.alloc(descs.nbytes)
    gpu.copy_htod(dev, descs)
    gpu.synchronize()
    moved = n * (_frame_bytes(h, w, fmt) + 2 * h * w)
    return FrameSet(dev, n, block, out, n * words * 8, moved)


def time_events(gpu: Launcher, fn: Callable[[], None], iters: int) -> float:
    """Median milliseconds of ``fn`` between two events, over ``iters`` runs after 3 warm-ups."""
    for _ in range(3):
        fn()
    gpu.synchronize()
    times = []
    for _ in range(iters):
        start = gpu.record_event()
        fn()
        end = gpu.record_event()
        times.append(gpu.elapsed_ms(start, end))
    return statistics.median(times)


def time_kernel(backend: CudaStats, sets: list[FrameSet], iters: int) -> float:
    """Median kernel-only time (ms); rotates through ``sets`` (cold L2 when they exceed it)."""
    gpu = backend.launcher
    times = []
    for i in range(iters + 3):
        fs = sets[i % len(sets)]
        gpu.memset(fs.out, 0, fs.out_bytes)
        start = gpu.record_event()
        gpu.launch(backend.kernel.function, fs.blocks, THREADS, [("ptr", fs.descs), ("i32", fs.n)])
        end = gpu.record_event()
        ms = gpu.elapsed_ms(start, end)
        if i >= 3:
            times.append(ms)
    return statistics.median(times)


def copy_bandwidth(gpu: Launcher, nbytes: int) -> float:
    """Device-to-device copy, bytes read + written per second."""
    a, b = gpu.alloc(nbytes), gpu.alloc(nbytes)
    gpu.memset(a, 1, nbytes)
    ms = time_events(gpu, lambda: gpu.copy_dtod(b, a, nbytes), 10)
    gpu.free(a)
    gpu.free(b)
    return 2 * nbytes / (ms / 1e3)


def cupy_composite(h: int, w: int, n: int, fmt: str, iters: int) -> float | None:
    """Milliseconds for the same statistics from CuPy calls over n frames (None without CuPy)."""
    try:
        cp: Any = importlib.import_module("cupy")  # optional baseline, untyped
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    shape = (h, w, 3) if fmt == "bgr" else (h * 3 // 2, w)
    frames = [cp.asarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(n)]
    prev = [cp.zeros((h, w), dtype=cp.int32) for _ in range(n)]
    v = np.arange(256)
    qtab = cp.asarray(np.where(v > 0, (2 * 255 * 4096 + v) // np.maximum(2 * v, 1), 0).astype(np.int32))
    rows, cols = 4, 4

    def tiles(x: Any) -> Any:
        th, tw = h // rows, w // cols  # exact for 1080p and 4K on 4x4
        return x[: th * rows, : tw * cols].reshape(rows, th, cols, tw).sum(axis=(1, 3))

    def one(f: Any, p: Any) -> list[Any]:
        if fmt == "bgr":
            b, g, r = (f[:, :, c].astype(cp.int32) for c in range(3))
            y = (3735 * b + 19235 * g + 9798 * r + 16384) >> 15
        else:
            y = f[:h].astype(cp.int32)
            uv = f[h:].reshape(h // 2, w // 2, 2).astype(cp.int32)
            u = cp.repeat(cp.repeat(uv[:, :, 0], 2, 0), 2, 1) - 128
            vv = cp.repeat(cp.repeat(uv[:, :, 1], 2, 0), 2, 1) - 128
            yy = cp.maximum(y - 16, 0) * 1220542 + (1 << 19)
            r = cp.clip((yy + 1673527 * vv) >> 20, 0, 255)
            g = cp.clip((yy - 852492 * vv - 409993 * u) >> 20, 0, 255)
            b = cp.clip((yy + 2116026 * u) >> 20, 0, 255)
            y = cp.clip(((y - 16) * 510 + 219) // 438, 0, 255)
        mx = cp.maximum(cp.maximum(b, g), r)
        s = ((mx - cp.minimum(cp.minimum(b, g), r)) * qtab[mx] + 2048) >> 12
        c = y[1:-1, 1:-1]
        a4 = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:]
        lap = a4 - 4 * c
        k = y[:-2, :-2] + y[:-2, 2:] + y[2:, :-2] + y[2:, 2:] - 2 * a4 + 4 * c
        out = [tiles(t) for t in (y, y * y, s, b, g, r, y <= 15, y >= 250, cp.abs(y - p))]
        out += [lap.sum(), (lap * lap).sum(), cp.abs(k).sum(), cp.bincount((y >> 3).ravel(), minlength=32)]
        p[...] = y
        return out

    def run() -> None:
        for f, p in zip(frames, prev, strict=True):
            one(f, p)

    for _ in range(2):
        run()
    cp.cuda.Stream.null.synchronize()
    times = []
    for _ in range(iters):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return float(statistics.median(times))


def call_overhead_us(backend: CudaStats, h: int, w: int, iters: int) -> tuple[float, float]:
    """(host BGR frame compute(), device frame compute_device()) wall microseconds per call."""
    rng = np.random.default_rng(1)
    img: npt.NDArray[np.uint8] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gpu = backend.launcher
    pitch = (3 * w + 255) // 256 * 256
    dev = gpu.alloc(pitch * h)
    gpu.copy_htod_2d(dev, pitch, img.reshape(h, 3 * w), 3 * w, h)
    gpu.synchronize()

    def wall(fn: Callable[[], object]) -> float:
        for _ in range(5):
            fn()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t0) / iters * 1e6

    host_us = wall(lambda: backend.compute(img, "bench-host"))
    dev_us = wall(lambda: backend.compute_device(dev, pitch, w, h, key="bench-dev"))
    gpu.free(dev)
    return host_us, dev_us


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=50, help="timed launches per case (median reported)")
    ap.add_argument("--rows-per-block", type=int, default=64, help="max_block_rows of CudaStats (1..64)")
    ap.add_argument("--launcher", default="cuda-python", choices=["cuda-python", "pycuda"])
    ap.add_argument("--no-cupy", action="store_true", help="skip the CuPy composite baseline")
    args = ap.parse_args(argv)

    reason = probe()
    if reason is not None:
        print(f"no GPU: {reason}")
        return 0
    backend = CudaStats((4, 4), launcher=args.launcher, max_block_rows=args.rows_per_block)
    gpu = backend.launcher
    dev = gpu.device
    print(f"device: {dev.name} (sm_{dev.arch}, {dev.sm_count} SMs, L2 {dev.l2_bytes / 2**20:.0f} MiB)")
    print(f"kernel: {backend.kernel.compiled.target} {backend.kernel.compiled.kind}, {backend.kernel.registers} regs")
    bw = copy_bandwidth(gpu, 1 << 30)
    print(f"device-to-device copy: {bw / 1e12:.3f} TB/s (read + write)")

    rng = np.random.default_rng(0)
    cases = [("1080p", 1), ("1080p", 8), ("4k", 8)]
    head = f"{'case':<16}{'fmt':<6}{'L2':<6}{'kernel us':>11}{'us/frame':>10}{'TB/s':>8}{'of copy':>9}"
    print(f"\n{head}{'cupy us':>10}{'speedup':>9}")
    results: dict[tuple[str, int, str, str], float] = {}
    for size, n in cases:
        h, w = SIZES[size]
        for fmt in ("bgr", "nv12"):
            one = make_set(backend, n, h, w, fmt=fmt, rng=rng)
            rotate = max(2, math.ceil(4 * dev.l2_bytes / max(one.bytes_moved, 1)) + 1)
            cold_sets = [one] + [make_set(backend, n, h, w, fmt=fmt, rng=rng) for _ in range(rotate - 1)]
            composite = None if args.no_cupy else cupy_composite(h, w, n, fmt, max(5, args.iters // 5))
            for l2, sets in (("warm", [one]), ("cold", cold_sets)):
                ms = time_kernel(backend, sets, args.iters)
                results[(size, n, fmt, l2)] = ms
                tbs = one.bytes_moved / (ms / 1e3) / 1e12
                cu = f"{composite * 1e3:10.1f}" if composite is not None else f"{'-':>10}"
                sp = f"{composite / ms:8.1f}x" if composite is not None else f"{'-':>9}"
                label = f"{n} x {size}"
                print(f"{label:<16}{fmt:<6}{l2:<6}{ms * 1e3:11.2f}{ms * 1e3 / n:10.2f}{tbs:8.3f}"
                      f"{tbs * 1e12 / bw:9.0%}{cu}{sp}")  # fmt: skip
                if (size, n, fmt, l2) == ("1080p", 8, "bgr", "cold") and composite is not None:
                    results[("speedup", 8, "bgr", "cold")] = composite / ms
    host_us, dev_us = call_overhead_us(backend, 1080, 1920, max(20, args.iters))
    single = results[("1080p", 1, "bgr", "warm")] * 1e3
    print(f"\nPython call per 1080p frame: host compute() {host_us:.0f} us, device compute_device() {dev_us:.0f} us")
    print(f"  overhead beyond the kernel (device input): {dev_us - single:.0f} us")
    h, w = SIZES["1080p"]
    batch_bw = 8 * (_frame_bytes(h, w, "bgr") + 2 * h * w) / (results[("1080p", 8, "bgr", "cold")] / 1e3)
    print("\ntargets:")
    print(f"  8 x 1080p BGR (cold L2) at {batch_bw / bw:.0%} of copy bandwidth (target >= {TARGET_BW_FRACTION:.0%})")
    speed = results.get(("speedup", 8, "bgr", "cold"))
    print(f"  vs CuPy composite: {f'{speed:.1f}x' if speed else 'n/a (no CuPy)'} (target >= {TARGET_SPEEDUP:.0f}x)")
    print(f"  single 1080p BGR kernel (warm L2): {single:.2f} us (target <= {TARGET_SINGLE_US:.0f} us)")
    print(f"  single 1080p BGR kernel (cold L2): {results[('1080p', 1, 'bgr', 'cold')] * 1e3:.2f} us")
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
