"""Who is publishing: the agent identity carried in the retained node status and every message."""

from __future__ import annotations

import dataclasses
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from agent import __version__

__all__ = ["AgentIdentity", "read_boot_id"]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def read_boot_id() -> str:
    """The kernel boot id (changes on every reboot); ``"unknown"`` where /proc does not have it."""
    try:
        return _BOOT_ID.read_text(encoding="ascii").strip()
    except OSError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Identity of one agent process.

    ``backends`` names what is in use, e.g. ``{"stats": "cpu", "model": "onnxruntime:CPUExecutionProvider"}``.
    ``run_id`` is fresh per process start: with ``pid`` and ``boot_id`` it tells a restart
    from a reconnect. Use :meth:`create` to fill the process fields; :meth:`with_changes`
    returns an updated copy (e.g. after a profile reload).
    """

    site: str
    node: str
    cameras: tuple[str, ...]
    agent_version: str = __version__
    pid: int = 0
    boot_id: str = "unknown"
    run_id: str = ""
    model_sha256: str | None = None
    profile_id: str | None = None
    config_hash: str | None = None
    backends: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        site: str,
        node: str,
        cameras: tuple[str, ...] | list[str],
        *,
        model_sha256: str | None = None,
        profile_id: str | None = None,
        config_hash: str | None = None,
        backends: dict[str, str] | None = None,
    ) -> AgentIdentity:
        """Identity of the current process (pid, boot id, a fresh run id, the package version)."""
        return cls(
            site=site,
            node=node,
            cameras=tuple(cameras),
            pid=os.getpid(),
            boot_id=read_boot_id(),
            run_id=uuid.uuid4().hex[:16],
            model_sha256=model_sha256,
            profile_id=profile_id,
            config_hash=config_hash,
            backends=dict(backends or {}),
        )

    def with_changes(self, **changes: object) -> AgentIdentity:
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        out = dataclasses.asdict(self)
        out["cameras"] = list(self.cameras)
        return out
