"""The zero-copy measuring stage: statistics and model from one upload of each frame, on one stream.

`GpuMeasurer` has the contract of `agent.pipeline.Measurer` (``measure(frames) -> (measured,
bad)``, same per-stage timings, same bad-frame handling) but never hands the model a host
frame: each batch is uploaded once (:class:`agent.gpu.preprocess.FrameUploader` on the
statistics backend's launcher), the statistics kernel reads the device buffers
(``CudaStats.compute_device``, per camera key) and the TensorRT runner preprocesses the same
buffers straight into its input binding (``TensorRTRunner.infer_device``), with the
feature-squeezing copies as extra slots of the same batched engine calls. Everything is queued
on the launcher's one CUDA stream, so the only host<->device traffic per frame is the frame
itself and the small results.

It is used when `choose_measuring_path` says so: statistics backend ``cuda``, a TensorRT runner
built on the *same* launcher (``load_model(cfg, launcher=stats.launcher)``), and preprocessing
the GPU kernel implements. `build_measurer` makes that choice for the daemon and logs it once.

Not yet run on a GPU or against a real TensorRT (docs/tensorrt.md, "What has NOT run").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.errors import FrameError
from agent.frame import Frame
from agent.gpu.preprocess import unsupported_reason
from agent.model.config import ModelConfig
from agent.model.factory import effective_preprocess
from agent.model.types import ModelRunner
from agent.pipeline import Measured, Measurer, ModelResult, infer_isolating
from agent.scoring.adversarial import FeatureSqueezer, squeeze_scores
from agent.stats.config import StatsConfig
from agent.stats.cuda import check_frame
from agent.stats.factory import backend_note
from agent.stats.types import FrameStats, StatsBackend

if TYPE_CHECKING:
    from agent.model.tensorrt_runner import SqueezedOutputs, TensorRTRunner
    from agent.stats.cuda import CudaStats

__all__ = [
    "GpuMeasurer",
    "MeasuringPath",
    "assemble",
    "build_measurer",
    "choose_measuring_path",
    "model_results",
    "plan_measuring",
    "split_frames",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MeasuringPath:
    """Which measuring stage runs, and why (one log line at start-up)."""

    zero_copy: bool
    reason: str

    def describe(self) -> str:
        """E.g. ``measuring: host path (stats backend cpu: configured)``."""
        kind = "zero-copy GPU path" if self.zero_copy else "host path"
        return f"measuring: {kind} ({self.reason})"


def choose_measuring_path(
    *,
    stats_backend: str,
    stats_note: str | None,
    model_runtime: str | None,
    shares_launcher: bool,
    preprocess_reason: str | None,
) -> MeasuringPath:
    """The measuring path for these facts (pure: every input is a plain value).

    ``stats_backend``: the statistics backend's name (``cpu``/``cuda``); ``stats_note``: why it
    is that backend (e.g. ``configured`` or the CUDA probe's reason); ``model_runtime``:
    ``model.runtime`` of the loaded model, None when the model is disabled; ``shares_launcher``:
    the runner runs on the statistics backend's launcher; ``preprocess_reason``:
    ``agent.gpu.preprocess.unsupported_reason`` of the model's preprocessing.
    """
    if stats_backend != "cuda":
        note = f": {stats_note}" if stats_note else ""
        return MeasuringPath(False, f"stats backend {stats_backend}{note}")
    if model_runtime is None:
        return MeasuringPath(False, "model disabled: the statistics kernel alone needs no shared buffer")
    if model_runtime != "tensorrt":
        return MeasuringPath(False, f"model runtime {model_runtime}: the zero-copy path needs model.runtime tensorrt")
    if not shares_launcher:
        return MeasuringPath(False, "TensorRT runner and cuda stats run on different CUDA launchers")
    if preprocess_reason is not None:
        return MeasuringPath(False, f"no GPU preprocessing: {preprocess_reason}")
    return MeasuringPath(True, "cuda stats + TensorRT on one stream")


def split_frames(frames: Sequence[Frame]) -> tuple[list[Frame], list[tuple[Frame, FrameError]]]:
    """Frames the GPU path can take, and the rejected ones with the FrameError the host path gives."""
    ok: list[Frame] = []
    bad: list[tuple[Frame, FrameError]] = []
    for frame in frames:
        try:
            check_frame(frame.image)
        except FrameError as exc:
            bad.append((frame, exc))
            continue
        ok.append(frame)
    return ok, bad


def model_results(result: SqueezedOutputs, *, squeezing: bool) -> list[ModelResult]:
    """Each frame's output of one batched engine call and, when ``squeezing``, its squeezing
    distance computed exactly as `FeatureSqueezer` does (`agent.scoring.adversarial.squeeze_scores`)."""
    squeeze: list[float | None] = (
        list(squeeze_scores(result.outputs, result.squeezed)) if squeezing else [None] * len(result.outputs)
    )
    return list(zip(result.outputs, squeeze, strict=True))


def assemble(
    frames: Sequence[Frame],
    stats: Sequence[FrameStats],
    stats_ms: Sequence[float],
    results: Sequence[ModelResult] | None,
    model_ms: float,
    *,
    errors: Sequence[str | None] | None = None,
) -> list[Measured]:
    """`Measured` records from one batch: statistics, each frame's model output and squeezing
    distance (`model_results`; None without a model) and why a frame's output is unusable
    (`infer_isolating`'s errors; None: all usable)."""
    n = len(frames)
    if len(stats) != n or len(stats_ms) != n:
        raise ValueError(f"need one FrameStats and one time per frame ({n}), got {len(stats)} and {len(stats_ms)}")
    results = [(None, None)] * n if results is None else results
    errors = [None] * n if errors is None else errors
    if len(results) != n or len(errors) != n:
        raise ValueError(f"need one model output per frame ({n}), got {len(results)} and {len(errors)} errors")
    return [
        Measured(frame, st, out, {"stats": st_ms, "model": model_ms}, sq, err)
        for frame, st, st_ms, (out, sq), err in zip(frames, stats, stats_ms, results, errors, strict=True)
    ]


class GpuMeasurer(Measurer):
    """Zero-copy measuring on the GPU (module docstring); a `Measurer` for the worker thread.

    ``model``: a TensorRT runner on ``stats.launcher`` with GPU preprocessing, or None
    (statistics only, from the device buffers). ``squeezer``: when feature squeezing is on,
    its squeezers become extra slots of the same engine calls; the squeezer's own model call
    is not used. Timings per frame, as `Measurer`: ``model`` is the frame's share of the batch
    upload (the model needs it anyway) plus the batch's engine call (preprocessing, engine,
    decoding) divided by its frames; ``stats`` the statistics kernel on the uploaded buffer,
    i.e. what the guard adds. Without a model the upload is charged to ``stats``.
    """

    def __init__(
        self, stats: CudaStats, model: TensorRTRunner | None, squeezer: FeatureSqueezer | None = None
    ) -> None:
        from agent.gpu.preprocess import FrameUploader  # noqa: PLC0415 (kept with the GPU objects)

        if model is not None:
            if model.launcher is not stats.launcher:
                raise ValueError(
                    "GpuMeasurer needs the TensorRT runner on the statistics backend's launcher "
                    "(load_model(cfg, launcher=stats.launcher)), but they use different launchers"
                )
            if not model.gpu_preprocessing:
                raise ValueError(
                    f"GpuMeasurer needs GPU preprocessing, but: {unsupported_reason(model.cfg.preprocess)}"
                )
        super().__init__(stats, model, squeezer)
        self._cuda = stats
        self._trt = model
        self._squeezers = squeezer.squeezers if squeezer is not None else ()
        self._uploader = FrameUploader(stats.launcher)
        self._lock = threading.Lock()

    def measure(self, frames: list[Frame]) -> tuple[list[Measured], list[tuple[Frame, FrameError]]]:
        """Measure ``frames``; frames the statistics stage rejects come back in the second list."""
        good, bad = split_frames(frames)
        if not good:
            return [], bad
        with self._lock:
            t0 = time.perf_counter()
            self._cuda.launcher.make_current()
            dev = self._uploader.upload([f.image for f in good])
            upload_ms = (time.perf_counter() - t0) * 1e3 / len(good)
            kept: list[int] = []
            stats: list[FrameStats] = []
            stats_ms: list[float] = []
            for i, (frame, d) in enumerate(zip(good, dev, strict=True)):
                t0 = time.perf_counter()
                try:
                    st = self._cuda.compute_device(d.ptr, d.pitch, d.width, d.height, key=frame.camera_id)
                except FrameError as exc:
                    bad.append((frame, exc))
                    continue
                kept.append(i)
                stats.append(st)
                stats_ms.append((time.perf_counter() - t0) * 1e3 + (0.0 if self._trt is not None else upload_ms))
            results: list[ModelResult] | None = None
            errors: list[str | None] | None = None
            model_ms = 0.0
            trt = self._trt
            if trt is not None and kept:
                t0 = time.perf_counter()
                on_device = [dev[i] for i in kept]
                results, errors = infer_isolating(
                    lambda idx: model_results(trt.infer_device([on_device[i] for i in idx], self._squeezers),
                                              squeezing=bool(self._squeezers)),
                    len(on_device),
                )
                # One batched call: each frame is charged its share of the batch's time.
                model_ms = upload_ms + (time.perf_counter() - t0) * 1e3 / len(kept)
        measured = assemble([good[i] for i in kept], stats, stats_ms, results, model_ms, errors=errors)
        return measured, bad

    def close(self) -> None:
        """Free the upload buffers (the backend, runner and launcher belong to the caller)."""
        with self._lock:
            self._uploader.close()


def plan_measuring(stats: StatsBackend, model: ModelRunner | None, stats_cfg: StatsConfig,
                   model_cfg: ModelConfig) -> MeasuringPath:
    """`choose_measuring_path` for these objects (reads their facts; no GPU work)."""
    launcher = getattr(stats, "launcher", None)
    shares = launcher is not None and getattr(model, "launcher", None) is launcher
    # the runner preprocesses on the GPU exactly when the kernel implements its (resolved) config
    pre_reason = unsupported_reason(effective_preprocess(model_cfg)) if model is not None else None
    return choose_measuring_path(
        stats_backend=stats.name,
        stats_note=backend_note(stats, stats_cfg),
        model_runtime=model_cfg.runtime if model is not None else None,
        shares_launcher=shares,
        preprocess_reason=pre_reason,
    )


def build_measurer(
    stats: StatsBackend,
    model: ModelRunner | None,
    squeezer: FeatureSqueezer | None,
    stats_cfg: StatsConfig,
    model_cfg: ModelConfig,
) -> Measurer:
    """The measuring stage for the daemon: `GpuMeasurer` when the zero-copy path applies, else
    `Measurer`; logs the path and why, once (INFO)."""
    path = plan_measuring(stats, model, stats_cfg, model_cfg)
    logger.info("%s", path.describe())
    if not path.zero_copy:
        return Measurer(stats, model, squeezer)
    from agent.model.tensorrt_runner import TensorRTRunner  # noqa: PLC0415 (TensorRT imported lazily inside)
    from agent.stats.cuda import CudaStats  # noqa: PLC0415

    if not isinstance(stats, CudaStats) or not isinstance(model, TensorRTRunner):
        raise TypeError(f"zero-copy path needs CudaStats and TensorRTRunner, got {type(stats)} and {type(model)}")
    return GpuMeasurer(stats, model, squeezer)

