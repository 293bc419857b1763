"""Build the model runner a config asks for; resolve the embedded reference model.

``model.path: null`` means the project's own reference model ``models/reference_cnn.onnx``. Its
preprocessing and labels come from the sidecar ``models/reference_cnn.json`` written by
``models/build_reference_model.py`` and replace the config's ``preprocess``/``labels`` (a user's
model keeps the config's). :func:`effective_model_config` exposes that resolution, e.g. for the demo.

``load_model(cfg, launcher=...)`` shares an open CUDA launcher (the statistics backend's,
``CudaStats.launcher``) with the runner: TensorRT then runs on its context and stream (the
zero-copy measuring path, agent.gpu_measure), ONNX Runtime's GPU providers on its stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from agent.datafiles import data_dir
from agent.errors import BackendUnavailable, ModelError, ModelOutputError
from agent.model.config import ModelConfig, PreprocessConfig
from agent.model.types import ModelRunner

if TYPE_CHECKING:
    from agent.gpu.launcher import Launcher

__all__ = [
    "REFERENCE_MODEL",
    "REFERENCE_SIDECAR",
    "ResolvedModel",
    "effective_model_config",
    "effective_preprocess",
    "load_model",
    "load_warm_model",
    "read_sidecar",
    "runner_factory",
    "warm_up",
]

logger = logging.getLogger(__name__)

#: The embedded reference model and its sidecar (preprocessing, labels, provenance): models/ in
#: the repository, or the copy a wheel carries (agent.datafiles).
REFERENCE_MODEL: Path = data_dir("models") / "reference_cnn.onnx"
REFERENCE_SIDECAR: Path = data_dir("models") / "reference_cnn.json"


class RunnerFactory(Protocol):
    """Builds a runner from a resolved config, explicit labels (or None) and an optional shared launcher."""

    def __call__(
        self, cfg: ModelConfig, labels: Sequence[str] | None, launcher: Launcher | None = None
    ) -> ModelRunner: ...


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model config with ``path`` set, plus labels given explicitly (None: from ``config.labels``)."""

    config: ModelConfig
    labels: tuple[str, ...] | None
    reference: bool


def read_sidecar(path: Path = REFERENCE_SIDECAR) -> dict[str, Any]:
    """The reference model's sidecar JSON (preprocess, labels, provenance) as a dict."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(
            f"reference model sidecar not found: {path}; rebuild it with python models/build_reference_model.py"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read reference model sidecar {path}: {exc}") from exc
    if not isinstance(data, dict) or "preprocess" not in data or "labels" not in data:
        raise ModelError(f"reference model sidecar {path} must be an object with 'preprocess' and 'labels'")
    return data


def effective_model_config(cfg: ModelConfig) -> ResolvedModel:
    """Resolve ``path: null`` to the embedded reference model with its own preprocessing and labels."""
    if cfg.path is not None:
        return ResolvedModel(cfg, None, reference=False)
    side = read_sidecar()
    try:
        pre = PreprocessConfig.model_validate(side["preprocess"])
    except ValidationError as exc:
        raise ModelError(f"reference model sidecar {REFERENCE_SIDECAR} has an invalid preprocess: {exc}") from exc
    labels = tuple(str(x) for x in side["labels"])
    resolved = cfg.model_copy(update={"path": REFERENCE_MODEL, "kind": "classifier", "labels": None, "preprocess": pre})
    return ResolvedModel(resolved, labels, reference=True)


def effective_preprocess(cfg: ModelConfig) -> PreprocessConfig:
    """The preprocessing actually used for ``cfg`` (the sidecar's for the reference model)."""
    return effective_model_config(cfg).config.preprocess


def _onnxruntime_runner(
    cfg: ModelConfig, labels: Sequence[str] | None, launcher: Launcher | None = None
) -> ModelRunner:
    from agent.model.onnx_runner import OnnxRunner  # noqa: PLC0415 (onnxruntime only when used)

    if launcher is None:
        return OnnxRunner(cfg, labels)
    return OnnxRunner(cfg, labels, device_id=launcher.device.ordinal, stream=launcher.stream_handle)


def _tensorrt_runner(
    cfg: ModelConfig, labels: Sequence[str] | None, launcher: Launcher | None = None
) -> ModelRunner:
    from agent.model.tensorrt_runner import TensorRTRunner  # noqa: PLC0415 (TensorRT only when used)

    if launcher is None:
        return TensorRTRunner(cfg, labels)
    return TensorRTRunner(cfg, labels, launcher=launcher, device=launcher.device.ordinal)


#: model.runtime -> runner constructor; None: declared in the config but not built yet.
_RUNTIMES: dict[str, RunnerFactory | None] = {"onnxruntime": _onnxruntime_runner, "tensorrt": _tensorrt_runner}


def runner_factory(runtime: str) -> RunnerFactory:
    """The constructor for a ``model.runtime``; raises BackendUnavailable for one not built yet."""
    if runtime not in _RUNTIMES:
        raise ModelError(f"unknown model.runtime {runtime!r}; expected one of {sorted(_RUNTIMES)}")
    factory = _RUNTIMES[runtime]
    if factory is None:
        raise BackendUnavailable(
            f"model.runtime {runtime!r} (native TensorRT engine runner) is not available in this version; "
            "use runtime: onnxruntime with providers [tensorrt, cuda, cpu] (needs onnxruntime-gpu and TensorRT)"
        )
    return factory


def load_model(cfg: ModelConfig, *, launcher: Launcher | None = None) -> ModelRunner | None:
    """The runner for ``cfg`` (None when ``cfg.enabled`` is false).

    ``launcher``: an open CUDA launcher to share (e.g. ``CudaStats.launcher``); it stays owned
    by the caller, who must keep it open while the runner is used.
    """
    if not cfg.enabled:
        return None
    factory = runner_factory(cfg.runtime)
    resolved = effective_model_config(cfg)
    if resolved.reference and not REFERENCE_MODEL.is_file():
        raise ModelError(
            f"reference model not found: {REFERENCE_MODEL}; rebuild it with python models/build_reference_model.py"
        )
    if not resolved.reference and "preprocess" not in cfg.model_fields_set:
        p = cfg.preprocess
        logger.warning(
            "model %s has no model.preprocess in the config: it gets the defaults (%dx%d, %s, %s, 0..255, mean %s, "
            "std %s), which fit few models; declare its size, channel order, scale, mean and std (README: "
            "Bring your own model) or its outputs will be quietly wrong", cfg.path, *p.size, p.resize,
            p.channel_order.upper(), list(p.mean), list(p.std),
        )
    return factory(resolved.config, resolved.labels, launcher)


def load_warm_model(cfg: ModelConfig) -> ModelRunner | None:
    """`load_model`, then one warm-up inference, so the first timed or calibration frame does not
    pay for session start-up (kernel JIT, TensorRT engine build); None when the model is disabled.

    The daemon keeps the two steps apart: it reports each to systemd as it happens.
    """
    model = load_model(cfg)
    if model is not None:
        warm_up(model)
    return model


def warm_up(model: ModelRunner) -> None:
    """``model.warmup()``; an unusable output on its warm-up frame (mid-grey) is a plain `ModelError`
    that says so: every frame would give one, so it is a configuration problem (exit 78), not a
    frame to BLOCK (`ModelOutputError`)."""
    try:
        model.warmup()
    except ModelOutputError as exc:
        raise ModelError(
            f"model {model.info.path}: its output for the warm-up frame (mid-grey) is unusable ({exc}); "
            "check model.preprocess (mean, std, scale), model.output and, for an FP16 engine, model.trt_fp16: false"
        ) from exc
