"""Build a Profile from clean frames (river style: ``update()`` per frame, then ``build()``).

Frames go through three steps:

1. ``skip`` the first frames (auto-exposure settling), then keep every ``stride``-th of the
   next ``frames`` frames (``done`` turns true once ``frames`` were read).
2. Cut the kept frames into blocks of ``block`` consecutive frames (shrunk so there are at
   least ``MIN_BLOCKS``). Blocks rather than single frames, because consecutive video frames
   are nearly identical: a frame is never judged against its own near-twins.
3. Every test is fitted on all kept frames (its run-time parameters). Tests that learn
   parameters (``Test.fitted``) are also **cross-fitted**: the blocks are grouped into at most
   ``MAX_FOLDS`` folds of neighbouring blocks, and the blocks of a fold are scored by a copy
   fitted without that fold and g = ``guard_blocks`` blocks either side (the full fit where
   fewer than ``MIN_KEPT // 2`` training frames would remain), so every kept frame gets an
   out-of-sample calibration score and none is wasted on a separate FIT part. Stateful tests
   restart at every block. The scores become the tests' conformal calibration sets; the block
   ids go into the profile, from which the policy calibrates the family-wise level on
   out-of-block p-values (family.py).

With an ``image`` per frame the Observation also carries a thumbnail (``moved``), and with a
``squeeze`` distance the squeezing test applies; tests that never applied on the calibration
frames are left out of the profile, and so are those whose fit on all of them finds the camera
unsuited (``Test.inapplicable``: ``warped`` on a view mostly in motion), with a log line saying why.

**Tolerances.** Each test's physical tolerance (conformal.py) is recorded in the profile. When
``build`` is given ``alpha_flag`` and the kept frames hold the 1/alpha_flag independent scene
states that level needs (ess.py; the case where no correlation warning is logged), the default
tolerances are recorded as 0 (but those of the event tests, ``Test.keeps_tolerance``: the
smallest change the reason names): the calibration then resolves alpha by itself and the p-values
are exact conformal ones, unless the window's last third, guarded with exact p-values against
the rest, flags implausibly often for a stationary scene (forward.py: the scene changed along
the window; a warning says so). Tolerances named in ``calibration.tolerances`` are kept as given;
``calibration.exact_when_resolved: false`` keeps the defaults in every case.

Deterministic: the same frames in the same order give the same profile (and profile_id).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Self

import numpy as np
import numpy.typing as npt

from agent.errors import ProfileError
from agent.model.types import ModelOutput
from agent.scoring import adversarial, ood, patch, rules, tamper, view, warp  # noqa: F401  (registers the tests)
from agent.scoring.base import Test, make_test
from agent.scoring.config import ALL_TESTS, CalibrationConfig
from agent.scoring.ess import EffectiveFrames, effective_frames, frames_needed
from agent.scoring.forward import ForwardCheck, ScoreSeries, forward_check
from agent.scoring.observation import FEATURES, U8, Observation, TileMotion, observe, thumbnail_bgr
from agent.scoring.profile import (
    QUANTILE_LEVELS,
    Bins,
    Distribution,
    ModelProfile,
    Profile,
    RobustProfile,
    TestProfile,
    TileProfile,
)
from agent.stats.finish import STATS_VERSION
from agent.stats.types import SCALAR_FIELDS, TILE_FIELDS, FrameStats

__all__ = ["DEFAULT_TESTS", "MAX_FOLDS", "MIN_BLOCKS", "MIN_KEPT", "OPTIONAL_TESTS", "Calibrator", "block_ids"]

logger = logging.getLogger(__name__)

#: Tests every profile gets (``ood_model`` is added when the frames had model outputs).
DEFAULT_TESTS: tuple[str, ...] = (
    "dark",
    "overexposed",
    "glare",
    "blur",
    "noise",
    "low_saturation",
    "low_contrast",
    "color_cast",
    "covered",
    "frozen",
    "ood_stats",
    "patch",
    "adversarial_hf",
    "defocused",
    "moved",
    "occluded",
    "warped",
)
#: Tests added when the calibration frames have what they need: model outputs (classifier or
#: detector) or squeezing distances. A test that never applies is left out of the profile.
OPTIONAL_TESTS: tuple[str, ...] = ("ood_model", "ood_detections", "adversarial_squeeze")
MIN_BLOCKS: int = 10
#: Quantile levels of the drift reference bins' edges (equal edges merged).
DRIFT_EDGE_LEVELS: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Most cross-fitting folds (fits per fitted test) at calibration.
MAX_FOLDS: int = 12
#: Fewest kept frames a profile can be built from.
MIN_KEPT: int = 20
#: A calibration whose kept frames would hold more memory than this is warned about at its first
#: kept frame (with images, a kept frame is 40-55 kB: mostly ``warped``'s detail image).
MEMORY_WARNING_BYTES: int = 1 << 30

FloatArray = npt.NDArray[np.float64]


def _nbytes(record: object) -> int:
    """Bytes held by the arrays among a dataclass's fields (the rest is small and fixed)."""
    fields = dataclasses.fields(record) if dataclasses.is_dataclass(record) else ()
    return sum(v.nbytes for f in fields if isinstance(v := getattr(record, f.name), np.ndarray))


def block_ids(n: int, block: int) -> tuple[npt.NDArray[np.int64], int]:
    """Block id of each of ``n`` kept frames (consecutive runs) and the block length used.

    The length is ``block`` shrunk to n // MIN_BLOCKS so that there are at least MIN_BLOCKS
    blocks (the last one may be shorter).
    """
    length = max(1, min(block, n // MIN_BLOCKS))
    return np.arange(n, dtype=np.int64) // length, length


def _quantiles(values: FloatArray) -> Distribution:
    v = values[~np.isnan(values)]
    if v.size == 0:
        return Distribution(n=0, quantiles=[None] * len(QUANTILE_LEVELS))
    return Distribution(n=int(v.size), quantiles=[float(q) for q in np.quantile(v, QUANTILE_LEVELS)])


def _nan_median_mad(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Median and 1.4826*MAD over axis 0 ignoring NaN; NaN where a column is all NaN."""
    flat = x.reshape(x.shape[0], -1)
    med = np.full(flat.shape[1], np.nan)
    mad = np.full(flat.shape[1], np.nan)
    for j in range(flat.shape[1]):
        col = flat[:, j][~np.isnan(flat[:, j])]
        if col.size:
            med[j] = np.median(col)
            mad[j] = 1.4826 * np.median(np.abs(col - med[j]))
    return med.reshape(x.shape[1:]), mad.reshape(x.shape[1:])


def _nested(a: FloatArray) -> list[list[list[float | None]]]:
    return [[[None if math.isnan(v) else float(v) for v in cell] for cell in row] for row in a]


class Calibrator:
    """Collects clean frames and builds a Profile (see the module docstring).

    >>> cal = Calibrator(CalibrationConfig(frames=300), grid=(4, 4))
    >>> # for each clean frame: cal.update(stats, output); stop when cal.done
    >>> # profile = cal.build(model_sha256=..., config_hash=...)
    """

    def __init__(self, cal_cfg: CalibrationConfig, grid: tuple[int, int], *, camera_id: str | None = None) -> None:
        rows, cols = grid
        if rows < 1 or cols < 1:
            raise ValueError(f"grid must be (rows, cols) with both >= 1, but got {grid}")
        self.cfg = cal_cfg
        self.grid = (int(rows), int(cols))
        self.camera_id = camera_id
        self._seen = 0
        self._used = 0
        self._kept: list[Observation] = []
        self._motion = TileMotion(grid)  # sees every frame, kept or not (lagged differences)
        self._size: tuple[int, int] | None = None

    @property
    def n(self) -> int:
        """Frames given to ``update`` so far (skipped ones included)."""
        return self._seen

    @property
    def n_kept(self) -> int:
        """Frames kept for the profile (after skip and stride)."""
        return len(self._kept)

    @property
    def done(self) -> bool:
        """True once ``skip + frames`` frames were given: call ``build()``."""
        return self._used >= self.cfg.frames

    @property
    def progress(self) -> float:
        """Share of the needed frames seen, 0..1 (for a progress bar)."""
        return min(1.0, self._seen / (self.cfg.skip + self.cfg.frames))

    def update(
        self,
        stats: FrameStats,
        output: ModelOutput | None = None,
        *,
        image: U8 | None = None,
        squeeze: float | None = None,
        live: bool = True,
    ) -> Self:
        """Add one clean frame's statistics and model output (and its image / squeezing distance).

        ``image`` (the BGR frame) calibrates the image-based tests (``moved``'s reference
        thumbnail, ``adversarial_hf``'s chroma energy); ``squeeze`` (adversarial.FeatureSqueezer)
        calibrates ``adversarial_squeeze``; ``live`` is ``Frame.live`` (``frozen`` applies to
        live sources only).
        """
        if stats.grid != self.grid:
            raise ProfileError(f"calibration expects tile grid {self.grid}, but a frame has grid {stats.grid}")
        size = (stats.width, stats.height)
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise ProfileError(
                f"calibration frames must keep one size, but got {size[0]}x{size[1]} after "
                f"{self._size[0]}x{self._size[1]}: calibrate on a fixed-resolution stream"
            )
        self._seen += 1
        if self.done:
            return self
        small = None if image is None else thumbnail_bgr(image)
        motion = self._motion.update(small)
        if self._seen <= self.cfg.skip:
            return self
        if self._used % self.cfg.stride == 0:
            self._kept.append(
                observe(stats, output, live=live, floor=self.cfg.glare_floor, image=image, squeeze=squeeze,
                        small=small, motion=motion)
            )
            if len(self._kept) == 1:
                self._warn_memory(self._kept[0])
        self._used += 1
        return self

    def _warn_memory(self, first: Observation) -> None:
        """Warn when the frames this calibration will keep would hold more than MEMORY_WARNING_BYTES."""
        per_frame = _nbytes(first) + _nbytes(first.stats)
        planned = math.ceil(self.cfg.frames / self.cfg.stride)
        if planned * per_frame > MEMORY_WARNING_BYTES:
            logger.warning(
                "calibration: keeping %d frames (calibration.frames=%d, stride=%d) of about %.0f kB each will "
                "hold %.1f GB in memory; raise calibration.stride to keep every k-th frame (a stride near the "
                "scene's correlation time loses almost nothing)",
                planned, self.cfg.frames, self.cfg.stride, per_frame / 1e3, planned * per_frame / 1e9,
            )

    # --- build ----------------------------------------------------------------------------
    def build(
        self,
        *,
        model_sha256: str | None = None,
        model_input_wh: tuple[int, int] | None = None,
        config_hash: str | None = None,
        alpha_flag: float | None = None,
        alpha_block: float | None = None,
    ) -> Profile:
        """Fit and calibrate every test; returns the Profile. Warns when n is small for alpha."""
        obs = self._kept
        if len(obs) < MIN_KEPT or self._size is None:
            raise ProfileError(
                f"calibration needs at least {MIN_KEPT} kept frames, but got {len(obs)} "
                f"(frames={self.cfg.frames}, stride={self.cfg.stride}): give more clean frames"
            )
        blocks, length = block_ids(len(obs), self.cfg.block)
        tests = self._fit_tests(obs)
        scores = self._calibration_scores(tests, obs, blocks, length)
        n_cal = len(obs)
        ess = effective_frames(np.stack([o.features for o in obs]))
        exact = self.cfg.exact_when_resolved and alpha_flag is not None and ess.resolves(alpha_flag)
        check = self._forward_check(tests, scores, blocks, alpha_flag, ess) if exact and alpha_flag else None
        exact = exact and (check is None or check.passed)
        test_profiles: list[TestProfile] = []
        for test in tests:
            vals = scores[test.name]
            if all(math.isnan(v) for v in vals):
                logger.info("test %s never applied on calibration frames: left out of the profile", test.name)
                continue
            test_profiles.append(
                TestProfile(
                    name=test.name,
                    reason=test.reason,
                    tolerance=0.0 if exact and self._drops_tolerance(test) else test.tolerance,
                    params=test.params(),
                    calibration_scores=[None if math.isnan(v) else v for v in vals],
                )
            )
        ood_stats = next(t for t in tests if t.name == "ood_stats")
        data = {
            "profile_id": "",
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "stats_version": STATS_VERSION,
            "camera_id": self.camera_id,
            "grid": self.grid,
            "width": self._size[0],
            "height": self._size[1],
            "model_sha256": model_sha256,
            "model_input_wh": model_input_wh,
            "config_hash": config_hash,
            "calibration": self.cfg,
            "n_frames": self._used,
            "n_kept": len(obs),
            "n_fit": len(obs),
            "n_cal": n_cal,
            "block": length,
            "autocorrelation_frames": ess.autocorrelation,
            "effective_frames": ess.effective,
            "forward_check": None if check is None else dataclasses.asdict(check) | {"passed": check.passed},
            "statistics": self._stat_distributions(obs),
            "features": self._feature_distributions(obs),
            "robust": RobustProfile(**ood_stats.params()),
            "tiles": self._tile_profile(obs),
            "model": self._model_profile(obs, tests),
            "drift_bins": self._drift_bins(obs),
            "tests": test_profiles,
        }
        profile = Profile.model_validate(data)
        profile = profile.model_copy(update={"profile_id": Profile.content_id(profile.model_dump(mode="json"))})
        self._warn_resolution(n_cal, alpha_flag, alpha_block)
        self._warn_correlation(ess, alpha_flag)
        if exact:
            logger.info(
                "calibration: %s resolve alpha_flag=%g: default tolerances dropped, p-values are exact "
                "conformal ones (calibration.exact_when_resolved; the tamper tests and warped keep theirs: the "
                "smallest change they name)", ess.describe(), alpha_flag,
            )
        logger.info(
            "profile %s: %d frames kept (cross-fitted in blocks of %d; %s), tests %s",
            profile.profile_id, len(obs), length, ess.describe(), [t.name for t in test_profiles],
        )
        return profile

    def _forward_check(
        self,
        tests: Sequence[Test],
        scores: dict[str, list[float]],
        blocks: npt.NDArray[np.int64],
        alpha_flag: float,
        ess: EffectiveFrames,
    ) -> ForwardCheck | None:
        """The window's last third guarded with exact p-values (forward.py); warns when it fails."""
        exact_tests = []
        for test in tests:  # (forward_check skips a test that never applied)
            probe = make_test(test.name, self.cfg)
            if self._drops_tolerance(probe):
                probe.set_tolerance(0.0)
            exact_tests.append(ScoreSeries(test.name, scores[test.name], probe.tolerance, probe.resolution))
        check = forward_check(
            exact_tests, blocks, alpha=alpha_flag, autocorrelation=ess.autocorrelation,
            radius=self.cfg.guard_blocks, tail_k=self.cfg.tail_k,
        )
        if check is None or check.passed:
            return check
        logger.warning(
            "calibration: %s, so the scene changed along the calibration window and exact p-values would "
            "flag too often on what follows: default tolerances kept (clean FLAG rate at most alpha, "
            "possibly below). Calibrate on a stretch that shows the camera's usual variety throughout",
            check.describe(),
        )
        return check

    def _drops_tolerance(self, test: Test) -> bool:
        """True when a calibration that resolves alpha records this test's tolerance as 0: a default
        (not set in ``calibration.tolerances``, by name or by '*') that is not part of the reason's
        meaning (``Test.keeps_tolerance``: the tamper tests and ``warped``)."""
        named = test.name in self.cfg.tolerances or ALL_TESTS in self.cfg.tolerances
        return not named and not test.keeps_tolerance

    def _fit_tests(self, obs: Sequence[Observation]) -> list[Test]:
        names = [*DEFAULT_TESTS, *OPTIONAL_TESTS]
        tests = [make_test(name, self.cfg) for name in names]
        applicable: list[Test] = []
        for test in tests:
            test.fit(obs)
            why = test.inapplicable()
            if why is None:
                applicable.append(test)
            else:
                logger.info("test %s does not apply to this camera: %s; left out of the profile", test.name, why)
        return applicable

    def _calibration_scores(
        self, tests: Sequence[Test], obs: Sequence[Observation], blocks: npt.NDArray[np.int64], length: int
    ) -> dict[str, list[float]]:
        """Out-of-sample score of every kept frame under every test (see the module docstring)."""
        g = self.cfg.guard_blocks
        n_blocks = int(blocks[-1]) + 1
        # Folds: contiguous runs of blocks (at most MAX_FOLDS fits per test, however long the clip).
        fold_of_block = np.arange(n_blocks) * min(n_blocks, MAX_FOLDS) // n_blocks
        scores: dict[str, list[float]] = {t.name: [] for t in tests}
        for fold in range(int(fold_of_block[-1]) + 1):
            mine = np.flatnonzero(fold_of_block == fold)
            lo, hi = max(0, int(mine[0]) - g), int(mine[-1]) + g + 1  # blocks [lo, hi) left out
            train = [*obs[: lo * length], *obs[hi * length :]]
            for test in tests:
                scorer = test
                if test.fitted and len(train) >= MIN_KEPT // 2:
                    scorer = make_test(test.name, self.cfg)
                    scorer.fit(train)
                for b in mine.tolist():
                    scorer.reset()
                    scores[test.name].extend(scorer.update(o).score for o in obs[b * length : (b + 1) * length])
        for test in tests:
            test.reset()
        return scores

    @staticmethod
    def _stat_distributions(obs: Sequence[Observation]) -> dict[str, Distribution]:
        x = np.array([[getattr(o.stats, f) for f in SCALAR_FIELDS] for o in obs], dtype=np.float64)
        return {f: _quantiles(x[:, j]) for j, f in enumerate(SCALAR_FIELDS)}

    @staticmethod
    def _feature_distributions(obs: Sequence[Observation]) -> dict[str, Distribution]:
        x = np.stack([o.features for o in obs])
        return {f: _quantiles(x[:, j]) for j, f in enumerate(FEATURES)}

    @staticmethod
    def _drift_bins(obs: Sequence[Observation]) -> dict[str, Bins]:
        columns: dict[str, list[float]] = {f: [float(o.features[j]) for o in obs] for j, f in enumerate(FEATURES)}
        models = [o.model for o in obs if o.model is not None]
        if models:
            columns["confidence"] = [m.confidence for m in models]
            if all(m.detections is not None for m in models):
                columns["detections"] = [float(m.detections or 0) for m in models]
                columns["detection_score"] = [m.boxes.mean_score if m.boxes else math.nan for m in models]
        out: dict[str, Bins] = {}
        for name, values in columns.items():
            v = np.asarray(values, dtype=np.float64)
            v = v[~np.isnan(v)]
            if v.size < MIN_KEPT // 2:
                continue
            edges = np.unique(np.quantile(v, DRIFT_EDGE_LEVELS))
            counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=edges.size + 1)
            out[name] = Bins(edges=edges.tolist(), shares=(counts / v.size).tolist())
        return out

    @staticmethod
    def _tile_profile(obs: Sequence[Observation]) -> TileProfile:
        tiles = np.stack([o.stats.tiles for o in obs])  # (n, rows, cols, fields)
        med, mad = _nan_median_mad(tiles)
        return TileProfile(fields=list(TILE_FIELDS), median=_nested(med), mad=_nested(mad))

    @staticmethod
    def _model_profile(obs: Sequence[Observation], tests: Sequence[Test]) -> ModelProfile | None:
        outs = [o.model for o in obs if o.model is not None]
        if not outs:
            return None
        kind = next(str(t.params()["kind"]) for t in tests if t.name == "ood_model")

        def dist(values: list[float | None]) -> Distribution | None:
            if all(v is None for v in values):
                return None
            return _quantiles(np.array([math.nan if v is None else v for v in values], dtype=np.float64))

        confidence = _quantiles(np.array([m.confidence for m in outs], dtype=np.float64))
        boxes = [m.boxes for m in outs if m.boxes is not None]
        cells = np.sum([b.cells for b in boxes], axis=0) if boxes else None
        return ModelProfile(
            score_kind=kind,
            confidence=confidence,
            entropy=dist([m.entropy for m in outs]),
            energy=dist([m.energy for m in outs]),
            detections=dist([None if m.detections is None else float(m.detections) for m in outs]),
            top1_counts={str(k): v for k, v in sorted(Counter(m.top1 for m in outs).items())},
            detection_score=dist([b.mean_score for b in boxes]) if boxes else None,
            detection_log_area=dist([b.log_area for b in boxes]) if boxes else None,
            detection_cells=None if cells is None else [int(c) for c in cells],
        )

    def _warn_resolution(self, n_cal: int, alpha_flag: float | None, alpha_block: float | None) -> None:
        floor = 1.0 / (n_cal + 1)
        for label, alpha in (("alpha_flag", alpha_flag), ("alpha_block", alpha_block)):
            if alpha is not None and alpha < floor:
                need = math.ceil(1.0 / alpha) - 1
                logger.warning(
                    "%s=%g is below 1/(n+1)=%.4g with n=%d calibration frames: p-values that small come "
                    "from the extrapolated tail (an approximation); calibrate on about %d calibration "
                    "frames (about %d frames at this stride) for an exact conformal level",
                    label, alpha, floor, n_cal, need, need * self.cfg.stride,
                )

    def _warn_correlation(self, ess: EffectiveFrames, alpha_flag: float | None) -> None:
        """Warn when the kept frames hold fewer independent scene states than alpha_flag resolves."""
        if alpha_flag is None or ess.resolves(alpha_flag):
            return
        need = frames_needed(ess.autocorrelation, alpha_flag)
        logger.warning(
            "calibration: %s, fewer than the %.0f that alpha_flag=%g resolves: expect the clean FLAG "
            "rate to follow scene episodes more than alpha; for an exact level calibrate on about %d "
            "frames of the camera's usual variety (%d source frames at stride %d)",
            ess.describe(), 1.0 / alpha_flag - 1.0, alpha_flag, need, need * self.cfg.stride, self.cfg.stride,
        )
