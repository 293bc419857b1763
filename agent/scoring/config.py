"""Config of calibration, scoring and the PASS/FLAG/BLOCK policy."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from agent.configbase import StrictModel
from agent.verdict import REASON_CODES

__all__ = ["CalibrationConfig", "PolicyConfig"]


class CalibrationConfig(StrictModel):
    frames: int = Field(
        300,
        ge=20,
        le=1_000_000,
        description="Clean frames read (after `skip`) to build a profile; `stride` then subsamples them. "
        "The profile keeps about 2 KB per kept frame in memory while calibrating.",
    )
    stride: int = Field(
        1,
        ge=1,
        le=1000,
        description="Use every k-th frame for conformal calibration scores, so that "
        "consecutive (correlated) frames do not shrink the thresholds.",
    )
    skip: int = Field(0, ge=0, description="Frames to skip at the start (camera auto-exposure settling).")
    block: int = Field(
        25,
        ge=1,
        le=100_000,
        description="Kept frames per block. Blocks of consecutive frames go alternately to the FIT part "
        "(quantiles, robust location/scatter) and the CALIBRATION part (conformal scores), so "
        "calibration scores are out-of-sample even though neighbouring frames are correlated. "
        "Shrunk automatically so that there are at least 10 blocks.",
    )
    fit_fraction: float = Field(
        0.5,
        ge=0.2,
        le=0.8,
        description="Share of blocks used to FIT the scorers; the rest calibrates their p-values.",
    )
    tail_k: int = Field(
        25,
        ge=5,
        le=1000,
        description="Largest calibration scores used to fit the generalized-Pareto tail that extrapolates "
        "p-values below 1/(n+1) (capped at a fifth of the calibration frames).",
    )
    frozen_window: int = Field(
        2,
        ge=1,
        le=100,
        description="`frozen` scores the largest diff_prev over the last k frames: k=2 ignores a single "
        "repeated frame (encoders repeat one now and then) and costs one frame of detection delay.",
    )
    tolerances: dict[str, float] = Field(
        default_factory=dict,
        description="Per-test tolerance overrides {test: delta}: the smallest score difference that matters "
        "(calibration scores are widened by delta; see docs/detection.md for each test's default and units).",
    )
    glare_floor: float = Field(
        1e-3,
        gt=0,
        le=0.1,
        description="Clipped-pixel share below which clipping counts as specular highlights, not glare: "
        "the glare score is log(1 + clip_frac / glare_floor). Sets the score's scale, not a threshold.",
    )


    @field_validator("tolerances")
    @classmethod
    def _check_tolerances(cls, tol: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in tol.items() if not (v >= 0.0 and v < float("inf"))}
        if bad:
            raise ValueError(f"tolerances must be finite numbers >= 0, but got {bad}")
        return tol


class PolicyConfig(StrictModel):
    profile: Path | None = Field(
        None, description="Calibration profile (JSON) made by `edge-guard calibrate`. null: calibrate at start-up."
    )
    alpha_flag: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="Family-wise false-alarm rate for FLAG: the share of clean frames flagged by any test "
        "(the tests' p-values are combined, see docs/detection.md).",
    )
    alpha_block: float = Field(
        0.001,
        gt=0,
        lt=1,
        description="Family-wise false-alarm rate for BLOCK (must be <= alpha_flag).",
    )
    disabled_reasons: list[str] = Field(
        default_factory=list, description="Reason codes never raised (e.g. ['low_saturation'])."
    )

    @field_validator("disabled_reasons")
    @classmethod
    def _check_reasons(cls, codes: list[str]) -> list[str]:
        unknown = sorted(set(codes) - set(REASON_CODES))
        if unknown:
            raise ValueError(f"unknown reason codes {unknown}; expected some of {list(REASON_CODES)}")
        return codes

    @model_validator(mode="after")
    def _check(self) -> PolicyConfig:
        if self.alpha_block > self.alpha_flag:
            raise ValueError(
                f"alpha_block ({self.alpha_block}) must be <= alpha_flag ({self.alpha_flag})"
            )
        return self
