"""GPU plumbing shared by the CUDA stages: NVRTC compile cache, launchers, kernel ABI helpers.

Nothing here imports cuda-python or pycuda at import time; the launchers load them when a
device is opened.
"""

from agent.gpu.launcher import DeviceInfo, KernelArg, Launcher, open_launcher
from agent.gpu.nvrtc import KernelCompileError, KernelSource, cache_dir, compile_kernel, kernel_dir

__all__ = [
    "DeviceInfo",
    "KernelArg",
    "KernelCompileError",
    "KernelSource",
    "Launcher",
    "cache_dir",
    "compile_kernel",
    "kernel_dir",
    "open_launcher",
]
