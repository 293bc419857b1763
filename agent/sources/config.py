"""Config of the frame source stage."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from agent.configbase import StrictModel

__all__ = ["ReconnectConfig", "SourceConfig"]


class ReconnectConfig(StrictModel):
    initial_s: float = Field(0.5, gt=0, le=60, description="First back-off delay after a failure, seconds.")
    max_s: float = Field(30.0, gt=0, le=3600, description="Cap of the exponential back-off, seconds.")
    multiplier: float = Field(2.0, ge=1.0, le=10.0, description="Back-off growth factor per failure.")
    jitter: float = Field(
        0.0, ge=0.0, lt=1.0, description="Random spread of each delay, ±fraction (0: deterministic delays)."
    )

    @model_validator(mode="after")
    def _check(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be >= initial_s ({self.initial_s})")
        return self


class SourceConfig(StrictModel):
    uri: str = Field(
        "synthetic://default",
        min_length=1,
        description=(
            "Where frames come from: a video file path, an rtsp://, http(s):// URL, a device "
            "index ('0'), a folder of images, or synthetic://<scenario>?seed=N&fps=F&size=WxH."
        ),
    )
    loop: bool = Field(
        False, description="Restart a video file, folder or finite synthetic scenario at its end (no effect on "
        "live cameras)."
    )
    realtime: bool = Field(
        False,
        description="Pace files, folders and synthetic sources at their nominal fps "
        "(live cameras are always real time).",
    )
    fps: float | None = Field(
        None, gt=0, le=1000, description="Nominal fps of folders, synthetic sources without fps= in their "
        "URI, and files (overrides the container's fps); null: from the source, else 25."
    )
    max_frames: int | None = Field(None, ge=1, description="Stop after this many frames (null: no limit).")
    timeout_s: float = Field(
        10.0, gt=0, le=600, description="Open and read timeout of network streams (rtsp/http), seconds; a "
        "stream silent for longer is reconnected."
    )
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig, description="Live-source back-off.")

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, uri: str) -> str:
        from agent.sources.factory import uri_problem  # noqa: PLC0415 (the sources import this module)

        problem = uri_problem(uri)
        if problem is not None:
            raise ValueError(problem)
        return uri
