"""Config of calibration, scoring and the PASS/FLAG/BLOCK policy."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from agent.configbase import StrictModel
from agent.gpu.squeeze import parse_squeezers
from agent.verdict import REASON_CODES

__all__ = [
    "ALL_TESTS", "ALWAYS_RAISED", "CalibrationConfig", "DriftConfig", "PolicyConfig", "SqueezeConfig", "TamperConfig",
]

#: The ``calibration.tolerances`` key that applies to every test not named (``{"*": 0}``: exact p-values).
ALL_TESTS = "*"
#: Reason codes no policy can disable, and why.
ALWAYS_RAISED: dict[str, str] = {
    "resolution": "a frame of another size than the profile's cannot be scored at all (recalibrate for the new "
    "resolution instead)",
    "model_output": "a frame whose model output is NaN or otherwise unusable has no output to pass on",
}


class SqueezeConfig(StrictModel):
    enabled: bool = Field(
        False,
        description="Feature squeezing (reason `adversarial`): run the model also on a bit-depth-reduced and a "
        "median-filtered copy of each frame, in the same batch, and score the largest L1 distance between the "
        "probability vectors. Costs two extra model passes per frame, hence off by default; the cheap "
        "input-level test (`adversarial_hf`) is always on. Classifiers only.",
    )
    squeezers: str = Field(
        "bits:5,median:3",
        description="Squeezed copies, comma-separated: bits:B (bit depth B, 1..7) and median:3 (3x3 median), "
        "applied to the model-input canvas (same definitions on CPU and GPU, agent/gpu/squeeze.py).",
    )

    @field_validator("squeezers")
    @classmethod
    def _check_squeezers(cls, text: str) -> str:
        if not parse_squeezers(text):
            raise ValueError("squeezers must name at least one squeezer, e.g. 'bits:5,median:3'")
        return text


class CalibrationConfig(StrictModel):
    frames: int = Field(
        300,
        ge=20,
        le=1_000_000,
        description="Clean frames read (after `skip`) to build a profile; `stride` then subsamples them. "
        "Calibration keeps about 2 KB per kept frame in memory, 40-55 KB where it sees images (the `warped` "
        "test's 256-column detail image): 1 000 kept frames take about 50 MB, and calibration warns above 1 GB.",
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
        description="Kept frames per block (shrunk automatically to give at least 10 blocks). Each block's "
        "calibration scores come from tests fitted without it, the neighbouring blocks of its fold (at "
        "most 12 folds) and `guard_blocks` blocks either side (cross-fitting), and the family-wise level "
        "is calibrated on each frame's p-value against the other, distant blocks only: correlated "
        "neighbouring frames never vouch for each other, so alpha is the false-alarm rate on a stretch of "
        "video the calibration has not seen.",
    )
    guard_blocks: int = Field(
        1,
        ge=0,
        le=10,
        description="Blocks on each side of a block also left out when it is scored (a time buffer between "
        "the frames scored and the frames they are compared with).",
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
        "(calibration scores are widened by delta; see docs/detection.md for each test's default and units). "
        "Key '*' applies to every test not named: {'*': 0} gives exact conformal p-values (clean FLAG rate about "
        "alpha on a camera whose calibration saw its usual variety; the defaults keep it at most alpha).",
    )
    exact_when_resolved: bool = Field(
        True,
        description="Drop the default tolerances (exact conformal p-values, clean FLAG rate about alpha) when the "
        "calibration holds the 1/alpha_flag independent scene states that alpha_flag needs and its last third, "
        "guarded against the rest, confirms the level. Otherwise (the calibrator warns) they stay and keep the "
        "rate at most alpha. Tolerances named in `tolerances` always apply, and so do those of covered, frozen, "
        "defocused, moved, occluded and warped (the smallest event each names).",
    )
    squeeze: SqueezeConfig = Field(default_factory=SqueezeConfig, description="Feature squeezing (adversarial).")
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
        from agent.scoring.base import TEST_REGISTRY  # noqa: PLC0415 (the tests import this module)

        bad = {k: v for k, v in tol.items() if not (v >= 0.0 and v < float("inf"))}
        if bad:
            raise ValueError(f"tolerances must be finite numbers >= 0, but got {bad}")
        unknown = sorted(set(tol) - set(TEST_REGISTRY) - {ALL_TESTS})
        if unknown:
            raise ValueError(f"tolerances names unknown tests {unknown}; expected some of {sorted(TEST_REGISTRY)} "
                             f"or {ALL_TESTS!r} (every test not named)")
        return tol


class TamperConfig(StrictModel):
    raise_frames: int = Field(
        3, ge=1, le=1000, description="Consecutive frames a tamper test (covered, frozen, defocused, moved, "
        "occluded) must fire on before the tamper alarm is raised (3 frames = 0.12 s at 25 fps).",
    )
    clear_frames: int = Field(
        3, ge=1, le=1000, description="Consecutive clean-looking frames that clear a raised tamper alarm.",
    )
    clear_alpha: float = Field(
        0.1, gt=0, lt=1, description="Hysteresis: a raised alarm stays on (and keeps flagging) while the test's "
        "family-wise p-value is <= this looser level; above it a frame counts towards clearing.",
    )


class DriftConfig(StrictModel):
    window: int = Field(
        250, ge=20, le=1_000_000, description="Frames in the sliding window whose distributions are compared "
        "with the profile (PSI per statistic, confidence, classes, detections) in health summaries.",
    )
    false_alarm_frames: float = Field(
        100_000.0, ge=100, description="Target mean number of clean frames between false sequential drift "
        "alarms (about 1 h at 25 fps); the CUSUM threshold is set by a block bootstrap of the calibration "
        "frames' out-of-block p-values (temporally correlated, not i.i.d.).",
    )
    allowance: float = Field(
        1.0, gt=0, le=10, description="CUSUM allowance k in nats: per-frame surprise -ln p above its clean mean "
        "plus k accumulates (k = 1: p-values e times smaller than on clean frames, on average).",
    )


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
    tamper: TamperConfig = Field(default_factory=TamperConfig, description="Tamper alarms with hysteresis.")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="Drift over windows (health summaries).")

    @field_validator("disabled_reasons")
    @classmethod
    def _check_reasons(cls, codes: list[str]) -> list[str]:
        unknown = sorted(set(codes) - set(REASON_CODES))
        if unknown:
            raise ValueError(f"unknown reason codes {unknown}; expected some of {list(REASON_CODES)}")
        for code in codes:
            if code in ALWAYS_RAISED:
                raise ValueError(f"'{code}' cannot be disabled: {ALWAYS_RAISED[code]}")
        return codes

    @model_validator(mode="after")
    def _check(self) -> PolicyConfig:
        if self.alpha_block > self.alpha_flag:
            raise ValueError(
                f"alpha_block ({self.alpha_block}) must be <= alpha_flag ({self.alpha_flag})"
            )
        return self
