"""Compile a kernel for the launcher's device (NVRTC, cached) and load it."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.errors import BackendUnavailable
from agent.gpu.launcher import Launcher
from agent.gpu.nvrtc import CompiledKernel, KernelSource, compile_kernel, kernel_dir, nvrtc_supported_archs

__all__ = ["LoadedKernel", "choose_target", "load_kernel"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedKernel:
    """A kernel function ready to launch, and how it was built."""

    function: object
    compiled: CompiledKernel
    registers: int


def choose_target(device_arch: int, supported: list[int]) -> tuple[str, int]:
    """("cubin", arch) when NVRTC knows the device, else ("ptx", newest older arch) for the driver to JIT.

    A cubin needs no JIT at start and runs on any driver of the same major version; PTX is
    the fallback for a device newer than this NVRTC.
    """
    if device_arch in supported:
        return "cubin", device_arch
    older = [a for a in supported if a <= device_arch]
    if not older:
        raise BackendUnavailable(
            f"NVRTC supports compute capabilities {supported}, none usable for this device's {device_arch}"
        )
    return "ptx", max(older)


def load_kernel(
    launcher: Launcher,
    filename: str,
    function: str,
    *,
    defines: Mapping[str, str | int] | None = None,
    source_dir: Path | None = None,
    cache: Path | None = None,
    image: bytes | None = None,
) -> LoadedKernel:
    """Compile ``filename`` (in ``source_dir``, default :func:`kernel_dir`) for the device and get ``function``.

    ``image``: a prebuilt cubin/fatbin/PTX of that file (e.g. ``nvcc -cubin -arch=sm_87``
    at packaging time for a device without NVRTC); then nothing is compiled.
    """
    if image is not None:
        key = hashlib.sha256(image).hexdigest()
        compiled = CompiledKernel(image, "cubin", "prebuilt", key, None, False, "")
    else:
        source = KernelSource.from_file((source_dir or kernel_dir()) / filename)
        kind, arch = choose_target(launcher.device.arch, nvrtc_supported_archs())
        compiled = compile_kernel(
            source, arch, kind="cubin" if kind == "cubin" else "ptx", defines=defines, cache=cache
        )
    module = launcher.load_module(compiled.image)
    fn = launcher.get_function(module, function)
    regs = launcher.function_registers(fn)
    logger.info(
        "kernel %s:%s loaded for %s (%s, %s%s, %d registers)",
        filename,
        function,
        launcher.device.name,
        compiled.target,
        compiled.kind,
        ", cached" if compiled.from_cache else "",
        regs,
    )
    return LoadedKernel(fn, compiled, regs)
