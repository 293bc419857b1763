"""GPU health for the health summary: utilization, memory, temperature, clocks, power (NVML).

Read through nvidia-ml-py (``import pynvml``, the ``gpu`` extra), imported lazily. Every value
is optional: a GPU or driver that does not support one query (``NVMLError_NotSupported``,
common on consumer and embedded parts) just leaves that key out. Where NVML itself is missing
(no driver, a CPU-only box, and Jetson, whose integrated GPU has no NVML; tegrastats is the
tool there), :func:`gpu_health` returns None and :func:`gpu_health_reason` says why; the
reason is logged once. Nothing here raises.

Keys (all floats): ``gpu_util_pct``, ``mem_util_pct``, ``mem_used_mib``, ``mem_total_mib``,
``temp_c``, ``sm_clock_mhz``, ``mem_clock_mhz``, ``power_w``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["GPU_HEALTH_KEYS", "GpuHealthMonitor", "gpu_health", "gpu_health_reason"]

logger = logging.getLogger(__name__)

GPU_HEALTH_KEYS = (
    "gpu_util_pct",
    "mem_util_pct",
    "mem_used_mib",
    "mem_total_mib",
    "temp_c",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "power_w",
)


class GpuHealthMonitor:
    """NVML initialised once (``nvmlInit`` costs milliseconds), then one cheap read per call.

    ``read()`` returns the values of device ``index``, or None with ``reason`` set.
    """

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.reason: str | None = None
        self.name: str | None = None
        self._nvml: Any = None
        self._handle: Any = None
        self._lock = threading.Lock()
        self._tried = False

    def _open(self) -> bool:
        self._tried = True
        try:
            import pynvml  # noqa: PLC0415 (optional: the gpu extra)
        except ImportError:
            self.reason = "nvidia-ml-py is not installed (pip install 'edge-guard[gpu]')"
            return False
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound:
            self.reason = "NVML library not found (no NVIDIA driver; Jetson has no NVML: use tegrastats)"
            return False
        except pynvml.NVMLError as exc:
            self.reason = f"NVML could not start: {exc}"
            return False
        try:
            count = int(pynvml.nvmlDeviceGetCount())
            if not 0 <= self.index < count:
                self.reason = f"GPU {self.index} requested, but NVML sees {count} device(s)"
                pynvml.nvmlShutdown()
                return False
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            name = pynvml.nvmlDeviceGetName(self._handle)
            self.name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        except pynvml.NVMLError as exc:
            self.reason = f"NVML cannot open GPU {self.index}: {exc}"
            return False
        self._nvml = pynvml
        return True

    def read(self) -> dict[str, float] | None:
        """The current values (each key only when the GPU supports it), or None (see ``reason``)."""
        with self._lock:
            if self._nvml is None and (self._tried or not self._open()):  # NVML is tried once per monitor
                return None
            nv, h = self._nvml, self._handle
            out: dict[str, float] = {}

            def put(keys: tuple[str, ...], query: Callable[[], tuple[float, ...]]) -> None:
                try:
                    values = query()
                except nv.NVMLError as exc:  # not supported here, or transient: leave the keys out
                    logger.debug("NVML query for %s failed: %s", keys, exc)
                    return
                out.update(zip(keys, (float(v) for v in values), strict=True))

            def util() -> tuple[float, ...]:
                u = nv.nvmlDeviceGetUtilizationRates(h)
                return u.gpu, u.memory

            def memory() -> tuple[float, ...]:
                m = nv.nvmlDeviceGetMemoryInfo(h)
                return m.used / 2**20, m.total / 2**20

            put(("gpu_util_pct", "mem_util_pct"), util)
            put(("mem_used_mib", "mem_total_mib"), memory)
            put(("temp_c",), lambda: (nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),))
            put(("sm_clock_mhz",), lambda: (nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),))
            put(("mem_clock_mhz",), lambda: (nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),))
            put(("power_w",), lambda: (nv.nvmlDeviceGetPowerUsage(h) / 1000.0,))  # milliwatts
            return out

    def close(self) -> None:
        """Shut NVML down (reads after this return None)."""
        with self._lock:
            if self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except self._nvml.NVMLError as exc:
                    logger.debug("nvmlShutdown failed: %s", exc)
                self._nvml = None
                self.reason = "closed"


_monitors: dict[int, GpuHealthMonitor] = {}
_monitors_lock = threading.Lock()
_logged: set[tuple[int, str]] = set()


def _monitor(index: int) -> GpuHealthMonitor:
    with _monitors_lock:
        mon = _monitors.get(index)
        if mon is None:
            mon = _monitors[index] = GpuHealthMonitor(index)
        return mon


def gpu_health(index: int = 0) -> dict[str, float] | None:
    """GPU ``index``'s health values, or None when NVML is unusable here (reason logged once). Never raises."""
    mon = _monitor(index)
    try:
        values = mon.read()
    except Exception as exc:  # defensive: health reporting must never take the agent down
        mon.reason = f"NVML read failed: {type(exc).__name__}: {exc}"
        values = None
    if values is None and mon.reason is not None and (index, mon.reason) not in _logged:
        _logged.add((index, mon.reason))
        logger.info("GPU health unavailable: %s", mon.reason)
    return values


def gpu_health_reason(index: int = 0) -> str | None:
    """Why :func:`gpu_health` returned None for ``index`` (None when it works or was not asked yet)."""
    return _monitor(index).reason
