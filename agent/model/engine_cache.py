"""On-disk cache of serialized TensorRT engines: keying, sidecars, stale-engine recovery.

A TensorRT engine is only valid for the exact model, GPU, TensorRT version and build options it
was built with, and building one takes minutes on a Jetson, so engines are cached in
``<model.trt_cache_dir>/engines`` (default ``~/.cache/edge-guard/trt/engines``):

- ``<onnx sha256[:12]>-<key digest[:16]>.engine``: the serialized engine (``IHostMemory`` bytes);
- ``<same>.json``: the sidecar, written after the engine (atomically, so an engine without a
  sidecar is an interrupted write): the full :class:`EngineKey`, the engine's sha256 and size,
  when and how long it took to build;
- ``<same>.loading``: present only while an engine is being deserialized (with the pid); found
  at start-up it means the previous process died inside deserialization, and the engine is
  thrown away instead of crashing again;
- ``<same>.lock``: ``flock`` so that two agents on one box build an engine once.

:meth:`EngineCache.load_or_build` is the whole control flow: a missing, unreadable, corrupt
(sha256 mismatch), stale (its sidecar key is not the one its name was made from: a hand-copied
or renamed file; another TensorRT version or GPU gives another file name, so a fresh build) or
undeserializable engine is logged, deleted and rebuilt **once**; if the fresh engine cannot be
deserialized either, that is a :class:`ModelError` (never a rebuild loop). This module does not
import TensorRT: the build and deserialize steps are callables, so the logic is tested anywhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from agent.errors import ModelError

__all__ = ["KEY_SCHEMA", "EngineCache", "EngineKey", "default_engine_dir"]

logger = logging.getLogger(__name__)

#: Bumped when the meaning of a key field or the engine build recipe changes.
KEY_SCHEMA = 1
E = TypeVar("E")


def default_engine_dir(trt_cache_dir: Path | None) -> Path:
    """``<trt_cache_dir>/engines``; ``trt_cache_dir`` null means ``~/.cache/edge-guard/trt``."""
    root = trt_cache_dir if trt_cache_dir is not None else Path("~/.cache/edge-guard/trt")
    return root.expanduser() / "engines"


@dataclass(frozen=True, slots=True)
class EngineKey:
    """Everything an engine depends on. Any change gives another file (and a rebuild).

    ``precision``: ``fp32``, ``fp16`` (TensorRT 10 weak typing with the FP16 builder flag) or
    ``typed`` (TensorRT 11: strongly typed, the ONNX graph's own types decide).
    ``batch_profile``: (min, opt, max) batch of the optimization profile.
    """

    onnx_sha256: str
    gpu_name: str
    compute_capability: str
    trt_version: str
    precision: str
    batch_profile: tuple[int, int, int]
    input_wh: tuple[int, int]
    workspace_mib: int
    schema: int = KEY_SCHEMA

    def __post_init__(self) -> None:
        if len(self.onnx_sha256) != 64 or any(c not in "0123456789abcdef" for c in self.onnx_sha256):
            raise ValueError(f"onnx_sha256 must be 64 lowercase hex digits, but got {self.onnx_sha256!r}")
        lo, opt, hi = self.batch_profile
        if not 1 <= lo <= opt <= hi:
            raise ValueError(
                f"batch_profile must be (min, opt, max) with 1 <= min <= opt <= max, got {self.batch_profile}"
            )
        if self.precision not in ("fp32", "fp16", "typed"):
            raise ValueError(f"precision must be fp32, fp16 or typed, but got {self.precision!r}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON of every field."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def stem(self) -> str:
        """File name stem: model prefix (to find a model's engines by eye) + key digest."""
        return f"{self.onnx_sha256[:12]}-{self.digest()[:16]}"


@dataclass(frozen=True, slots=True)
class Loaded(Generic[E]):
    """An engine and where it came from."""

    engine: E
    from_cache: bool
    path: Path
    build_s: float | None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EngineCache:
    """Engines for one cache folder (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def paths(self, key: EngineKey) -> tuple[Path, Path, Path]:
        """(engine, sidecar, loading marker) paths of ``key``."""
        stem = self.directory / key.stem()
        return stem.with_suffix(".engine"), stem.with_suffix(".json"), stem.with_suffix(".loading")

    def _ensure_dir(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelError(
                f"cannot create TensorRT engine cache folder {self.directory}: {exc}; set model.trt_cache_dir "
                "to a writable folder"
            ) from exc

    @contextlib.contextmanager
    def _locked(self, key: EngineKey) -> Iterator[None]:
        """Exclusive per-key lock: a second agent waits for the first one's build, then loads it."""
        lock_path = self.directory / f"{key.stem()}.lock"
        with lock_path.open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def invalidate(self, key: EngineKey, reason: str) -> None:
        """Delete ``key``'s engine, sidecar and loading marker, logging why."""
        engine, sidecar, marker = self.paths(key)
        logger.warning("TensorRT engine %s discarded: %s; it will be rebuilt", engine.name, reason)
        for p in (engine, sidecar, marker):
            p.unlink(missing_ok=True)

    def lookup(self, key: EngineKey) -> bytes | None:
        """The cached engine bytes when present and valid; anything stale is invalidated (None)."""
        engine, sidecar, marker = self.paths(key)
        if marker.exists():
            # Markers only exist while an engine is deserialized under the lock we now hold:
            # one left over means that process died inside TensorRT. Do not try again.
            self.invalidate(key, f"a previous process (pid {_read_pid(marker)}) died while deserializing it")
            return None
        if not engine.exists():
            if sidecar.exists():
                sidecar.unlink(missing_ok=True)
            return None
        if not sidecar.exists():
            self.invalidate(key, "its sidecar is missing (interrupted write)")
            return None
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            data = engine.read_bytes()
        except (OSError, ValueError) as exc:
            self.invalidate(key, f"unreadable ({type(exc).__name__}: {exc})")
            return None
        if not isinstance(meta, dict) or meta.get("key") != key.as_dict():
            recorded = meta.get("key") if isinstance(meta, dict) else None
            diff = _key_diff(recorded, key.as_dict())
            self.invalidate(key, f"its sidecar records another build ({diff})")
            return None
        if meta.get("engine_sha256") != hashlib.sha256(data).hexdigest() or meta.get("engine_bytes") != len(data):
            self.invalidate(key, "its content does not match the sidecar's sha256/size (corrupt or truncated)")
            return None
        return data

    def store(self, key: EngineKey, data: bytes, build_s: float) -> Path:
        """Write the engine, then its sidecar (both atomically); returns the engine path."""
        engine, sidecar, _ = self.paths(key)
        meta = {
            "key": key.as_dict(),
            "engine_sha256": hashlib.sha256(data).hexdigest(),
            "engine_bytes": len(data),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_s": round(build_s, 3),
        }
        try:
            _write_atomic(engine, data)
            _write_atomic(sidecar, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        except OSError as exc:
            # Not fatal: the engine still runs from memory, the next start builds again.
            logger.warning("cannot write TensorRT engine cache %s (%s); the next start builds again", engine, exc)
        return engine

    @contextlib.contextmanager
    def _loading(self, key: EngineKey) -> Iterator[None]:
        _, _, marker = self.paths(key)
        with contextlib.suppress(OSError):  # best effort: only guards against crashes inside deserialization
            marker.write_text(f"{os.getpid()}\n", encoding="utf-8")
        try:
            yield
        finally:
            marker.unlink(missing_ok=True)

    def load_or_build(
        self, key: EngineKey, build: Callable[[], bytes], deserialize: Callable[[bytes], E | None]
    ) -> Loaded[E]:
        """The engine for ``key``: from the cache when valid, else built once, stored and loaded.

        ``deserialize`` returns None (or raises) for bytes it cannot load; a cached engine that
        fails is discarded and rebuilt; a freshly built one that fails raises ModelError.
        """
        self._ensure_dir()
        engine_path, _, _ = self.paths(key)
        with self._locked(key):
            data = self.lookup(key)
            if data is not None:
                with self._loading(key):
                    loaded, why = _try_deserialize(deserialize, data)
                if loaded is not None:
                    logger.info("TensorRT engine loaded from cache %s (%.1f MB)", engine_path, len(data) / 1e6)
                    return Loaded(loaded, True, engine_path, None)
                self.invalidate(key, f"deserialization failed ({why})")
            t0 = time.monotonic()
            data = build()
            build_s = time.monotonic() - t0
            path = self.store(key, data, build_s)
            with self._loading(key):
                loaded, why = _try_deserialize(deserialize, data)
            if loaded is None:
                self.invalidate(key, f"the freshly built engine cannot be deserialized ({why})")
                raise ModelError(
                    f"TensorRT built an engine for {key.gpu_name} (TensorRT {key.trt_version}) but cannot load it "
                    f"({why}); check the TensorRT installation (JetPack / NVIDIA packages) or use runtime: onnxruntime"
                )
            logger.info("TensorRT engine built in %.1f s and cached at %s (%.1f MB)", build_s, path, len(data) / 1e6)
            return Loaded(loaded, False, path, build_s)


def _try_deserialize(deserialize: Callable[[bytes], E | None], data: bytes) -> tuple[E | None, str]:
    try:
        out = deserialize(data)
    except Exception as exc:  # a library error here only means "this engine is unusable"
        return None, f"{type(exc).__name__}: {exc}"
    return out, "" if out is not None else "the runtime returned no engine"


def _read_pid(marker: Path) -> int | None:
    try:
        return int(marker.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _key_diff(recorded: object, current: dict[str, Any]) -> str:
    if not isinstance(recorded, dict):
        return "no key recorded"
    changed = [f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in current.items() if recorded.get(k) != v]
    return "; ".join(changed) if changed else "different fields"
