"""Localized anomalies: each tile against its own calibrated profile (reason ``patch``).

Per tile t of the stats grid, the tile feature vector (``TILE_FEATURES``) is

| feature | definition | floor |
|---|---|---|
| ``log_brightness`` | log(2 + brightness_t) | 0.05 |
| ``log_contrast`` | log(2 + contrast_t) | 0.05 |
| ``log_saturation`` | log(2 + saturation_t) | 0.05 |
| ``sharpness`` | log(20/12 + blur_t) - log(1/12 + contrast_t²) | 0.1 |
| ``log_noise`` | log(0.5 + noise_t) | 0.1 |

(code values; the small offsets keep an exposure gain g a near-uniform shift log g of every
tile, even of dim, flat ones, so that it is removed as a frame-wide shift below. Fractions
of dark or clipped pixels are left out: a global exposure change makes them appear in some
tiles only.) ``sharpness`` is the tile's Laplacian energy relative to its variance, a ratio
that a gain leaves alone; its offsets are the two that 8-bit rounding alone gives a flat tile
(rounding error: variance 1/12, and 20/12 after the Laplacian's 1, 1, 1, 1, -4), so a flat tile
reads as what it is, rounding noise. With log(4 + blur_t) - 2 log(2 + contrast_t) instead, a veil
or a dimmer exposure lowered every tile's sharpness: ImageNet-C contrast s2 (30 % of the
contrast) read as blur across the view, ``defocused`` at 0.7-1.4 robust units above
opencv_vtest.avi's clean held-out maximum (0.2), a 60 % darker frame at 0.4-1.2; now both read
as sharper (-2.2..-0.1), while a defocused lens still moves it by 30-40 units.

``TileModel`` holds, per tile and feature, the calibration frames' median m_tf and scale
s_tf = max(spread_tf, pooled_f, floor_f), where spread is the 5..95 % range in normal-sd units
(not the MAD: content that passes through a tile now and then is normal) and pooled_f the
upper quartile of the spreads over tiles (what passes through busy tiles may pass through
any); a frame is standardised as z_tf = (x_tf - m_tf) / s_tf.

**patch score.** A change of the whole frame (exposure, blur, noise) moves every tile; a
patch, a glare spot, a sticker or a burned-in overlay moves a few. So each feature's
frame-wide shift, the median over tiles of the deviation d_tf = x_tf - m_tf, is removed
first (in feature units, before scaling: a gain shifts every tile's log brightness equally,
whatever its spread):

    c_tf = |d_tf - median_t' d_t'f| / s_tf,        score = max over t, f of c_tf

and the tile and feature of the maximum go into ``Reason.detail`` (``tile_row``,
``tile_col``, ``field``). The median over tiles is unaffected by a patch covering fewer than
half the tiles.

**Only where the rest of the view is normal.** A global change does not move every tile
alike: a colour cast lifts a grey tile's saturation far more than a colourful one's, a blur
takes more from busy tiles than from flat ones, so after the frame-wide shift one tile can
still stand out, and ``patch`` named a tile on 43 of the 50 frames of the demo's colour
cast, dark, covered, fog and scene-change faults. So the test applies only while the median
tile is as close to its profile as during calibration: with r = median over tiles of
max over features of |z_tf| (uncentred), not applicable (NaN) when r exceeds the
calibration frames' largest r by more than ``REST_MARGIN`` (2 robust units). Measured: clean
frames r <= 0.7 (synthetic street) / 1.4 (vtest held out); medians over frames: a sticker,
glare spot or burned-in timestamp 0.24-0.95, global changes 5-40 (ImageNet-C s3 on vtest, the
demo's faults; the lowest single frame 2.6, a colour cast). A patch during a global change is
not named, but the frame is flagged for the global change.

**Static, persistent deviations only.** A person walking through a part of the view that was
empty during calibration changes that tile as much as a sticker would. What sets a patch, a
glare spot, an occluder or a burned-in overlay apart is that it does not move. So a tile
counts only while it is *still* — its diff_prev_t is at most m_t + max(3 s_t, 0.1 m_t, 0.1)
code values, m_t and s_t its calibrated median and 1.4826 MAD of diff_prev, i.e. no more
change than sensor noise and compression give a static tile (NaN diff counts as still) —
*and*, when the guard sees pixels, its ``Observation.motion`` (the colour thumbnail's change
over ``MOTION_LAG`` frames) is at most 2 q_t + 0.5 code values, q_t the tile's *quiet* level
(10th percentile of its calibration values: noise and compression with nothing moving; a
median would be that of a busy tile's traffic): a slowly moving flat object or one of the
background's luma but another hue (a purple shirt on a grey road) hardly moves diff_prev,
but changes the thumbnail's colours over 5 frames (by 5-25 code values against q_t ~ 1).
The score of tile t is the smallest c_t over the last ``PATCH_FRAMES`` frames (0 for a frame
where it was not still):

    score = max_t min over the last k frames of (c_t if still else 0)

(measured on opencv_vtest.avi: without this, people walking near the camera after a 40 s
calibration made held-out scores 3x the calibration maximum; with k = 3 they stay within
it; on a video of the synthetic street, the diff_prev gate alone let a walker in a purple
shirt through for 57 frames, 11 % of the held-out frames). Cost: ~40 us per frame on a 4x4 grid.

>>> import numpy as np
>>> d = np.zeros((4, 5)); d[2, 2] = 0.9; d[:, 0] += 0.3   # tile 2 saturated; every tile brighter
>>> c = localized(d, np.full((4, 5), 0.1))
>>> round(float(c.max()), 6), int(np.argmax(c) // 5)
(9.0, 2)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.scoring.base import Params, Test, register
from agent.scoring.config import CalibrationConfig
from agent.scoring.nanstats import nan_median, nan_quantile
from agent.scoring.observation import Observation
from agent.stats.types import TILE_FIELDS, FrameStats

__all__ = [
    "PATCH_FRAMES", "REST_MARGIN", "ROUNDING_VAR", "TILE_FEATURES", "TILE_FLOORS", "Patch", "TileModel", "localized",
    "rest_of_view", "tile_features",
]

FloatArray = npt.NDArray[np.float64]

TILE_FEATURES: tuple[str, ...] = (
    "log_brightness",
    "log_contrast",
    "log_saturation",
    "sharpness",
    "log_noise",
)
TILE_FLOORS: tuple[float, ...] = (0.05, 0.05, 0.05, 0.1, 0.1)
_F = {name: i for i, name in enumerate(TILE_FIELDS)}
#: The scale is the 5 %..95 % range over calibration frames in normal-sd units (not the MAD: a
#: tile's content normally changes now and then, e.g. people walking through it, and the MAD,
#: which looks at the central half of the frames only, would call that an anomaly).
SPREAD_Q: float = 0.05
POOL_Q: float = 0.75
#: Robust units by which the median tile may deviate beyond calibration's largest for ``patch`` to apply.
REST_MARGIN: float = 2.0
#: Frames a tile's deviation must persist (while still) to count.
PATCH_FRAMES: int = 3
#: A tile is still when diff_prev_t <= median + max(STILL_MADS * MAD, STILL_SHARE * median, STILL_MIN).
STILL_MADS: float = 3.0
STILL_SHARE: float = 0.1
STILL_MIN: float = 0.1
#: A tile is still when Observation.motion <= STILL_MOTION_FACTOR * q + STILL_MIN_MOTION, q its
#: STILL_QUIET_Q quantile over calibration frames (thumbnail code values).
STILL_QUIET_Q: float = 0.1
STILL_MOTION_FACTOR: float = 2.0
STILL_MIN_MOTION: float = 0.5
_SPREAD_TO_SD = 2.0 * 1.6449
#: What rounding to integer code values alone gives a flat tile: the error's variance (uniform
#: within +-1/2) and the variance of its Laplacian (1 + 1 + 1 + 1 + 16 times that).
ROUNDING_VAR: float = 1.0 / 12.0
_ROUNDING_LAPLACIAN_VAR: float = 20.0 / 12.0


def tile_features(stats: FrameStats) -> FloatArray:
    """(rows * cols, len(TILE_FEATURES)) transformed per-tile statistics (NaN for empty tiles)."""
    t = stats.tiles.reshape(-1, stats.tiles.shape[-1])  # (T, fields)
    contrast = np.log(2.0 + t[:, _F["contrast"]])
    out: FloatArray = np.column_stack(
        (
            np.log(2.0 + t[:, _F["brightness"]]),
            contrast,
            np.log(2.0 + t[:, _F["saturation"]]),
            np.log(_ROUNDING_LAPLACIAN_VAR + t[:, _F["blur"]]) - np.log(ROUNDING_VAR + t[:, _F["contrast"]] ** 2),
            np.log(0.5 + t[:, _F["noise"]]),
        )
    )
    return out


def localized(d: FloatArray, scale: FloatArray) -> FloatArray:
    """|d_tf - median over tiles of d_tf| / scale_tf for (T, F) deviations (NaN-aware)."""
    out: FloatArray = np.abs(d - nan_median(d)) / scale
    return out


def rest_of_view(d: FloatArray, scale: FloatArray) -> float:
    """Median over tiles of the largest |d_tf| / scale_tf (how far the typical tile is from its profile)."""
    z = np.abs(d) / scale
    if not np.isnan(z).any():  # the usual case, without the NaN-aware reductions' cost
        return float(np.median(z.max(axis=1)))
    typical = float(nan_median(np.fmax.reduce(z, axis=1)))  # fmax: NaN only where a tile has no number
    return 0.0 if math.isnan(typical) else typical


@dataclass(frozen=True, slots=True)
class TileModel:
    """Per-tile, per-feature median and floored robust scale (T, F) of calibration frames."""

    median: FloatArray
    scale: FloatArray

    @classmethod
    def fit(cls, observations: Sequence[Observation]) -> TileModel | None:
        """Median and floored, pooled 5..95 % spread (module docstring) over ``observations``
        (None when there are none)."""
        if not observations:
            return None
        x = np.stack([tile_features(o.stats) for o in observations])  # (n, T, F)
        lo, med, hi = nan_quantile(x, [SPREAD_Q, 0.5, 1.0 - SPREAD_Q])
        spread = (hi - lo) / _SPREAD_TO_SD
        med = np.where(np.isnan(med), 0.0, med)
        spread = np.where(np.isnan(spread), 0.0, spread)
        # Content that moved through the busier tiles may move through any tile later: each
        # tile's scale is at least what the busy tiles (upper quartile over tiles) saw.
        pooled = np.quantile(spread, POOL_Q, axis=0)  # (F,)
        scale = np.maximum(np.maximum(spread, pooled), np.asarray(TILE_FLOORS))
        return cls(median=med, scale=scale)

    @classmethod
    def from_params(cls, params: Params) -> TileModel:
        med = np.asarray(params["median"], dtype=np.float64)
        scale = np.asarray(params["scale"], dtype=np.float64)
        if med.ndim != 2 or med.shape != scale.shape or med.shape[1] != len(TILE_FEATURES):
            raise ValueError(
                f"tile model must be two (tiles, {len(TILE_FEATURES)}) arrays, but got {med.shape} and {scale.shape}"
            )
        if not (scale > 0).all():
            raise ValueError("tile model scales must be > 0")
        return cls(median=med, scale=scale)

    def params(self) -> Params:
        return {"median": self.median.tolist(), "scale": self.scale.tolist()}

    def deviation(self, stats: FrameStats) -> FloatArray:
        """Tile features minus their calibrated medians (T, F) of one frame."""
        x = tile_features(stats)
        if x.shape != self.median.shape:
            raise ValueError(f"frame has {x.shape[0]} tiles, but the tile model has {self.median.shape[0]}")
        out: FloatArray = x - self.median
        return out

    def z(self, stats: FrameStats) -> FloatArray:
        """Standardised tile features (T, F) of one frame."""
        out: FloatArray = self.deviation(stats) / self.scale
        return out


class TileTest(Test):
    """Base of the tests scored from a TileModel (fitted per tile on calibration frames)."""

    fitted = True

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self.tiles: TileModel | None = None

    def fit(self, observations: Sequence[Observation]) -> None:
        self.tiles = TileModel.fit(observations)

    def params(self) -> Params:
        return {} if self.tiles is None else self.tiles.params()

    def load_params(self, params: Params) -> None:
        self.tiles = TileModel.from_params(params)

    def _model(self) -> TileModel:
        if self.tiles is None:
            raise RuntimeError(f"{self.name}: fit() or load_params() must come before update()")
        return self.tiles

    def _z(self, obs: Observation) -> FloatArray:
        return self._model().z(obs.stats)


@register
class Patch(TileTest):
    """Largest static, persistent tile deviation beyond the frame-wide shift (module docstring)."""

    name = "patch"
    default_tolerance = 2.0
    default_resolution = 0.5

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self.still: FloatArray | None = None  # (T,) largest diff_prev of a still tile
        self.still_motion: FloatArray | None = None  # (T,) largest Observation.motion of a still tile
        self.rest_bound: float | None = None  # rest_of_view above this: a global change, not a patch
        self._recent: deque[FloatArray] = deque(maxlen=PATCH_FRAMES)
        self._where: dict[str, float | int | str] = {}

    def fit(self, observations: Sequence[Observation]) -> None:
        super().fit(observations)
        if not observations:
            self.still = None
            return
        d = np.stack([o.stats.tiles[:, :, _F["diff_prev"]].ravel() for o in observations])  # (n, T)
        self.still = _still_bound(d, STILL_MIN)
        motion = [o.motion for o in observations if o.motion is not None]
        self.still_motion = _quiet_bound(np.stack(motion)) if motion else None
        model = self._model()
        self.rest_bound = max(rest_of_view(model.deviation(o.stats), model.scale) for o in observations) + REST_MARGIN

    def params(self) -> Params:
        out = super().params()
        if out and self.still is not None:
            out["still"] = self.still.tolist()
        if out and self.still_motion is not None:
            out["still_motion"] = self.still_motion.tolist()
        if out and self.rest_bound is not None:
            out["rest_bound"] = self.rest_bound
        return out

    def load_params(self, params: Params) -> None:
        super().load_params({k: v for k, v in params.items() if k not in ("still", "still_motion", "rest_bound")})
        assert self.tiles is not None
        n = self.tiles.median.shape[0]
        still = np.asarray(params.get("still", []), dtype=np.float64)
        if still.shape != (n,):
            raise ValueError(f"patch: 'still' must hold one value per tile ({n}), but got shape {still.shape}")
        self.still = still
        self.still_motion = None  # profiles calibrated without images (or before motion existed)
        if "still_motion" in params:
            motion = np.asarray(params["still_motion"], dtype=np.float64)
            if motion.shape != (n,):
                raise ValueError(
                    f"patch: 'still_motion' must hold one value per tile ({n}), but got shape {motion.shape}"
                )
            self.still_motion = motion
        bound = params.get("rest_bound")
        if not isinstance(bound, int | float) or isinstance(bound, bool) or not math.isfinite(bound) or bound <= 0:
            raise ValueError(f"patch: 'rest_bound' must be a positive number, but got {bound!r}")
        self.rest_bound = float(bound)

    def reset(self) -> None:
        self._recent.clear()

    def compute(self, obs: Observation) -> float:
        model = self._model()
        d = model.deviation(obs.stats)  # (T, F)
        c = localized(d, model.scale)
        if np.isnan(c).all() or self.still is None:
            self._where = {}
            return math.nan
        if self.rest_bound is not None and rest_of_view(d, model.scale) > self.rest_bound:
            self._recent.clear()  # the whole view changed: no tile can be told apart (module docstring)
            self._where = {}
            return math.nan
        dev = np.nanmax(np.where(np.isnan(c), -np.inf, c), axis=1)  # (T,)
        diff = obs.stats.tiles[:, :, _F["diff_prev"]].ravel()
        moving = diff > self.still  # NaN compares False: still
        if obs.motion is not None and self.still_motion is not None:
            moving |= obs.motion > self.still_motion
        self._recent.append(np.where(moving, 0.0, np.maximum(dev, 0.0)))
        if len(self._recent) < PATCH_FRAMES:  # not yet persistent (a stream or block just started)
            self._where = {}
            return 0.0
        persistent = np.min(np.stack(self._recent), axis=0)  # (T,)
        t = int(np.argmax(persistent))
        f = int(np.nanargmax(np.where(np.isnan(c[t]), -np.inf, c[t])))
        cols = obs.stats.grid[1]
        self._where = {"tile_row": t // cols, "tile_col": t % cols, "field": TILE_FEATURES[f]}
        return float(persistent[t])

    @property
    def detail(self) -> dict[str, float | int | str]:
        """Where the last frame's largest deviation is: tile_row, tile_col, field."""
        return dict(self._where)


def _still_bound(d: FloatArray, floor: float) -> FloatArray:
    """Per column of (n, T) values: median + max(STILL_MADS * MAD, STILL_SHARE * median, floor)."""
    med = np.nan_to_num(nan_median(d))
    mad = np.nan_to_num(1.4826 * nan_median(np.abs(d - med)))
    out: FloatArray = med + np.maximum(np.maximum(STILL_MADS * mad, STILL_SHARE * med), floor)
    return out


def _quiet_bound(m: FloatArray) -> FloatArray:
    """Per column of (n, T) motion values: STILL_MOTION_FACTOR * quiet quantile + STILL_MIN_MOTION."""
    quiet = np.nan_to_num(nan_quantile(m, STILL_QUIET_Q))
    out: FloatArray = STILL_MOTION_FACTOR * quiet + STILL_MIN_MOTION
    return out
