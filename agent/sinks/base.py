"""The sink interface: where verdicts, health summaries and status go (file, MQTT, ...)."""

from __future__ import annotations

from typing import Literal, Protocol

from agent.frame import Frame
from agent.health import HealthSummary
from agent.verdict import Verdict

__all__ = ["CameraState", "NullSink", "Sink"]

CameraState = Literal["online", "degraded", "offline"]


class Sink(Protocol):
    """Receives everything the daemon produces. Implementations never drop silently:
    anything they cannot deliver is spooled or counted (and reported in health)."""

    def publish_verdict(self, verdict: Verdict, frame: Frame) -> None:
        """Called for every processed frame (the sink decides what to keep/sample)."""
        ...

    def publish_health(self, summary: HealthSummary) -> None:
        """Called once per health interval."""
        ...

    def publish_camera_status(self, camera_id: str, state: CameraState, reason: str) -> None:
        """Called when a camera's state changes."""
        ...

    def publish_event(self, event: dict[str, object]) -> None:
        """Called for each pipeline event that is not a verdict, e.g. a sequential drift alarm
        (``{"type": "drift", "camera_id", "detector", "lifecycle": "start"|"end", "seq", "capture_ts",
        "statistic", "threshold"}``, agent.scoring.drift.DriftEvent.to_dict)."""
        ...

    def stats(self) -> dict[str, float]:
        """Backlog/drop counters for the next health summary."""
        ...

    def close(self) -> None:
        """Flush and release resources (called once on shutdown)."""
        ...


class NullSink:
    """A `Sink` that receives every call and does nothing: a baseline for benchmarks, and a base
    for sinks that only care about some calls (override those)."""

    def publish_verdict(self, verdict: Verdict, frame: Frame) -> None:
        pass

    def publish_health(self, summary: HealthSummary) -> None:
        pass

    def publish_camera_status(self, camera_id: str, state: CameraState, reason: str) -> None:
        pass

    def publish_event(self, event: dict[str, object]) -> None:
        pass

    def stats(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass
