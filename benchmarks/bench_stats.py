"""Frame-statistics throughput: fast CPU backend vs NumPy reference vs an OpenCV composite.

Single thread (cv2.setNumThreads(1)), same run, same frames. The "OpenCV composite" computes
the same quantities (frame and per-tile) with the calls one usually writes: cvtColor to gray
and HSV, Laplacian (CV_64F) + meanStdDev, calcHist, cv2.mean, threshold + countNonZero,
filter2D for the Immerkær noise, absdiff for the frame difference, per tile by ROI slicing.
Target (issue 2, item 12): the fast backend ≥3x faster than the composite at 1920x1080.

    python benchmarks/bench_stats.py            # table for 640x480, 1280x720, 1920x1080
    python benchmarks/bench_stats.py --help
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from agent.datafiles import shared_test_data
from agent.stats.cpu import CpuStats
from agent.stats.finish import tile_bounds
from agent.stats.reference import reference_stats

U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]

TARGET_RATIO = 3.0
SIZES = ((640, 480), (1280, 720), (1920, 1080))
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
_DEFAULT_PHOTO = "images/photos/ortex_kimono.jpg"


def _source_image(path: Path | None) -> tuple[U8, str]:
    """The benchmark photo (BGR) and a description; a seeded synthetic scene when no data."""
    if path is None:
        path = shared_test_data() / _DEFAULT_PHOTO
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is not None:
        return np.asarray(image, dtype=np.uint8), str(path)
    rng = np.random.default_rng(1234)
    noise = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    return np.asarray(cv2.GaussianBlur(noise, (0, 0), 3.0), dtype=np.uint8), "synthetic (seed 1234; photo not found)"


def _composite_region(gray: U8, hsv: U8, lap: F64, noise: F64, diff: U8 | None) -> list[float]:
    """brightness, contrast, saturation, blur, noise, dark, clip, diff of one region."""
    mean_y, std_y = cv2.meanStdDev(gray)
    _, std_l = cv2.meanStdDev(lap)
    _, dark = cv2.threshold(gray, 15, 255, cv2.THRESH_BINARY_INV)
    _, clip = cv2.threshold(gray, 249, 255, cv2.THRESH_BINARY)
    n = gray.size
    m = max(noise.size, 1)
    return [
        float(mean_y[0, 0]),
        float(std_y[0, 0]),
        cv2.mean(hsv)[1],
        float(std_l[0, 0]) ** 2,
        np.sqrt(np.pi / 2) * cv2.norm(noise, cv2.NORM_L1) / (6 * m),
        cv2.countNonZero(dark) / n,
        cv2.countNonZero(clip) / n,
        cv2.mean(diff)[0] if diff is not None else float("nan"),
    ]


def composite_stats(
    image: U8, prev_gray: U8 | None, grid: tuple[int, int]
) -> tuple[list[float], npt.NDArray[np.float32], F64, U8]:
    """The same statistics written the usual OpenCV way; returns (frame values, hist, tiles, gray)."""
    gray = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)  # (H, W)
    hsv = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2HSV), dtype=np.uint8)  # (H, W, 3)
    lap = np.asarray(cv2.Laplacian(gray, cv2.CV_64F), dtype=np.float64)  # (H, W)
    noise = np.asarray(cv2.filter2D(gray, cv2.CV_64F, _IMMERKAER), dtype=np.float64)  # (H, W)
    diff = None if prev_gray is None else np.asarray(cv2.absdiff(gray, prev_gray), dtype=np.uint8)
    inner = (slice(1, -1), slice(1, -1))
    frame = _composite_region(gray, hsv, lap[inner], noise[inner], diff)
    frame += list(cv2.mean(image)[:3])
    hist = np.asarray(cv2.calcHist([gray], [0], None, [32], [0, 256]), dtype=np.float32)  # (32, 1)
    rows, cols = grid
    h, w = gray.shape
    rb, cb = tile_bounds(h, rows), tile_bounds(w, cols)
    tiles = np.empty((rows, cols, 8))
    for i in range(rows):
        for j in range(cols):
            sl = (slice(int(rb[i]), int(rb[i + 1])), slice(int(cb[j]), int(cb[j + 1])))
            tile_diff = None if diff is None else diff[sl]
            # The usual per-tile code slices the full-frame planes, so edge tiles include the
            # frame's border pixels (reflected); the spec excludes them. Same work either way.
            tiles[i, j] = _composite_region(gray[sl], hsv[sl], lap[sl], noise[sl], tile_diff)
    return frame, hist, tiles, gray


def _interleaved(fns: dict[str, Callable[[int], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Run every fn(k) once per iteration k; durations in ms.

    Interleaving makes all see the same machine load; rotating the order each iteration
    makes each run equally often right after another one (which may or may not have left
    the frame in the cache), so neither gets a systematically warmer cache.
    """
    names = list(fns)
    out: dict[str, list[float]] = {name: [] for name in names}
    for k in range(warmup + repeats):
        shift = k % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[name](k)
            if k >= warmup:
                out[name].append((time.perf_counter() - t0) * 1e3)
    return out


_COMPOSITE_ORDER = (
    "brightness", "contrast", "saturation", "blur", "noise", "dark_frac", "clip_frac",
    "diff_prev", "mean_b", "mean_g", "mean_r",
)  # fmt: skip


def _max_rel_diff(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-12)))


def _check(frames: tuple[U8, U8], grid: tuple[int, int]) -> str:
    """Correctness before timing: fast vs reference (must match) and vs the composite (frame values)."""
    fast = CpuStats(grid)
    fast.compute(frames[1])
    got = fast.compute(frames[0])
    ref = reference_stats(frames[0], frames[1], grid)
    if not np.array_equal(got.hist, ref.hist) or _max_rel_diff(list(got.vector()), list(ref.vector())) > 1e-6:
        raise SystemExit("fast CPU backend disagrees with the reference: run tests/test_stats_cpu.py")
    prev_gray = np.asarray(cv2.cvtColor(frames[1], cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    comp = composite_stats(frames[0], prev_gray, grid)[0]
    rel = _max_rel_diff(comp, [getattr(got, k) for k in _COMPOSITE_ORDER])
    return f"fast == reference; composite frame values within {rel:.1e} relative of fast"


def _bench_size(base: U8, size: tuple[int, int], args: argparse.Namespace) -> dict[str, list[float]]:
    """Timings (ms) of the three implementations on two alternating frames of ``size``."""
    a = np.asarray(cv2.resize(base, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)  # (H, W, 3)
    frames = (a, np.ascontiguousarray(a[:, ::-1]))  # alternate so diff_prev is non-trivial
    grid = (args.grid[0], args.grid[1])
    fast = CpuStats(grid)
    prev: list[U8 | None] = [None]

    def run_fast(k: int) -> None:
        fast.compute(frames[k % 2], "bench")

    def run_composite(k: int) -> None:
        prev[0] = composite_stats(frames[k % 2], prev[0], grid)[3]

    def run_reference(k: int) -> None:
        reference_stats(frames[k % 2], frames[(k + 1) % 2], grid)

    print(f"{f'{size[0]}x{size[1]}':>10}  check: {_check(frames, grid)}")
    out = _interleaved({"fast cpu": run_fast, "opencv composite": run_composite}, args.repeats, args.warmup)
    out.update(_interleaved({"numpy reference": run_reference}, args.ref_repeats, 1))
    return out


def _row(size: str, name: str, ms: list[float]) -> str:
    p50 = statistics.median(ms)
    p99 = float(np.percentile(ms, 99))
    return f"{size:>10}  {name:<17} {1e3 / p50:9.1f} {p50:9.2f} {p99:9.2f}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; exit 1 with --check when the target is missed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--image", type=Path, default=None, help=f"source photo (default $EDGE_GUARD_TEST_DATA/{_DEFAULT_PHOTO})"
    )
    parser.add_argument("--repeats", type=int, default=50, help="timed runs of the fast and composite paths")
    parser.add_argument("--ref-repeats", type=int, default=3, help="timed runs of the slow reference")
    parser.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs")
    parser.add_argument("--grid", type=int, nargs=2, default=(4, 4), metavar=("ROWS", "COLS"), help="tile grid")
    parser.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads (the target is for 1)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the 1080p target is missed")
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)
    base, source = _source_image(args.image)
    print(f"source: {source}; grid {args.grid[0]}x{args.grid[1]}; cv2 {cv2.__version__}, threads {args.threads}")
    print(f"{'size':>10}  {'backend':<17} {'frames/s':>9} {'p50 ms':>9} {'p99 ms':>9}")
    ratio_1080 = 0.0
    for w, h in SIZES:
        t = _bench_size(base, (w, h), args)
        label = f"{w}x{h}"
        for name, ms in t.items():
            print(_row(label, name, ms))
        fast = statistics.median(t["fast cpu"])
        vs_comp = statistics.median(t["opencv composite"]) / fast
        vs_ref = statistics.median(t["numpy reference"]) / fast
        print(f"{label:>10}  speed-up fast/composite {vs_comp:.2f}x, fast/reference {vs_ref:.1f}x")
        if (w, h) == (1920, 1080):
            ratio_1080 = vs_comp
    verdict = "PASS" if ratio_1080 >= TARGET_RATIO else "FAIL"
    print(f"target fast >= {TARGET_RATIO:.0f}x composite at 1920x1080: {verdict} ({ratio_1080:.2f}x)")
    return 1 if args.check and verdict == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
