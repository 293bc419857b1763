"""Guard overhead next to the model: model alone vs model + guard (+ feature squeezing), same run.

On a real fixed camera (../shared/data/videos/opencv_vtest.avi): the guard is calibrated on
the first part of the video (agent.scoring.calibrate.Calibrator -> agent.scoring.policy.Guard),
then every held-out frame is timed, interleaved so all variants see the same conditions:

- ``model``: ``runner.infer([frame])`` (preprocessing + inference + decoding);
- ``guard``: statistics (``stats.compute``) + scoring (``guard.update``);
- ``model+guard``: the two above, per frame;
- ``model+squeeze``: the frame and its squeezed copies (``--squeeze``, default bits:5,median:3)
  in one batched runner call (agent.gpu.squeeze.infer_with_squeezers), plus the guard.

Prints p50/p99 latency and throughput per variant and two ratios with their targets (issue 6):
**guard overhead** = p50(stats + scoring) / p50(model) <= 5%, and **squeezing cost** =
p50(batched pass with squeezed copies) / p50(model) <= 2 (at most one extra batched pass).

``--backend cpu``: CPU statistics and ONNX Runtime on the CPU (one thread by default). A model
with a fixed batch of 1 (SqueezeNet) is given a symbolic batch in a temporary copy so the
squeezed copies can share one pass (a dynamic-batch export does that in production).
``--backend gpu``: CUDA statistics and, when TensorRT is installed, the TensorRT runner on the
statistics backend's launcher: the **zero-copy path** (agent.gpu_measure), where each frame is
uploaded once and ``model`` is upload + GPU preprocessing + engine (``infer_device``),
``stats`` the statistics kernel on the *same* device buffer (``compute_device``), and the
squeezed copies are extra slots of the same engine call. Without TensorRT (or with
preprocessing the GPU kernel lacks) it measures the host path with ONNX Runtime's best provider.
It prints which path it measured and why. Without a usable GPU it prints a "no GPU" line and
exits 0.

    python benchmarks/bench_pipeline.py --backend cpu
    python benchmarks/bench_pipeline.py --backend gpu --model path/to/model.onnx --frames 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.datafiles import shared_test_data
from agent.frame import Frame
from agent.gpu.preprocess import DeviceFrame, FrameUploader
from agent.gpu.squeeze import Squeeze, infer_with_squeezers, parse_squeezers
from agent.gpu_measure import plan_measuring
from agent.model.config import ModelConfig, PreprocessConfig
from agent.model.types import ModelOutput, ModelRunner
from agent.scoring.calibrate import Calibrator
from agent.scoring.config import CalibrationConfig
from agent.scoring.policy import Guard
from agent.stats.config import StatsConfig
from agent.stats.factory import create_backend, cuda_unavailable_reason
from agent.stats.types import FrameStats, StatsBackend

U8 = npt.NDArray[np.uint8]
GUARD_TARGET = 0.05
SQUEEZE_TARGET = 2.0
SQUEEZENET_PRE = PreprocessConfig(size=(224, 224), mean=(104.0, 117.0, 123.0))


def _read_frames(path: Path, n: int) -> list[U8]:
    cap = cv2.VideoCapture(str(path))
    frames: list[U8] = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(np.asarray(frame, dtype=np.uint8))
    cap.release()
    return frames


def _dynamic_batch_copy(path: Path, folder: Path) -> Path | None:
    """A copy of ``path`` whose input/output batch dimension is symbolic (None if not needed/possible)."""
    try:
        import onnx  # noqa: PLC0415 (dev dependency, benchmark only)
    except ImportError:
        return None
    model = onnx.load(str(path))
    dims = [v.type.tensor_type.shape.dim[0] for v in [*model.graph.input, *model.graph.output]]
    if not dims or all(d.HasField("dim_param") for d in dims):
        return None  # already dynamic
    for d in dims:
        d.dim_param = "N"
    del model.graph.value_info[:]  # intermediate shapes recorded for batch 1 would contradict N
    out = folder / f"{path.stem}_dynbatch.onnx"
    onnx.save(model, str(out))
    return out


def _model_config(args: argparse.Namespace, path: Path, batch: int, providers: list[str]) -> ModelConfig:
    pre = SQUEEZENET_PRE if args.model is None else PreprocessConfig(size=(args.size[0], args.size[1]))
    fields = {"path": path, "batch_size": batch, "threads": args.threads, "providers": providers}
    return ModelConfig.model_validate({**fields, "preprocess": pre, "trt_fp16": True})


def _open_runner(
    args: argparse.Namespace, folder: Path, n_slots: int, stats: StatsBackend
) -> tuple[ModelRunner, ModelConfig, str]:
    """The runner for the backend, its config, and a description (GPU: on the stats launcher)."""
    model_path = Path(args.model) if args.model else shared_test_data() / "models" / "squeezenet1.0_fp32_upcast.onnx"
    if args.backend == "gpu":
        try:
            from agent.model.tensorrt_runner import TensorRTRunner  # noqa: PLC0415

            cfg = _model_config(args, model_path, n_slots, ["tensorrt", "cuda", "cpu"])
            cfg = cfg.model_copy(update={"runtime": "tensorrt"})
            trt = TensorRTRunner(cfg, launcher=getattr(stats, "launcher", None))
            return trt, cfg, trt.provider
        except Exception as exc:  # no TensorRT here: ONNX Runtime with whatever provider it has
            print(f"note: TensorRT runner unavailable ({type(exc).__name__}: {exc}); using ONNX Runtime")
    from agent.model.onnx_runner import OnnxRunner  # noqa: PLC0415

    dyn = _dynamic_batch_copy(model_path, folder)
    providers = ["cpu"] if args.backend == "cpu" else ["tensorrt", "cuda", "cpu"]
    cfg = _model_config(args, dyn or model_path, n_slots, providers)
    runner = OnnxRunner(cfg)
    note = " (symbolic-batch copy)" if dyn is not None else ""
    return runner, cfg, f"ONNX Runtime {runner.provider}{note}, {args.threads} thread(s)"


class _HostTimer:
    """The host path: host frames to the runner and to ``stats.compute`` (each uploads its own copy)."""

    def __init__(self, stats: StatsBackend, runner: ModelRunner, cfg: ModelConfig, squeezers: tuple[Squeeze, ...]):
        self._stats, self._runner, self._cfg, self._squeezers = stats, runner, cfg, squeezers

    def model(self, img: U8) -> ModelOutput:
        return self._runner.infer([img])[0]

    def stats(self, img: U8, key: str) -> FrameStats:
        return self._stats.compute(img, key=key)

    def squeeze_pass(self, img: U8) -> None:
        infer_with_squeezers(self._runner, [img], self._cfg.preprocess, self._squeezers)

    def close(self) -> None:
        return None


class _ZeroCopyTimer:
    """The zero-copy path (agent.gpu_measure): ``model`` uploads the frame once and runs the
    engine from the device buffer; ``stats`` runs the statistics kernel on that same buffer."""

    def __init__(self, stats: StatsBackend, runner: ModelRunner, squeezers: tuple[Squeeze, ...]) -> None:
        from agent.model.tensorrt_runner import TensorRTRunner  # noqa: PLC0415
        from agent.stats.cuda import CudaStats  # noqa: PLC0415

        assert isinstance(stats, CudaStats) and isinstance(runner, TensorRTRunner)
        self._stats, self._runner, self._squeezers = stats, runner, squeezers
        self._uploader = FrameUploader(stats.launcher)
        self._frames: list[DeviceFrame] = []

    def model(self, img: U8) -> ModelOutput:
        self._frames = self._uploader.upload([img])
        return self._runner.infer_device(self._frames).outputs[0]

    def stats(self, img: U8, key: str) -> FrameStats:
        f = self._frames[0]  # the frame model() uploaded: no second copy
        return self._stats.compute_device(f.ptr, f.pitch, f.width, f.height, key=key)

    def squeeze_pass(self, img: U8) -> None:
        self._runner.infer_device(self._uploader.upload([img]), self._squeezers)

    def close(self) -> None:
        self._uploader.close()


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; returns the exit code."""
    if args.backend == "gpu":
        reason = cuda_unavailable_reason()
        if reason is not None:
            print(f"no GPU: {reason}; nothing to measure for --backend gpu")
            return 0
    video = Path(args.video) if args.video else shared_test_data() / "videos" / "opencv_vtest.avi"
    frames = _read_frames(video, args.calib + args.frames)
    if len(frames) < args.calib + 20:
        print(f"need at least {args.calib + 20} frames from {video}, got {len(frames)}", file=sys.stderr)
        return 2
    cal_frames, eval_frames = frames[: args.calib], frames[args.calib :]
    squeezers: tuple[Squeeze, ...] = parse_squeezers(args.squeeze)
    cv2.setNumThreads(args.threads)
    stats_cfg = StatsConfig(backend="cuda" if args.backend == "gpu" else "cpu")
    stats: StatsBackend = create_backend(stats_cfg)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        runner, cfg, runtime = _open_runner(args, Path(tmp), 1 + len(squeezers), stats)
        runner.warmup()
        path = plan_measuring(stats, runner, stats_cfg, cfg)  # the daemon's choice, for the same objects
        if args.backend == "gpu":
            print(path.describe())
        timer: _HostTimer | _ZeroCopyTimer = (
            _ZeroCopyTimer(stats, runner, squeezers) if path.zero_copy else _HostTimer(stats, runner, cfg, squeezers)
        )
        cal = Calibrator(CalibrationConfig(frames=len(cal_frames)), grid=(4, 4), camera_id="bench")
        for img in cal_frames:
            cal.update(stats.compute(img, key="cal"), runner.infer([img])[0])
        guard = Guard(cal.build(model_sha256=runner.info.sha256))
        for img in eval_frames[:5]:  # warm every path
            timer.squeeze_pass(img)
        rows: dict[str, list[float]] = {k: [] for k in ("model", "stats", "score", "squeeze_pass")}
        decisions: dict[str, int] = {}
        for seq, img in enumerate(eval_frames):
            frame = Frame(img, "bench", seq, time.time(), time.monotonic())
            t0 = time.perf_counter()
            out = timer.model(img)
            t1 = time.perf_counter()
            st = timer.stats(img, "eval")
            t2 = time.perf_counter()
            verdict = guard.update(frame, st, out)
            t3 = time.perf_counter()
            timer.squeeze_pass(img)
            t4 = time.perf_counter()
            for key, ms in (("model", t1 - t0), ("stats", t2 - t1), ("score", t3 - t2), ("squeeze_pass", t4 - t3)):
                rows[key].append(ms * 1e3)
            decisions[verdict.decision.name] = decisions.get(verdict.decision.name, 0) + 1
        timer.close()
    guard_ms = [a + b for a, b in zip(rows["stats"], rows["score"], strict=True)]
    variants = {
        "model": rows["model"],
        "guard (stats+scoring)": guard_ms,
        "  stats": rows["stats"],
        "  scoring": rows["score"],
        "model+guard": [m + g for m, g in zip(rows["model"], guard_ms, strict=True)],
        f"model+squeeze ({1 + len(squeezers)} slots)": rows["squeeze_pass"],
        "model+squeeze+guard": [s + g for s, g in zip(rows["squeeze_pass"], guard_ms, strict=True)],
    }
    h, w = eval_frames[0].shape[:2]
    print(
        f"bench_pipeline --backend {args.backend}: {video.name}, calibrated on {len(cal_frames)} frames, "
        f"timed on {len(eval_frames)} held-out frames ({w}x{h})"
    )
    names = ", ".join(s.name for s in squeezers) or "none"
    print(f"model: {Path(cfg.path or '').name} via {runtime}; stats: {stats.name}; squeezers: {names}")
    print(f"{'variant':<30} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'frames/s':>9}")
    report: dict[str, Any] = {
        "backend": args.backend,
        "runtime": runtime,
        "stats": stats.name,
        "measuring_path": "zero-copy" if path.zero_copy else "host",
        "measuring_reason": path.reason,
        "variants": {},
    }
    for name, values in variants.items():
        mean = statistics.fmean(values)
        p50, p99 = _pct(values, 50), _pct(values, 99)
        print(f"{name:<30} {p50:9.3f} {p99:9.3f} {mean:9.3f} {1e3 / mean:9.1f}")
        report["variants"][name.strip()] = {"p50_ms": p50, "p99_ms": p99, "mean_ms": mean, "fps": 1e3 / mean}
    guard_ratio = _pct(guard_ms, 50) / _pct(rows["model"], 50)
    squeeze_ratio = _pct(rows["squeeze_pass"], 50) / _pct(rows["model"], 50)
    ok_guard, ok_squeeze = guard_ratio <= GUARD_TARGET, squeeze_ratio <= SQUEEZE_TARGET
    print(
        f"guard overhead ratio (p50 stats+scoring / p50 model): {guard_ratio:.3f} "
        f"(target <= {GUARD_TARGET:.2f}: {'met' if ok_guard else 'NOT met'})"
    )
    print(
        f"squeezing cost (p50 batched pass with {len(squeezers)} squeezed copies / p50 model): {squeeze_ratio:.2f} "
        f"(target <= {SQUEEZE_TARGET:.1f}, i.e. at most one extra pass: {'met' if ok_squeeze else 'NOT met'})"
    )
    print(f"verdicts on held-out frames: {decisions}")
    report.update(guard_overhead_ratio=guard_ratio, squeeze_cost_ratio=squeeze_ratio, decisions=decisions)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--model", help="ONNX classifier (default: SqueezeNet 1.0 fp32 from the test data)")
    parser.add_argument(
        "--size", type=int, nargs=2, default=(224, 224), metavar=("W", "H"), help="input size of --model"
    )
    parser.add_argument("--video", help="video file (default: opencv_vtest.avi from the test data)")
    parser.add_argument("--calib", type=int, default=300, help="frames used to calibrate the guard")
    parser.add_argument("--frames", type=int, default=200, help="held-out frames timed")
    parser.add_argument("--squeeze", default="bits:5,median:3", help="squeezers, e.g. 'bits:5,median:3' ('' = none)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for ONNX Runtime and OpenCV")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
