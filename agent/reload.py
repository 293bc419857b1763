"""SIGHUP: which config changes apply live, and which need a restart.

`plan_reload` compares the running config with a freshly loaded one and splits the differences
into what the daemon applies in place (policy alphas, health interval, log level) and dotted
field paths that only take effect after a restart (source, model, stats, sinks, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.config import GuardConfig

__all__ = ["LIVE_FIELDS", "ReloadPlan", "changed_paths", "plan_reload"]

#: Fields applied without a restart (dotted paths).
LIVE_FIELDS: tuple[str, ...] = (
    "policy.alpha_flag",
    "policy.alpha_block",
    "health.interval_s",
    "logging.level",
)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """``live``: changed live fields -> new value; ``restart``: other changed paths."""

    live: dict[str, Any] = field(default_factory=dict)
    restart: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.live and not self.restart


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like values differ (a changed leaf or a whole changed list)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            else:
                out.extend(changed_paths(old[key], new[key], path))
        return out
    return [] if old == new else [prefix or "<root>"]


def plan_reload(old: GuardConfig, new: GuardConfig) -> ReloadPlan:
    """Split the differences between ``old`` and ``new`` (see the module docstring)."""
    paths = changed_paths(old.model_dump(mode="json"), new.model_dump(mode="json"))
    live: dict[str, Any] = {}
    restart: list[str] = []
    for path in paths:
        if path in LIVE_FIELDS:
            obj: Any = new
            for part in path.split("."):
                obj = getattr(obj, part)
            live[path] = obj
        else:
            restart.append(path)
    # alphas go together (alpha_block <= alpha_flag is checked on the pair)
    if "policy.alpha_flag" in live or "policy.alpha_block" in live:
        live["policy.alpha_flag"] = new.policy.alpha_flag
        live["policy.alpha_block"] = new.policy.alpha_block
    return ReloadPlan(live, restart)
