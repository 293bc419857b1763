"""ONNX Runtime model runner: session, provider choice, input checks, batching, decoding.

onnxruntime is an optional dependency (extras ``onnxruntime`` or ``onnxruntime-gpu``, which are
mutually exclusive) and is imported only when a runner is created. Its execution providers and
their options come from :func:`agent.model.ort_gpu.gpu_providers` (TensorRT engine cache, CUDA
options, and the agent's CUDA stream when a launcher is shared).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import BackendUnavailable, ModelError
from agent.model.config import ModelConfig
from agent.model.decode import classifier_outputs, detector_classes, detector_outputs
from agent.model.labels import read_labels, resolve_labels
from agent.model.ort_gpu import ORT_PROVIDER_NAMES, gpu_providers
from agent.model.preprocess import preprocess_with_transforms
from agent.model.types import ModelInfo, ModelOutput

# ORT_PROVIDER_NAMES and read_labels are re-exported: callers imported them from here first.
__all__ = ["ORT_PROVIDER_NAMES", "OnnxRunner", "file_sha256", "import_onnxruntime", "read_labels"]

logger = logging.getLogger(__name__)

_SHORT = {v: k for k, v in ORT_PROVIDER_NAMES.items()}
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8"}
_NP_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}

# (requested providers, chosen provider) combinations already logged: the fallback is said once
# per process, not once per runner (tests and the calibrate/run pair create several runners).
_logged_choices: set[tuple[tuple[str, ...], str]] = set()


def import_onnxruntime() -> Any:
    """Import onnxruntime with telemetry off, or raise BackendUnavailable saying what to install."""
    # Must be set before the import: otherwise ORT writes a telemetry cache under ~/.cache.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        import onnxruntime as ort  # noqa: PLC0415 (optional dependency, imported when a runner is made)
    except ImportError as exc:
        raise BackendUnavailable(
            "onnxruntime is not installed: pip install 'edge-guard[onnxruntime]' "
            "(or 'edge-guard[onnxruntime-gpu]' for CUDA/TensorRT; install only one of the two)"
        ) from exc
    disable = getattr(ort, "disable_telemetry_events", None)
    if disable is not None:
        disable()
    return ort


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class OnnxRunner:
    """Runs an ONNX model with ONNX Runtime on BGR uint8 frames (implements ``ModelRunner``).

    ``cfg`` must name a model file (the factory resolves the embedded reference model);
    ``labels`` overrides ``cfg.labels`` (the reference model's labels come from its sidecar).
    ``device_id``/``stream``: the CUDA device and stream (``Launcher.stream_handle``) the GPU
    providers use, so ONNX Runtime computes on the agent's stream when a launcher is shared;
    ignored by the CPU provider.
    """

    def __init__(
        self, cfg: ModelConfig, labels: Sequence[str] | None = None, *, device_id: int = 0, stream: int | None = None
    ) -> None:
        if cfg.path is None:
            raise ModelError("OnnxRunner needs model.path; use agent.model.factory.load_model for the default")
        self.cfg = cfg
        path = cfg.path.expanduser()
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "not found"
            raise ModelError(f"model file {what}: {path} (set model.path to an existing .onnx file)")
        ort = import_onnxruntime()
        try:
            sha = file_sha256(path)
        except OSError as exc:
            raise ModelError(f"cannot read model file {path}: {exc}") from exc

        so = ort.SessionOptions()
        so.log_severity_level = 2  # warning and above from the C++ side
        so.intra_op_num_threads = cfg.threads
        so.inter_op_num_threads = 1
        available = list(ort.get_available_providers())
        entries = gpu_providers(cfg, available, device_id=device_id, stream=stream)
        try:
            self._session = ort.InferenceSession(str(path), sess_options=so, providers=entries)
        except Exception as exc:  # ORT raises its own InvalidProtobuf/Fail/... types
            raise ModelError(f"cannot load ONNX model {path}: {type(exc).__name__}: {exc}") from exc
        used = list(self._session.get_providers())
        self.provider = used[0] if used else "CPUExecutionProvider"
        self._log_provider(available)

        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise ModelError(f"model {path} must have exactly one input (an image batch), it has {names}")
        inp = inputs[0]
        self._input_name: str = inp.name
        self._check_input(path, inp.name, list(inp.shape), inp.type)
        batch_dim = inp.shape[0]
        # fixed batch (e.g. 1): feed chunks of exactly that size; dynamic: cfg.batch_size
        self._fixed_batch: int | None = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self._chunk = self._fixed_batch or cfg.batch_size

        outputs = self._session.get_outputs()
        names = [o.name for o in outputs]
        if cfg.output.name is None:
            self._output_name: str = names[0]
            out_shape = list(outputs[0].shape)
        elif cfg.output.name in names:
            self._output_name = cfg.output.name
            out_shape = list(outputs[names.index(cfg.output.name)].shape)
        else:
            raise ModelError(f"model {path} has no output {cfg.output.name!r}; its outputs are {names}")
        self._fetch = [self._output_name, *cfg.output.concat]
        for extra in cfg.output.concat:
            if extra not in names:
                raise ModelError(f"model {path} has no output {extra!r} (output.concat); its outputs are {names}")
            dims = outputs[names.index(extra)].shape
            last = dims[-1] if dims else None
            grown = out_shape[-1] + last if isinstance(out_shape[-1], int) and isinstance(last, int) else None
            out_shape = [*out_shape[:-1], grown]  # the class count of the concatenated rows
        num_classes = self._num_classes(out_shape)

        self.labels: tuple[str, ...] = resolve_labels(cfg.labels, labels, num_classes, path)
        self.info = ModelInfo(
            path=str(path),
            sha256=sha,
            kind=cfg.kind,
            input_name=inp.name,
            input_size_wh=cfg.preprocess.size,
            provider=self.provider,
            num_classes=num_classes,
            labels=self.labels,
        )

    def _log_provider(self, available: Sequence[str]) -> None:
        requested = [ORT_PROVIDER_NAMES[p] for p in self.cfg.providers]
        key = (tuple(requested), self.provider)
        if key in _logged_choices:
            return
        _logged_choices.add(key)
        if requested[0] == self.provider:
            logger.info("model provider: %s", self.provider)
            return
        skipped = requested[: requested.index(self.provider)] if self.provider in requested else requested
        missing = [_SHORT[n] for n in skipped if n not in available]
        failed = [_SHORT[n] for n in skipped if n in available]
        why = []
        if missing:
            why.append(f"{', '.join(missing)} requested; not available in this onnxruntime build")
        if failed:
            why.append(f"{', '.join(failed)} requested; failed to initialise on this machine")
        logger.warning("model provider: %s (%s)", self.provider, "; ".join(why))

    def _check_input(self, path: Path, name: str, shape: list[Any], ort_type: str) -> None:
        pp = self.cfg.preprocess
        if len(shape) != 4:
            raise ModelError(f"model {path} input {name!r} must be a 4-D image batch, got shape {shape}")
        if pp.layout == "nchw":
            c, h, w = shape[1], shape[2], shape[3]
        else:
            h, w, c = shape[1], shape[2], shape[3]
        if isinstance(c, int) and c != 3:
            raise ModelError(
                f"model {path} input {name!r} has shape {shape}: with preprocess.layout {pp.layout} "
                f"the channel dimension is {c}, expected 3 (wrong layout?)"
            )
        tw, th = pp.size
        if (isinstance(w, int) and w != tw) or (isinstance(h, int) and h != th):
            raise ModelError(f"model input {name!r} expects {w}x{h} but preprocess.size is {tw}x{th} (width x height)")
        want = _ORT_DTYPES.get(ort_type)
        if want is None:
            raise ModelError(f"model {path} input {name!r} has type {ort_type}; supported: float, float16, uint8")
        if want != pp.dtype:
            raise ModelError(f"model input {name!r} is {want} but preprocess.dtype is {pp.dtype}")

    def _num_classes(self, out_shape: list[Any]) -> int | None:
        dims = out_shape[1:]
        if not all(isinstance(d, int) for d in dims):
            return None
        if self.cfg.kind == "detector":
            return detector_classes(dims, self.cfg.output)
        return int(np.prod(dims)) if dims else None

    def _run(self, tensor: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        try:
            result = self._session.run(self._fetch, {self._input_name: tensor})
        except Exception as exc:  # map ORT runtime failures at this boundary
            raise ModelError(f"inference failed for model {self.info.path}: {type(exc).__name__}: {exc}") from exc
        if len(result) == 1:
            return np.asarray(result[0])
        parts = [np.asarray(r) for r in result]
        if any(p.shape[:-1] != parts[0].shape[:-1] for p in parts):
            shapes = {n: list(p.shape) for n, p in zip(self._fetch, parts, strict=True)}
            raise ModelError(
                f"model {self.info.path}: output.concat needs outputs that differ in their last axis only, got {shapes}"
            )
        return np.concatenate([p.astype(np.float32, copy=False) for p in parts], axis=-1)

    def infer(self, images: list[npt.NDArray[np.uint8]]) -> list[ModelOutput]:
        """Preprocess, run (in chunks of the model's batch size) and decode a batch of frames."""
        outputs: list[ModelOutput] = []
        pp = self.cfg.preprocess
        for start in range(0, len(images), self._chunk):
            chunk = images[start : start + self._chunk]
            n = len(chunk)
            tensor, geos = preprocess_with_transforms(chunk, pp)
            if self._fixed_batch is not None and n < self._fixed_batch:
                # a model with a fixed batch > 1: pad by repeating the last frame, drop those outputs
                reps = np.repeat(tensor[-1:], self._fixed_batch - n, axis=0)
                tensor = np.concatenate((tensor, reps))
            raw = self._run(tensor)
            if raw.ndim == 0 or raw.shape[0] < n:
                raise ModelError(
                    f"model {self.info.path} output {self._output_name!r} has shape {list(raw.shape)}; "
                    f"expected a leading batch dimension of {tensor.shape[0]}"
                )
            raw = raw[:n]
            if self.cfg.kind == "detector":
                outputs.extend(detector_outputs(raw, pp.size, geos, self.cfg.output, self.labels))
            else:
                outputs.extend(classifier_outputs(raw, self.cfg.output, self.labels))
        return outputs

    def warmup(self) -> None:
        """One dummy inference on a mid-grey frame (allocations, TensorRT engine build/load)."""
        w, h = self.cfg.preprocess.size
        self.infer([np.full((h, w, 3), 128, dtype=np.uint8)])
