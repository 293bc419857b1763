"""The periodic health summary: a typed, versioned record of what the guard saw."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HEALTH_SCHEMA_VERSION", "HealthSummary", "LatencySummary", "Quantiles"]

HEALTH_SCHEMA_VERSION: int = 1


class Quantiles(BaseModel):
    model_config = ConfigDict(extra="forbid")
    p5: float | None = None
    p50: float | None = None
    p95: float | None = None


class LatencySummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    count: int = 0


class HealthSummary(BaseModel):
    """One health summary per camera per interval (docs/architecture.md lists every field)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(HEALTH_SCHEMA_VERSION, description="Bumped on incompatible changes.")
    camera_id: str
    seq: int = Field(description="Summary sequence number since start; gaps mean lost summaries.")
    window_start_ts: float = Field(description="Wall-clock start of the interval (epoch seconds).")
    window_end_ts: float = Field(description="Wall-clock end of the interval (epoch seconds).")
    frames_in: int = Field(0, description="Frames read from the source in the interval.")
    frames_processed: int = Field(
        0, description="Frames measured in the interval: guarded (a verdict each) or used for calibration."
    )
    frames_dropped: int = Field(0, description="Frames dropped under overload in the interval.")
    frames_corrupt: int = Field(0, description="Frames rejected as corrupt/invalid in the interval.")
    frames_skipped: int = Field(
        0, description="Frame slots a video file's timestamps skipped in the interval with no decode error: "
        "pauses in the recording, a variable frame rate, frames the capture or the demuxer dropped without "
        "a trace, and at the end of a truncated file the frames its container declares that never came. "
        "Not in frames_corrupt: a pause cannot be told from a silent drop.",
    )
    frames_calibrated: int = Field(
        0, description="Frames of the interval used to build the start-up profile (no verdict)."
    )
    phase: str = Field("guarding", description="calibrating (building the profile) or guarding.")
    uptime_s: float = Field(0.0, description="Seconds since the daemon started.")
    fps: float = Field(0.0, description="Processed frames per second over the interval.")
    source_state: str = Field("unknown", description="Source state at the end of the interval.")
    source_reconnects: int = Field(0, description="Reconnect attempts in the interval.")
    latency: dict[str, LatencySummary] = Field(
        default_factory=dict, description="Per-stage latency (read, stats, model, score, total)."
    )
    decisions: dict[str, int] = Field(default_factory=dict, description="Count per PASS/FLAG/BLOCK.")
    reasons: dict[str, int] = Field(default_factory=dict, description="Frames per reason code.")
    stats: dict[str, Quantiles] = Field(
        default_factory=dict, description="p5/p50/p95 of each frame statistic."
    )
    confidence: Quantiles = Field(default_factory=Quantiles, description="Model confidence quantiles.")
    class_counts: dict[str, int] = Field(default_factory=dict, description="Top-1 class frequency.")
    drift: dict[str, float] = Field(
        default_factory=dict, description="Drift scores of the window against the profile."
    )
    drift_alarms: list[str] = Field(default_factory=list, description="Drift detectors in alarm.")
    errors: dict[str, int] = Field(default_factory=dict, description="Counted errors by kind.")
    backend: dict[str, str] = Field(default_factory=dict, description="stats/model backends in use.")
    model_sha256: str | None = None
    profile_id: str | None = None
    config_hash: str | None = None
    gpu: dict[str, float] | None = Field(
        None,
        description="GPU health (utilization %, memory used/total MiB, temperature C, clocks MHz) from NVML; "
        "null when no NVIDIA driver/NVML is available.",
    )
    publisher: dict[str, float] = Field(
        default_factory=dict, description="Publisher backlog: queued messages/bytes, oldest age, drops."
    )
