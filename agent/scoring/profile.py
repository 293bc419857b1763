"""The calibration profile: a versioned JSON record of what clean frames look like.

A profile is made once per camera (``edge-guard calibrate`` or the start-up calibration)
and holds:

* identity: ``profile_id`` (hash of the content), ``created_at``, the stats contract
  version, tile grid, frame width/height, model sha256 and input size, config hash;
* per-statistic robust distributions: quantiles (``QUANTILE_LEVELS``) of every scalar
  statistic and every transformed feature;
* the robust location/scatter of the feature vector (``robust``), per-tile medians/MADs
  (``tiles``, descriptive: ``patch`` and ``defocused`` keep their own tile models in their
  test parameters), the model-output score distribution (``model``);
* every test's learned parameters and its calibration scores (``tests``), from which the
  conformal p-values and the family-wise combination are rebuilt at load time.

Loading a file that is not a profile, is corrupt, or was written by another profile
format or stats contract version raises ProfileError; ``check_compatible`` refuses a
profile made for another model, resolution or grid.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import ProfileError
from agent.scoring import adversarial, ood, patch, rules, tamper, view, warp  # noqa: F401  (importing registers the tests)
from agent.scoring.base import Test, make_test
from agent.scoring.config import CalibrationConfig
from agent.stats.finish import STATS_VERSION

__all__ = [
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "QUANTILE_LEVELS",
    "Bins",
    "Distribution",
    "ForwardCheckRecord",
    "ModelProfile",
    "Profile",
    "RobustProfile",
    "TestProfile",
    "TileProfile",
]

PROFILE_FORMAT = "edge-guard-profile"
#: Bumped on any incompatible change of this file's schema or of the tests' definitions.
PROFILE_VERSION: int = 8
QUANTILE_LEVELS: tuple[float, ...] = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)

OptFloat = float | None


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Record):
    """Quantiles (at the profile's ``quantile_levels``) of one quantity over calibration frames."""

    n: int = Field(ge=0, description="Frames where the quantity was defined (not NaN).")
    quantiles: list[OptFloat] = Field(description="Values at quantile_levels; null when n = 0.")


class Bins(_Record):
    """Reference bins of one quantity for drift: bin b of v is searchsorted(edges, v, 'right')."""

    edges: list[float] = Field(description="Ascending, distinct bin edges (calibration quantiles).")
    shares: list[float] = Field(description="Share of calibration frames per bin (len(edges) + 1).")


class RobustProfile(_Record):
    """Robust location and scatter of the transformed statistics vector (all calibration frames)."""

    features: list[str]
    location: list[float]
    scatter: list[list[float]]


class TileProfile(_Record):
    """Per-tile medians and MADs (scaled to a normal sd by 1.4826) of each tile statistic."""

    fields: list[str]
    median: list[list[list[OptFloat]]] = Field(description="(rows, cols, fields).")
    mad: list[list[list[OptFloat]]] = Field(description="(rows, cols, fields).")


class ModelProfile(_Record):
    """Distribution of the model's output scores on clean frames."""

    score_kind: str = Field(description="What ood_model scores: energy, msp or detection.")
    confidence: Distribution
    entropy: Distribution | None = None
    energy: Distribution | None = None
    detections: Distribution | None = None
    top1_counts: dict[str, int] = Field(default_factory=dict, description="Top-1 class frequency.")
    detection_score: Distribution | None = Field(None, description="Detectors: mean detection score per frame.")
    detection_log_area: Distribution | None = Field(None, description="Detectors: median log box area share.")
    detection_cells: list[int] | None = Field(
        None, description="Detectors: box centres per cell of a coarse grid (detector_outputs.DETECTION_GRID)."
    )


class TestProfile(_Record):
    """One calibrated test: parameters and its calibration scores (null = not applicable)."""

    __test__ = False
    name: str
    reason: str
    tolerance: float = Field(ge=0, description="Calibration scores are widened by this (score units).")
    params: dict[str, Any] = Field(default_factory=dict)
    calibration_scores: list[OptFloat]


class ForwardCheckRecord(_Record):
    """The calibrator's forward check (forward.py): the window's last ``future`` kept frames,
    guarded with exact p-values calibrated on the ``past`` before them, ``flagged`` at ``alpha``."""

    past: int = Field(ge=0)
    future: int = Field(ge=0)
    flagged: int = Field(ge=0)
    alpha: float
    states: float = Field(ge=0.0, description="Independent scene states of the future part.")
    p_value: float = Field(ge=0.0, le=1.0, description="P(that many flagged episodes) for a stationary scene.")
    passed: bool = Field(description="True: exact p-values kept; false: the default tolerances stayed.")


class Profile(_Record):
    """A calibration profile (see the module docstring). Build it with ``Calibrator.build``."""

    format: Literal["edge-guard-profile"] = "edge-guard-profile"
    version: int = PROFILE_VERSION
    profile_id: str = Field(description="Hash of the profile's content (created_at excluded).")
    created_at: str = Field(description="ISO 8601 UTC time of creation.")
    stats_version: int = Field(description="Stats contract version of the statistics.")
    camera_id: str | None = None
    grid: tuple[int, int]
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    model_sha256: str | None = None
    model_input_wh: tuple[int, int] | None = None
    config_hash: str | None = None
    calibration: CalibrationConfig
    n_frames: int = Field(ge=0, description="Frames read after `skip`.")
    n_kept: int = Field(ge=0, description="Frames kept after `stride`.")
    n_fit: int = Field(ge=0, description="Kept frames the tests were fitted on (all, cross-fitted).")
    n_cal: int = Field(ge=0, description="Kept frames with a calibration score (all kept frames).")
    block: int = Field(ge=1, description="Block length actually used (calibration frame i is in block i // block).")
    autocorrelation_frames: float | None = Field(
        default=None, ge=1.0,
        description="Integrated autocorrelation time of the kept frames' features, in kept frames (ess.py).",
    )
    effective_frames: float | None = Field(
        default=None, ge=0.0, description="Independent scene states the kept frames hold: n_kept / autocorrelation."
    )
    forward_check: ForwardCheckRecord | None = Field(
        default=None, description="The check that decided exact p-values (null: not run, e.g. alpha not resolved)."
    )
    quantile_levels: list[float] = Field(default_factory=lambda: list(QUANTILE_LEVELS))
    statistics: dict[str, Distribution]
    features: dict[str, Distribution]
    robust: RobustProfile
    tiles: TileProfile
    model: ModelProfile | None = None
    drift_bins: dict[str, Bins] = Field(
        default_factory=dict, description="Reference bins of each monitored quantity (drift.py)."
    )
    tests: list[TestProfile]

    # --- identity -------------------------------------------------------------------------
    @staticmethod
    def content_id(data: dict[str, Any]) -> str:
        """Hash of a profile dict without its id and creation time (16 hex digits)."""
        body = {k: v for k, v in data.items() if k not in ("profile_id", "created_at")}
        blob = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # --- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the profile as JSON atomically (temporary file + rename); returns the path."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        text = json.dumps(self.model_dump(mode="json"), indent=1, allow_nan=False)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            # strerror, not str(exc): that names the temporary file, not the user's path
            raise ProfileError(f"cannot write profile to {target}: {exc.strerror or exc}") from exc
        return target

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read and validate a profile; ProfileError when missing, corrupt or of another version."""
        src = Path(path)
        try:
            text = src.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ProfileError(f"profile {src} does not exist: create it with `edge-guard calibrate`") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(f"cannot read profile {src}: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"profile {src} is not valid JSON ({exc}); recalibrate") from exc
        return cls.from_dict(data, source=str(src))

    @classmethod
    def from_dict(cls, data: object, source: str = "<dict>") -> Profile:
        """Validate a decoded profile (checks format and versions first for a clear message)."""
        if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
            raise ProfileError(f"{source} is not an edge-guard profile (expected format {PROFILE_FORMAT!r})")
        if data.get("version") != PROFILE_VERSION:
            raise ProfileError(
                f"profile {source} has format version {data.get('version')!r}, but this edge-guard reads "
                f"version {PROFILE_VERSION}: recalibrate with `edge-guard calibrate`"
            )
        if data.get("stats_version") != STATS_VERSION:
            raise ProfileError(
                f"profile {source} was made with stats contract v{data.get('stats_version')!r}, but this "
                f"edge-guard computes v{STATS_VERSION}: recalibrate with `edge-guard calibrate`"
            )
        try:
            profile = cls.model_validate(data)
        except ValidationError as exc:
            first = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]
            )
            raise ProfileError(f"profile {source} is corrupt ({exc.error_count()} errors: {first})") from exc
        empty = [t.name for t in profile.tests if all(v is None for v in t.calibration_scores)]
        if empty:
            raise ProfileError(f"profile {source} is corrupt: tests {empty} have no calibration scores")
        return profile

    # --- use ------------------------------------------------------------------------------
    def check_compatible(
        self, model_sha256: str | None, width: int | None, height: int | None, grid: tuple[int, int]
    ) -> None:
        """Raise ProfileError unless this run's model, resolution and grid match the profile
        (``width``/``height`` None: the frame size is not known yet and is checked later)."""
        size_known = width is not None and height is not None
        same = (
            self.model_sha256 == model_sha256
            and (not size_known or (self.width, self.height) == (width, height))
            and tuple(self.grid) == tuple(grid)
        )
        if same:
            return

        def model(sha: str | None) -> str:
            return f"model sha {sha[:12]}…" if sha else "no model"

        at = f" at {width}x{height}" if size_known else ""
        raise ProfileError(
            f"profile {self.profile_id} was calibrated for {model(self.model_sha256)} at "
            f"{self.width}x{self.height} (grid {self.grid[0]}x{self.grid[1]}); this run uses "
            f"{model(model_sha256)}{at} (grid {grid[0]}x{grid[1]}): "
            f"recalibrate with `edge-guard calibrate`"
        )

    def block_ids(self) -> list[int]:
        """Block id of every calibration frame (consecutive runs of ``block`` frames)."""
        return [i // self.block for i in range(self.n_cal)]

    def test_names(self) -> list[str]:
        return [t.name for t in self.tests]

    def build_tests(self) -> list[Test]:
        """Instantiate every test with its parameters and conformal calibration."""
        tests: list[Test] = []
        for tp in self.tests:
            try:
                test = make_test(tp.name, self.calibration)
                test.load_params(tp.params)
                test.set_tolerance(tp.tolerance)  # what calibration chose (calibrate.py: tolerances)
            except (KeyError, ValueError, TypeError) as exc:
                raise ProfileError(f"profile {self.profile_id}: cannot rebuild test {tp.name!r}: {exc}") from exc
            scores = [math.nan if v is None else v for v in tp.calibration_scores]
            test.calibrate(scores, self.calibration.tail_k)
            tests.append(test)
        return tests
