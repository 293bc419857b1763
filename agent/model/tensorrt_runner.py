"""Native TensorRT runner (``model.runtime: tensorrt``): engine build and cache, name-based I/O.

Written against NVIDIA's documented Python API and samples (docs/tensorrt.md has the links);
TensorRT is imported lazily and never a dependency of this package. What it does:

1. **Engine**: the ONNX file is parsed with ``OnnxParser`` into a network from
   ``Builder.create_network(0)`` (explicit batch is the only mode since TensorRT 10; strongly
   typed is the only mode in TensorRT 11, where the creation flag is ignored). The builder
   config gets a workspace limit (``set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)``), one
   optimization profile (batch min 1, opt ``batch_size``, max ``batch_size * 4``) when the
   input has dynamic dimensions, and the precision of :func:`agent.model.trt_build.plan_precision`: TensorRT 10 sets
   ``BuilderFlag.FP16`` when ``trt_fp16`` is on and the GPU has fast FP16; TensorRT 11 removed
   that flag (strong typing: precision comes from the ONNX types), so an FP16 engine there
   needs an FP16 ONNX (e.g. ModelOpt AutoCast) and the runner says so in the log. The build
   logs progress (``IProgressMonitor`` when available, and a heartbeat line every 15 s).
2. **Cache**: :mod:`agent.model.engine_cache` keyed by ONNX sha256, GPU name, compute
   capability, TensorRT version, precision, batch profile, input size and workspace; stale or
   corrupt engines are discarded and rebuilt once.
3. **Inference** with the name-based API (``set_input_shape``, ``set_tensor_address``,
   ``execute_async_v3``) on the launcher's CUDA stream (``Launcher.stream_handle``): uploads,
   preprocessing, the engine and the output copy are ordered on that one stream, and the
   host waits once per engine call, after the output copy. Device buffers for every
   I/O tensor allocated once at the maximum batch, frames uploaded once, preprocessing on the
   GPU straight into the input binding (agent.gpu.preprocess; CPU preprocessing when the
   config needs an interpolation the kernel lacks), only the selected output copied back.
   Feature-squeezing companions (agent.gpu.squeeze) are extra slots of the same batch.
   Outputs are decoded by agent.model.decode, exactly as for ONNX Runtime.

Nothing here has run against a real TensorRT yet (none is installable on the development and
CI machines); the control flow that does not need TensorRT is tested everywhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import BackendUnavailable, ModelError
from agent.gpu.launcher import Launcher, open_launcher
from agent.gpu.preprocess import DeviceFrame, FrameUploader, GpuPreprocessor, unsupported_reason
from agent.gpu.squeeze import Squeeze, slot_layout, split_by_variant, squeeze_canvas
from agent.model.config import ModelConfig
from agent.model.decode import classifier_outputs, detector_classes, detector_outputs
from agent.model.engine_cache import EngineCache, default_engine_dir
from agent.model.labels import resolve_labels
from agent.model.onnx_runner import file_sha256
from agent.model.preprocess import Letterbox, plan_resize, preprocess, resize_frame
from agent.model.trt_build import (
    DEFAULT_WORKSPACE_MIB,
    build_serialized_engine,
    engine_key,
    has_fast_fp16,
    import_tensorrt,
    make_logger,
    plan_precision,
    profile_shapes,
)
from agent.model.types import ModelInfo, ModelOutput

__all__ = ["SqueezedOutputs", "TensorRTRunner"]

logger = logging.getLogger(__name__)

#: One batch slot: (frame index, squeezer or None), see agent.gpu.squeeze.slot_layout.
Slot = tuple[int, Squeeze | None]


@dataclass(frozen=True, slots=True)
class SqueezedOutputs:
    """Outputs of one batched call: the plain frames and each squeezer's copies, per frame."""

    outputs: list[ModelOutput]
    squeezed: dict[str, list[ModelOutput]]


class TensorRTRunner:
    """Runs an ONNX model as a cached TensorRT engine on BGR uint8 frames (implements ``ModelRunner``).

    ``launcher``: an open :class:`agent.gpu.Launcher` to share (its context, stream and
    device buffers, e.g. the statistics backend's: then frames uploaded for the statistics
    kernel feed :meth:`infer_device` directly); by default one is opened on ``device``.
    A shared launcher stays open when the runner closes (its owner closes it).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        labels: Sequence[str] | None = None,
        *,
        launcher: Launcher | None = None,
        device: int = 0,
        workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    ) -> None:
        trt = import_tensorrt()  # first: without TensorRT nothing else matters
        self._trt = trt
        if cfg.path is None:
            raise ModelError("TensorRTRunner needs model.path; use agent.model.factory.load_model for the default")
        path = cfg.path.expanduser()
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "not found"
            raise ModelError(f"model file {what}: {path} (set model.path to an existing .onnx file)")
        self.cfg = cfg
        try:
            sha = file_sha256(path)
        except OSError as exc:
            raise ModelError(f"cannot read model file {path}: {exc}") from exc
        self._lock = threading.Lock()  # one engine call at a time (one context, one set of buffers)
        self._own_gpu = launcher is None
        self._gpu: Launcher = launcher if launcher is not None else open_launcher("cuda-python", device)
        try:
            self._setup(trt, path, sha, labels, workspace_mib)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ set-up
    def _setup(self, trt: Any, path: Path, sha: str, labels: Sequence[str] | None, workspace_mib: int) -> None:
        cfg, dev = self.cfg, self._gpu.device
        self._gpu.make_current()
        plan = plan_precision(hasattr(trt.BuilderFlag, "FP16"), cfg.trt_fp16, has_fast_fp16(dev.major, dev.minor))
        if plan.note:
            logger.warning("%s", plan.note)
        key = engine_key(cfg, sha, dev, trt_version=str(trt.__version__), plan=plan, workspace_mib=workspace_mib)
        self._trt_logger = make_logger(trt)  # must outlive the runtime and engine
        self._runtime = trt.Runtime(self._trt_logger)
        loaded = EngineCache(default_engine_dir(cfg.trt_cache_dir)).load_or_build(
            key,
            build=lambda: build_serialized_engine(
                trt, self._trt_logger, path, cfg, plan=plan, workspace_mib=workspace_mib
            ),
            deserialize=self._runtime.deserialize_cuda_engine,
        )
        self._engine = engine = loaded.engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise ModelError(f"TensorRT could not create an execution context for {path} (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1:
            raise ModelError(f"model {path} must have exactly one input (an image batch), it has {inputs}")
        self._input = inputs[0]
        want = cfg.output.name or outputs[0]  # output.concat is refused for this runtime (ModelConfig)
        if want not in outputs:
            raise ModelError(f"model {path} has no output {want!r}; its outputs are {outputs}")
        self._output = want
        shape = tuple(int(d) for d in engine.get_tensor_shape(self._input))
        self._check_input(path, shape, np.dtype(trt.nptype(engine.get_tensor_dtype(self._input))))
        if shape[0] >= 0:
            self._fixed: int | None = shape[0]
            self._max_batch = shape[0]
        else:
            self._fixed = None
            self._max_batch = int(engine.get_tensor_profile_shape(self._input, 0)[2][0])
        self._in_shape = profile_shapes(shape, cfg.preprocess, (1, 1, self._max_batch))[2]
        self._allocate(names)
        self._pre: GpuPreprocessor | None = None
        reason = unsupported_reason(cfg.preprocess)
        if reason is None:
            self._pre = GpuPreprocessor(cfg.preprocess, self._gpu)
        else:
            logger.info("preprocessing on the CPU: %s", reason)
        self._uploader = FrameUploader(self._gpu)
        self.labels: tuple[str, ...] = resolve_labels(cfg.labels, labels, self._num_classes(), path)
        origin = "cached" if loaded.from_cache else f"built in {loaded.build_s:.0f} s"
        self.provider = f"TensorRT {trt.__version__} ({plan.precision}, {origin})"
        self.info = ModelInfo(
            path=str(path),
            sha256=sha,
            kind=cfg.kind,
            input_name=self._input,
            input_size_wh=cfg.preprocess.size,
            provider=self.provider,
            num_classes=self._num_classes(),
            labels=self.labels,
        )
        logger.info("model runtime: %s, max batch %d, engine %s", self.provider, self._max_batch, loaded.path.name)

    def _check_input(self, path: Path, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        pp = self.cfg.preprocess
        if len(shape) != 4:
            raise ModelError(f"model {path} input {self._input!r} must be a 4-D image batch, got shape {list(shape)}")
        c, h, w = (shape[1], shape[2], shape[3]) if pp.layout == "nchw" else (shape[3], shape[1], shape[2])
        if c not in (3, -1):
            raise ModelError(
                f"model {path} input {self._input!r} has shape {list(shape)}: with preprocess.layout {pp.layout} "
                f"the channel dimension is {c}, expected 3 (wrong layout?)"
            )
        tw, th = pp.size
        if w not in (tw, -1) or h not in (th, -1):
            raise ModelError(f"model input {self._input!r} expects {w}x{h} but preprocess.size is {tw}x{th}")
        if dtype != np.dtype(pp.dtype):
            raise ModelError(f"model input {self._input!r} is {dtype} but preprocess.dtype is {pp.dtype}")

    def _allocate(self, names: list[str]) -> None:
        """Device buffers for every I/O tensor at the maximum batch, bound once by name."""
        trt, ctx, engine = self._trt, self._context, self._engine
        if not ctx.set_input_shape(self._input, self._in_shape):
            raise ModelError(f"TensorRT rejected input shape {self._in_shape} for {self._input!r}")
        self._bufs: dict[str, int] = {}
        for name in names:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ModelError(f"tensor {name!r} has a data-dependent shape {list(shape)}; not supported")
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            nbytes = max(int(np.prod(shape)), 1) * dtype.itemsize
            self._bufs[name] = self._gpu.alloc(nbytes)
            if not ctx.set_tensor_address(name, self._bufs[name]):
                raise ModelError(f"TensorRT rejected the buffer address of tensor {name!r}")
            if name == self._output:
                self._out_shape, self._out_dtype = shape, dtype
        if self._out_shape[0] != self._max_batch:
            raise ModelError(f"output {self._output!r} has shape {list(self._out_shape)}: expected a batch dimension")
        pinned = self._gpu.alloc_host(int(np.prod(self._out_shape)) * self._out_dtype.itemsize)
        self._pinned_out = pinned
        self._out_host = pinned.view(self._out_dtype).reshape(self._out_shape)

    def _num_classes(self) -> int | None:
        dims = self._out_shape[1:]
        if self.cfg.kind == "detector":
            return detector_classes(dims, self.cfg.output)
        return int(np.prod(dims)) if dims else None

    # ------------------------------------------------------------------ properties
    @property
    def launcher(self) -> Launcher:
        """The launcher (device, context, stream) the engine runs on."""
        return self._gpu

    @property
    def gpu_preprocessing(self) -> bool:
        """True when preprocessing runs on the GPU (then :meth:`infer_device` is available)."""
        return self._pre is not None

    # ------------------------------------------------------------------ inference
    def _execute(self, n: int) -> npt.NDArray[np.generic]:
        """Run the engine on the first ``n`` rows of the input binding; returns those output rows."""
        rows = self._fixed or n
        if rows != self._in_shape[0]:
            self._in_shape = (rows, *self._in_shape[1:])
            if not self._context.set_input_shape(self._input, self._in_shape):
                raise ModelError(f"TensorRT rejected input shape {self._in_shape} for {self._input!r}")
        # Enqueued on the launcher's stream, after the uploads and the preprocessing kernel that
        # wrote the input binding; the output copy follows on the same stream, so the one
        # synchronize below is the only wait of the call.
        if not self._context.execute_async_v3(self._gpu.stream_handle):
            raise ModelError(f"TensorRT inference failed for {self.info.path} (see the TensorRT errors logged)")
        out = self._out_host[:rows]
        self._gpu.copy_dtoh(out, self._bufs[self._output])
        self._gpu.synchronize()
        return np.array(out[:n])  # a copy: the pinned buffer is reused by the next call

    def _run(
        self, frame_geos: list[Letterbox], squeezers: Sequence[Squeeze], fill: Callable[[list[Slot]], object]
    ) -> SqueezedOutputs:
        """Every slot of ``slot_layout`` through the engine in chunks of the max batch, then decoded.

        ``fill(chunk)`` writes the chunk's model inputs into the input binding (slot k at row k).
        """
        layout = slot_layout(len(frame_geos), squeezers)
        raws = []
        for start in range(0, len(layout), self._max_batch):
            chunk = layout[start : start + self._max_batch]
            fill(chunk)
            raws.append(self._execute(len(chunk)))
        raw = np.concatenate(raws)
        plain, squeezed = split_by_variant(list(range(len(layout))), len(frame_geos), squeezers)
        return SqueezedOutputs(
            self._decode(raw[plain], frame_geos),
            {name: self._decode(raw[rows], frame_geos) for name, rows in squeezed.items()},
        )

    def _decode(self, raw: npt.NDArray[np.generic], geos: list[Letterbox]) -> list[ModelOutput]:
        if self.cfg.kind == "detector":
            return detector_outputs(raw, self.cfg.preprocess.size, geos, self.cfg.output, self.labels)
        return classifier_outputs(raw, self.cfg.output, self.labels)

    def infer_device(self, frames: Sequence[DeviceFrame], squeezers: Sequence[Squeeze] = ()) -> SqueezedOutputs:
        """Frames already on the device (e.g. shared with the statistics kernel), plus squeezed slots.

        Frames written on this runner's launcher stream need no synchronization (the work is
        ordered on it); a producer on another stream must synchronize it before the call.
        """
        with self._lock:
            pre = self._pre
            if pre is None:
                raise BackendUnavailable(f"GPU preprocessing is off: {unsupported_reason(self.cfg.preprocess)}")
            self._gpu.make_current()
            geos = [plan_resize((f.width, f.height), self.cfg.preprocess) for f in frames]
            return self._run(geos, squeezers, lambda chunk: pre.run(frames, self._bufs[self._input], slots=chunk))

    def infer_squeezed(self, images: list[npt.NDArray[np.uint8]], squeezers: Sequence[Squeeze]) -> SqueezedOutputs:
        """Host frames: uploaded once, preprocessed and squeezed on the GPU, batched engine calls."""
        with self._lock:
            self._gpu.make_current()
            pre = self._pre
            if pre is not None:
                frames = self._uploader.upload(images)
                geos = [plan_resize((f.width, f.height), self.cfg.preprocess) for f in frames]
                return self._run(geos, squeezers, lambda chunk: pre.run(frames, self._bufs[self._input], slots=chunk))
            # CPU preprocessing (interpolation the kernel lacks): same slots, one copy per chunk
            pp = self.cfg.preprocess
            canvases = [resize_frame(img, pp) for img in images]

            def fill(chunk: list[Slot]) -> None:
                slot_imgs = [canvases[i][0] if sq is None else squeeze_canvas(canvases[i][0], sq) for i, sq in chunk]
                self._gpu.copy_htod(self._bufs[self._input], preprocess(slot_imgs, pp))

            return self._run([geo for _, geo in canvases], squeezers, fill)

    def infer(self, images: list[npt.NDArray[np.uint8]]) -> list[ModelOutput]:
        """Preprocess, run and decode a batch of BGR uint8 frames (any sizes)."""
        return self.infer_squeezed(images, ()).outputs

    def warmup(self) -> None:
        """One dummy inference on a mid-grey frame (kernel loading, first-run allocations)."""
        w, h = self.cfg.preprocess.size
        self.infer([np.full((h, w, 3), 128, dtype=np.uint8)])

    def close(self) -> None:
        """Release the engine, buffers and (when it opened it) the launcher."""
        for name in ("_pre", "_uploader"):
            obj = getattr(self, name, None)
            if obj is not None:
                obj.close()
                setattr(self, name, None)
        for attr in ("_context", "_engine", "_runtime"):  # TensorRT frees its memory on release
            self.__dict__.pop(attr, None)
        if self._own_gpu:
            self._gpu.close()  # frees every device and pinned buffer this launcher made
