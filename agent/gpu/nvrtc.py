"""Run-time compilation of the project's CUDA kernels (kernels/*.cu) with NVRTC, cached on disk.

Any ``.cu`` file in the kernel folder can be compiled: its local ``#include "..."`` headers
are found next to it, handed to NVRTC in memory and hashed into the cache key, so editing
a header recompiles. The cache key is sha256 over the source and headers, the target
(``sm_XY`` cubin or ``compute_XY`` PTX), the NVRTC version and every option and define;
entries live in ``$EDGE_GUARD_CACHE_DIR/kernels`` (default ``~/.cache/edge-guard/kernels``)
and are written atomically, so concurrent agents never see half a file.

NVRTC needs no GPU and no CUDA toolkit: only ``libnvrtc.so`` (the ``nvidia-cuda-nvrtc``
wheel, a CUDA toolkit, or JetPack) and cuda-python's ``cuda.bindings.nvrtc``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.datafiles import data_dir
from agent.errors import BackendUnavailable
from agent.fsutil import write_atomic

__all__ = [
    "CACHE_ENV",
    "KERNEL_DIR_ENV",
    "CompiledKernel",
    "KernelCompileError",
    "KernelSource",
    "cache_dir",
    "cache_key",
    "compile_kernel",
    "kernel_dir",
    "nvrtc_supported_archs",
    "nvrtc_version",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the cache folder (kernels go to its ``kernels/`` subfolder).
CACHE_ENV = "EDGE_GUARD_CACHE_DIR"
#: Environment variable naming the folder that holds the ``.cu`` files (default: `kernel_dir`).
KERNEL_DIR_ENV = "EDGE_GUARD_KERNEL_DIR"

NVRTC_HINT = (
    "install NVRTC: pip install nvidia-cuda-nvrtc (or a CUDA toolkit / JetPack; "
    "point CUDA_PATH at a toolkit outside the library path)"
)
_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)

Kind = Literal["cubin", "ptx"]


class KernelCompileError(BackendUnavailable):
    """NVRTC rejected a kernel; the message carries NVRTC's log."""


def kernel_dir() -> Path:
    """Folder of the ``.cu`` files: $EDGE_GUARD_KERNEL_DIR, else the package's copy (wheel) or
    ``kernels/`` at the repository root (`agent.datafiles.data_dir`)."""
    env = os.environ.get(KERNEL_DIR_ENV)
    return Path(env) if env else data_dir("kernels")


def cache_dir() -> Path:
    """Kernel cache folder: $EDGE_GUARD_CACHE_DIR/kernels, else ~/.cache/edge-guard/kernels."""
    env = os.environ.get(CACHE_ENV)
    root = Path(env) if env else Path.home() / ".cache" / "edge-guard"
    return root / "kernels"


@dataclass(frozen=True, slots=True)
class KernelSource:
    """A ``.cu`` program and the local headers it includes (name -> text)."""

    name: str
    text: str
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_file(cls, path: Path) -> KernelSource:
        """Read ``path`` and, recursively, every ``#include "x"`` found beside it."""
        if not path.is_file():
            raise BackendUnavailable(
                f"CUDA kernel source {path} not found (expected the repository's kernels/ folder, "
                f"or set {KERNEL_DIR_ENV})"
            )
        text = path.read_text(encoding="utf-8")
        headers: dict[str, str] = {}
        pending = list(_INCLUDE.findall(text))
        while pending:
            inc = pending.pop()
            if inc in headers:
                continue
            hpath = path.parent / inc
            if not hpath.is_file():
                raise BackendUnavailable(f"{path.name} includes {inc!r}, but {hpath} does not exist")
            headers[inc] = hpath.read_text(encoding="utf-8")
            pending.extend(_INCLUDE.findall(headers[inc]))
        return cls(path.name, text, tuple(sorted(headers.items())))


@dataclass(frozen=True, slots=True)
class CompiledKernel:
    """A compiled image: ``image`` is a cubin (ELF) or NUL-terminated PTX for ``target``."""

    image: bytes
    kind: Kind
    target: str
    key: str
    path: Path | None
    from_cache: bool
    log: str


def _nvrtc() -> Any:
    try:
        from cuda.bindings import nvrtc  # noqa: PLC0415 (optional dependency, imported lazily)
    except ImportError as exc:
        raise BackendUnavailable("cuda-python not installed (pip install 'edge-guard[gpu]')") from exc
    return nvrtc


def _check(result: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    nvrtc = _nvrtc()
    err = result[0]
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        _, msg = nvrtc.nvrtcGetErrorString(err)
        raise BackendUnavailable(f"{what} failed: {msg.decode(errors='replace')}")
    return result


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the loaded NVRTC library; BackendUnavailable when it cannot be loaded."""
    nvrtc = _nvrtc()
    try:
        # cuda.pathfinder warns when it cannot read the version off an unusual install
        # layout; that is harmless, so it goes to the log rather than to the caller.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = nvrtc.nvrtcVersion()
        for w in caught:
            logger.debug("while loading NVRTC: %s", w.message)
    except RuntimeError as exc:  # cuda.pathfinder's DynamicLibNotFoundError is a RuntimeError
        raise BackendUnavailable(f"NVRTC library not found (libnvrtc.so.13/.12): {NVRTC_HINT}") from exc
    _, major, minor = _check(result, "nvrtcVersion")
    return int(major), int(minor)


def nvrtc_supported_archs() -> list[int]:
    """Compute capabilities (e.g. 87, 90) this NVRTC can target."""
    nvrtc_version()  # loads the library or raises BackendUnavailable
    _, archs = _check(_nvrtc().nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs")
    return [int(a) for a in archs]


def _target(arch: int | str, kind: Kind) -> str:
    """'sm_90' for a cubin, 'compute_90' for PTX, from 90, 'sm_90' or 'compute_90'."""
    digits = str(arch).rsplit("_", 1)[-1]
    if not digits.isdigit():
        raise ValueError(f"arch must be like 90, 'sm_90' or 'compute_90', but got {arch!r}")
    return f"{'sm' if kind == 'cubin' else 'compute'}_{digits}"


def _options(target: str, defines: Mapping[str, str | int], extra: Iterable[str]) -> list[str]:
    opts = [f"--gpu-architecture={target}", "-std=c++17", "-lineinfo"]
    opts += [f"-D{k}={v}" for k, v in sorted(defines.items())]
    opts += list(extra)
    return opts


def cache_key(source: KernelSource, target: str, options: Iterable[str], version: tuple[int, int]) -> str:
    """sha256 (hex) of everything that changes the compiled image."""
    h = hashlib.sha256()
    for part in (
        "edge-guard-kernel-cache-v1",
        source.name,
        source.text,
        *(f"{name}\0{text}" for name, text in source.headers),
        target,
        f"nvrtc-{version[0]}.{version[1]}",
        *options,
    ):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _run_nvrtc(source: KernelSource, options: list[str], kind: Kind) -> tuple[bytes, str]:
    nvrtc = _nvrtc()
    names = [name.encode() for name, _ in source.headers]
    texts = [text.encode() for _, text in source.headers]
    _, prog = _check(
        nvrtc.nvrtcCreateProgram(source.text.encode(), source.name.encode(), len(names), texts, names),
        "nvrtcCreateProgram",
    )
    try:
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(options), [o.encode() for o in options])
        _, log_size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        log_buf = b" " * int(log_size)
        _check(nvrtc.nvrtcGetProgramLog(prog, log_buf), "nvrtcGetProgramLog")
        log = log_buf.rstrip(b"\0 ").decode(errors="replace")
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise KernelCompileError(f"NVRTC could not compile {source.name} with {' '.join(options)}:\n{log}")
        if kind == "cubin":
            _, size = _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
            image = b" " * int(size)
            _check(nvrtc.nvrtcGetCUBIN(prog, image), "nvrtcGetCUBIN")
        else:
            _, size = _check(nvrtc.nvrtcGetPTXSize(prog), "nvrtcGetPTXSize")
            image = b" " * int(size)  # includes the terminating NUL cuModuleLoadData needs
            _check(nvrtc.nvrtcGetPTX(prog, image), "nvrtcGetPTX")
        return image, log
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def compile_kernel(
    source: KernelSource,
    arch: int | str,
    *,
    kind: Kind = "cubin",
    defines: Mapping[str, str | int] | None = None,
    extra_options: Iterable[str] = (),
    cache: Path | None = None,
    use_cache: bool = True,
) -> CompiledKernel:
    """Compile ``source`` for ``arch`` (cubin for ``sm_XY``, or PTX), reusing the disk cache.

    ``cache`` defaults to :func:`cache_dir`. A cache entry that cannot be read or written
    only costs a recompile (logged), never an error.
    """
    target = _target(arch, kind)
    options = _options(target, defines or {}, extra_options)
    version = nvrtc_version()
    key = cache_key(source, target, options, version)
    stem = Path(source.name).stem
    path = (cache or cache_dir()) / f"{stem}-{target}-{key[:24]}.{kind}" if use_cache else None
    if path is not None and path.is_file():
        try:
            image = path.read_bytes()
        except OSError as exc:
            logger.warning("kernel cache entry %s unreadable (%s); recompiling", path, exc)
        else:
            if image:
                logger.debug("kernel %s for %s from cache %s", source.name, target, path)
                return CompiledKernel(image, kind, target, key, path, True, "")
    image, log = _run_nvrtc(source, options, kind)
    logger.info("compiled %s for %s with NVRTC %d.%d (%d bytes)", source.name, target, *version, len(image))
    if path is not None:
        try:
            write_atomic(path, image)
        except OSError as exc:
            logger.warning("cannot write kernel cache %s (%s); next start compiles again", path, exc)
            path = None
    return CompiledKernel(image, kind, target, key, path, False, log)
