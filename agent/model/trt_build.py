"""Building TensorRT engines from ONNX: precision plan, optimization profile, cache key, progress.

The build follows NVIDIA's ONNX sample flow (Builder -> create_network(0) -> OnnxParser ->
builder config with a workspace limit, optimization profile and precision ->
build_serialized_network) and is version-aware:

- TensorRT 10 (JetPack 6): explicit batch is the only mode (the EXPLICIT_BATCH creation flag is
  ignored), networks are weakly typed by default and ``BuilderFlag.FP16`` lets the builder pick
  FP16 kernels. We set it when ``model.trt_fp16`` is on and the GPU has fast FP16
  (:func:`has_fast_fp16`, from the compute capability: ``Builder.platform_has_fast_fp16`` is
  deprecated in 10.x and gone in 11).
- TensorRT 11: strongly typed networks only (the STRONGLY_TYPED flag is accepted and ignored),
  ``BuilderFlag.FP16`` and ``platform_has_fast_fp16`` are removed. Precision comes from the
  ONNX graph's own types, so an FP16 engine needs an FP16 model (NVIDIA's route: ModelOpt
  AutoCast before the build). We detect the version by the flag's presence, build the model as
  typed, and log how to get FP16 when ``trt_fp16`` asked for it.

TensorRT is imported lazily; nothing here has run against a real TensorRT yet.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import BackendUnavailable, ModelError
from agent.gpu.launcher import DeviceInfo
from agent.model.config import ModelConfig, PreprocessConfig
from agent.model.engine_cache import EngineKey

__all__ = [
    "DEFAULT_WORKSPACE_MIB",
    "HEARTBEAT_S",
    "MAX_BATCH_FACTOR",
    "TRT_MISSING",
    "PrecisionPlan",
    "batch_profile",
    "build_serialized_engine",
    "engine_key",
    "has_fast_fp16",
    "import_tensorrt",
    "make_logger",
    "plan_precision",
    "profile_shapes",
]

logger = logging.getLogger(__name__)

TRT_MISSING = (
    "TensorRT is not installed: on Jetson it comes with JetPack 6 (python3-libnvinfer; a virtualenv needs "
    "--system-site-packages to see it); on x86 install it from NVIDIA (pip install tensorrt from NVIDIA's "
    "package index, or NVIDIA's deb/tar packages) or use runtime: onnxruntime"
)
#: Optimization profile: max batch = batch_size * MAX_BATCH_FACTOR (room for squeezing slots).
MAX_BATCH_FACTOR = 4
DEFAULT_WORKSPACE_MIB = 1024
HEARTBEAT_S = 15.0


def import_tensorrt() -> Any:
    """``import tensorrt``, or BackendUnavailable saying where TensorRT comes from."""
    try:
        import tensorrt as trt  # noqa: PLC0415 (optional, provided by JetPack / NVIDIA installers)
    except ImportError as exc:
        raise BackendUnavailable(TRT_MISSING) from exc
    return trt


def has_fast_fp16(major: int, minor: int) -> bool:
    """Native-rate FP16 arithmetic: compute capability 5.3, 6.0, 6.2 and 7.0+ (not 6.1 or older Maxwell)."""
    return (major, minor) in ((5, 3), (6, 0), (6, 2)) or major >= 7


@dataclass(frozen=True, slots=True)
class PrecisionPlan:
    """How the engine's precision is chosen: ``precision`` goes into the cache key."""

    precision: str  # fp32 | fp16 | typed
    fp16_flag: bool
    note: str | None = None


def plan_precision(has_fp16_flag: bool, want_fp16: bool, fast_fp16: bool) -> PrecisionPlan:
    """TensorRT 10 (``BuilderFlag.FP16`` exists): weak typing, FP16 when wanted and fast on this GPU.
    TensorRT 11 (no such flag): strongly typed, the ONNX graph's own types decide."""
    if not has_fp16_flag:
        note = (
            "TensorRT 11 has no FP16 builder flag (strongly typed networks only): the engine runs in the ONNX "
            "model's own precision; for FP16 give an FP16 model, e.g. python -m modelopt.onnx.autocast "
            "--onnx_path model.onnx --output_path model_fp16.onnx"
            if want_fp16
            else None
        )
        return PrecisionPlan("typed", False, note)
    if want_fp16 and fast_fp16:
        return PrecisionPlan("fp16", True)
    if want_fp16:
        return PrecisionPlan("fp32", False, "trt_fp16 is on but this GPU has no fast FP16: building an FP32 engine")
    return PrecisionPlan("fp32", False)


def batch_profile(cfg: ModelConfig) -> tuple[int, int, int]:
    """(min, opt, max) batch of the optimization profile."""
    return 1, cfg.batch_size, cfg.batch_size * MAX_BATCH_FACTOR


def profile_shapes(
    shape: Sequence[int], pp: PreprocessConfig, profile: tuple[int, int, int]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) input shapes: dynamic (-1) batch from ``profile``, dynamic H/W from ``pp.size``."""
    if len(shape) != 4:
        raise ModelError(f"the model input must be a 4-D image batch, got shape {list(shape)}")
    w, h = pp.size
    fixed = [3, h, w] if pp.layout == "nchw" else [h, w, 3]
    rest = tuple(int(d) if d >= 0 else fixed[i] for i, d in enumerate(shape[1:]))
    lo, opt, hi = (int(shape[0]),) * 3 if shape[0] >= 0 else profile
    return (lo, *rest), (opt, *rest), (hi, *rest)


def engine_key(
    cfg: ModelConfig, onnx_sha256: str, device: DeviceInfo, *, trt_version: str, plan: PrecisionPlan, workspace_mib: int
) -> EngineKey:
    """The cache key of the engine ``cfg`` asks for on ``device``."""
    return EngineKey(
        onnx_sha256=onnx_sha256,
        gpu_name=device.name,
        compute_capability=f"{device.major}.{device.minor}",
        trt_version=trt_version,
        precision=plan.precision,
        batch_profile=batch_profile(cfg),
        input_wh=cfg.preprocess.size,
        workspace_mib=workspace_mib,
    )


class _Heartbeat:
    """Logs 'still building' every ``interval`` s until stopped (the build is one blocking call)."""

    def __init__(self, what: str, interval: float = HEARTBEAT_S) -> None:
        self._what, self._interval = what, interval
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="trt-build-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            logger.info("still building the TensorRT engine for %s (%.0f s)", self._what, time.monotonic() - self._t0)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` forwarding to Python logging (the documented subclassing pattern)."""
    levels = {
        trt.ILogger.INTERNAL_ERROR: logging.CRITICAL,
        trt.ILogger.ERROR: logging.ERROR,
        trt.ILogger.WARNING: logging.WARNING,
        trt.ILogger.INFO: logging.DEBUG,  # TensorRT's INFO is chatty; ours stays readable
        trt.ILogger.VERBOSE: logging.DEBUG,
    }

    class _Logger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            logger.log(levels.get(severity, logging.INFO), "TensorRT: %s", msg)

    return _Logger()


def _make_progress_monitor(trt: Any) -> Any | None:
    """A ``trt.IProgressMonitor`` logging top-level build phases and step progress (None if absent)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Progress(trt.IProgressMonitor):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()  # TensorRT may call from several threads
            self._steps: dict[str, int] = {}
            self._last = 0.0

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                self._steps[phase_name] = num_steps
            if parent_phase is None:
                logger.info("TensorRT build: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            now = time.monotonic()
            with self._lock:
                due, total = now - self._last >= 5.0, self._steps.get(phase_name, 0)
                if due:
                    self._last = now
            if due:
                logger.info("TensorRT build: %s step %d/%d", phase_name, step + 1, total)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                self._steps.pop(phase_name, None)

    return _Progress()


def build_serialized_engine(
    trt: Any, trt_logger: Any, path: Path, cfg: ModelConfig, *, plan: PrecisionPlan, workspace_mib: int
) -> bytes:
    """Parse ``path`` and build a serialized engine (NVIDIA's ONNX sample flow)."""
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(path.read_bytes(), str(path)):  # the path lets the parser find external weights
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"TensorRT could not parse {path}: " + ("; ".join(errors) or "no error reported"))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in shape):
            dynamic = True
            lo, opt, hi = profile_shapes(shape, cfg.preprocess, batch_profile(cfg))
            profile.set_shape(tensor.name, lo, opt, hi)
    if dynamic:
        config.add_optimization_profile(profile)
    monitor = _make_progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    logger.info(
        "building a TensorRT %s engine for %s (%s); the first build takes minutes on a Jetson",
        trt.__version__, path.name, plan.precision,
    )  # fmt: skip
    with _Heartbeat(path.name):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT could not build an engine for {path} (see the TensorRT errors logged above)")
    data = bytes(serialized)
    # the progress monitor must outlive every TensorRT object that uses it: release those first
    del serialized, config, parser, network, builder
    del monitor
    return data
