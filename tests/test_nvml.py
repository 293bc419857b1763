"""GPU health through NVML (agent.gpu.nvml).

Everywhere: on a machine without an NVIDIA driver (these CI machines) the real nvidia-ml-py
raises NVMLError_LibraryNotFound inside nvmlInit; gpu_health returns None with the reason,
logs it once, and never raises. On a GPU (marked gpu): the values are present and plausible.
"""

from __future__ import annotations

import importlib.util
import logging

import pytest

from agent.gpu.nvml import GPU_HEALTH_KEYS, GpuHealthMonitor, gpu_health, gpu_health_reason


def _nvml_works() -> bool:
    if importlib.util.find_spec("pynvml") is None:
        return False
    mon = GpuHealthMonitor(0)
    ok = mon.read() is not None
    mon.close()
    return ok


NVML_OK = _nvml_works()


@pytest.mark.skipif(NVML_OK, reason="NVML works on this machine (the no-driver path cannot be shown)")
def test_no_driver_gives_none_with_reason(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agent.gpu.nvml"):
        assert gpu_health(0) is None
        assert gpu_health(0) is None  # second call: same answer, no second log line
    reason = gpu_health_reason(0)
    assert reason is not None
    if importlib.util.find_spec("pynvml") is not None:
        assert "NVML library not found" in reason and "Jetson" in reason
    lines = [r.getMessage() for r in caplog.records if "GPU health unavailable" in r.getMessage()]
    assert len(lines) <= 1  # logged once per process (an earlier test may have logged it already)


@pytest.mark.skipif(NVML_OK, reason="NVML works on this machine")
def test_monitor_without_driver_reads_none_repeatedly() -> None:
    mon = GpuHealthMonitor(3)
    assert mon.read() is None and mon.read() is None
    assert mon.reason is not None
    mon.close()  # closing a never-opened monitor is fine
    assert mon.read() is None


@pytest.mark.gpu
@pytest.mark.skipif(not NVML_OK, reason="NVML not usable here (no NVIDIA driver)")
def test_gpu_health_values() -> None:
    values = gpu_health(0)
    assert values is not None and set(values) <= set(GPU_HEALTH_KEYS)
    assert "mem_total_mib" in values and values["mem_total_mib"] > 0
    assert 0.0 <= values.get("gpu_util_pct", 0.0) <= 100.0
    if "temp_c" in values:
        assert 0.0 < values["temp_c"] < 120.0
    assert gpu_health_reason(0) is None
    missing = GpuHealthMonitor(1000)
    assert missing.read() is None and missing.reason is not None and "1000" in missing.reason
