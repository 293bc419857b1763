"""Choose the statistics backend from config: CUDA when asked for (or usable, on auto), else CPU."""

from __future__ import annotations

import importlib
import logging
from typing import cast

from agent.errors import BackendUnavailable, GuardError
from agent.stats.config import StatsConfig
from agent.stats.cpu import CpuStats
from agent.stats.types import StatsBackend

__all__ = ["CUDA_MODULE", "backend_note", "create_backend", "cuda_unavailable_reason"]

logger = logging.getLogger(__name__)

#: The optional CUDA backend; it provides ``probe() -> str | None`` and ``CudaStats(grid, launcher=...)``.
CUDA_MODULE = "agent.stats.cuda"


def cuda_unavailable_reason() -> str | None:
    """None when the CUDA statistics backend is usable here, else a human-readable reason."""
    try:
        module = importlib.import_module(CUDA_MODULE)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing in (CUDA_MODULE, None):
            return "CUDA backend not installed"
        return f"CUDA backend not installed (missing module {missing!r})"
    try:
        reason: object = module.probe()
    except (GuardError, OSError, RuntimeError) as exc:
        # probe() should return a reason rather than raise; a crash still only means "unusable".
        return f"CUDA probe failed: {type(exc).__name__}: {exc}"
    if reason is None:
        return None
    return str(reason)


def _cuda_backend(cfg: StatsConfig) -> StatsBackend:
    module = importlib.import_module(CUDA_MODULE)
    return cast(StatsBackend, module.CudaStats(cfg.grid, launcher=cfg.launcher))


def create_backend(cfg: StatsConfig) -> StatsBackend:
    """The backend ``cfg.backend`` asks for, logging one INFO line that says which and why.

    ``cpu`` always works; ``cuda`` raises BackendUnavailable (with the reason) when CUDA is
    not usable here; ``auto`` takes CUDA when usable, else CPU.
    """
    if cfg.backend == "cpu":
        logger.info("stats backend: cpu (configured)")
        return CpuStats(cfg.grid)
    reason = cuda_unavailable_reason()
    if cfg.backend == "cuda":
        if reason is not None:
            raise BackendUnavailable(
                f"stats.backend is 'cuda' but CUDA is not usable here: {reason}. "
                "Set stats.backend to 'auto' or 'cpu', or install the GPU extra on a machine with an NVIDIA driver."
            )
        logger.info("stats backend: cuda (configured, launcher %s)", cfg.launcher)
        return _cuda_backend(cfg)
    if reason is None:
        logger.info("stats backend: cuda (auto: usable NVIDIA GPU found, launcher %s)", cfg.launcher)
        return _cuda_backend(cfg)
    logger.info("stats backend: cpu (CUDA unavailable: %s)", reason)
    return CpuStats(cfg.grid)


def backend_note(stats: StatsBackend, cfg: StatsConfig) -> str | None:
    """Why ``stats`` (made by `create_backend` from ``cfg``) is not CUDA: ``configured`` when
    ``cfg.backend`` is ``cpu``, else the CUDA probe's reason; None for the CUDA backend."""
    if stats.name == "cuda":
        return None
    if cfg.backend == "cpu":
        return "configured"
    return cuda_unavailable_reason() or "CUDA not chosen"
