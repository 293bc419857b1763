"""Config of calibration, scoring and the PASS/FLAG/BLOCK policy."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from agent.configbase import StrictModel

__all__ = ["CalibrationConfig", "PolicyConfig"]


class CalibrationConfig(StrictModel):
    frames: int = Field(300, ge=20, le=1_000_000, description="Clean frames used to build a profile.")
    stride: int = Field(
        1,
        ge=1,
        le=1000,
        description="Use every k-th frame for conformal calibration scores, so that "
        "consecutive (correlated) frames do not shrink the thresholds.",
    )
    skip: int = Field(0, ge=0, description="Frames to skip at the start (camera auto-exposure settling).")


class PolicyConfig(StrictModel):
    profile: Path | None = Field(
        None, description="Calibration profile (JSON) made by `edge-guard calibrate`. null: calibrate at start-up."
    )
    alpha_flag: float = Field(
        0.01, gt=0, lt=1, description="Per-test false-alarm rate for FLAG (a p-value below it flags)."
    )
    alpha_block: float = Field(
        0.001, gt=0, lt=1, description="Per-test false-alarm rate for BLOCK (must be <= alpha_flag)."
    )
    disabled_reasons: list[str] = Field(
        default_factory=list, description="Reason codes never raised (e.g. ['low_saturation'])."
    )

    @model_validator(mode="after")
    def _check(self) -> PolicyConfig:
        if self.alpha_block > self.alpha_flag:
            raise ValueError(
                f"alpha_block ({self.alpha_block}) must be <= alpha_flag ({self.alpha_flag})"
            )
        return self
