"""Rule tests on single statistics: one-sided conformal tests with calibrated thresholds.

Each test's score is a monotone function of the frame's features (observation.FEATURES),
oriented so that higher = more anomalous; its threshold at level a is the calibration
scores' conformal (1 - a) quantile (``ConformalScorer.threshold``), never a constant.

| test | score | fires on |
|---|---|---|
| ``dark`` | -log(1 + brightness) | under-exposure, lights off |
| ``overexposed`` | log(1 + brightness) | over-exposure |
| ``glare`` | log(1 + clip_frac / f) | clipped highlights (0 on most clean frames: ties give p = 1) |
| ``blur`` | -(log(1 + blur) - 2 log(1 + contrast)) | defocus, motion blur, fog |
| ``noise`` | log(1 + noise) | sensor noise (Immerkaer's sigma, built to ignore edges) |
| ``low_saturation`` | -log(10 + saturation) | washed-out image, a colour camera stuck in IR mode |
| ``low_contrast`` | log(1 + brightness) - log(1 + contrast) | fog, haze, a veiled or fogged lens |
| ``color_cast`` | robust distance of (cast_b, cast_r) to their calibrated location | white balance, tinted lens |
| ``covered`` | -(75th pct. over tiles of log(1 + contrast_t)) | flat frame in most tiles |
| ``frozen`` | -log(0.01 + max of diff_prev over the last k frames) | identical frames from a live source |
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from agent.scoring.base import Test, register
from agent.scoring.config import CalibrationConfig
from agent.scoring.distance import RobustDistanceTest
from agent.scoring.observation import FEATURES, FloatArray, Observation, clipped_tiles

__all__ = [
    "Blur",
    "ColorCast",
    "Covered",
    "Dark",
    "Frozen",
    "Glare",
    "LowContrast",
    "LowSaturation",
    "Noise",
    "Overexposed",
]

_I = {name: i for i, name in enumerate(FEATURES)}
_CAST_COLS = [_I["cast_b"], _I["cast_r"]]
#: Scatter floor of the channel ratios in color_cast: a 5 % white-balance shift is one unit.
CAST_FLOOR: float = 0.05
#: Median mean saturation (HSV S, 0-255) of the calibration frames below which the camera is taken
#: as monochrome and ``low_saturation`` does not apply.
MONOCHROME_SATURATION: float = 12.0
#: diff_prev below this (code values per pixel) counts as "no change at all" for frozen.
FROZEN_EPS: float = 0.01


@register
class Dark(Test):
    """Brightness too low: score -log(1 + brightness)."""

    name = "dark"
    default_tolerance = 0.05

    def compute(self, obs: Observation) -> float:
        return -float(obs.features[_I["log_brightness"]])


@register
class Overexposed(Test):
    """Brightness too high: score log(1 + brightness)."""

    name = "overexposed"
    default_tolerance = 0.05

    def compute(self, obs: Observation) -> float:
        return float(obs.features[_I["log_brightness"]])


@register
class Glare(Test):
    """Too many clipped pixels: score log(1 + clip_frac / glare_floor) (0 when none clip)."""

    name = "glare"
    default_tolerance = 0.5

    def compute(self, obs: Observation) -> float:
        return float(obs.features[_I["clip"]])


@register
class Blur(Test):
    """Laplacian energy low relative to contrast: score 2 log(1 + contrast) - log(1 + blur).

    Not applicable where more than half of the tiles are clipped (observation.clipped_tiles): a
    washed-out view says nothing about focus, and ``glare``/``overexposed`` say what it is.
    """

    name = "blur"
    default_tolerance = 0.1

    def compute(self, obs: Observation) -> float:
        if clipped_tiles(obs.stats) > 0.5:
            return math.nan
        return -float(obs.features[_I["sharpness"]])


@register
class Noise(Test):
    """Noise high: score log(1 + noise), Immerkaer's sigma in code values.

    Immerkaer's kernel is the difference of two Laplacians chosen to cancel on edges and
    smooth structure, so it rises with sensor noise but not with a sharper scene; blur and
    darkness lower it. (Normalising it by the Laplacian amplitude or the contrast was tried:
    both made blurred and darkened frames look noisy.)
    """

    name = "noise"
    default_tolerance = 0.05

    def compute(self, obs: Observation) -> float:
        return float(obs.features[_I["log_noise"]])


@register
class LowSaturation(Test):
    """Colour saturation low: score -log(SATURATION_OFFSET + saturation).

    Does not apply to a camera whose calibration frames hold almost no colour (median mean
    saturation below MONOCHROME_SATURATION): a monochrome sensor or IR night mode, whose
    saturation is codec and sensor noise that blur or a flatter scene lowers (vtest in grey
    through MJPEG: 5.8, mp4v: 9.2; the colour clips in the test data: 30-108).
    """

    name = "low_saturation"
    default_tolerance = 0.05

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self.calibration_saturation = math.nan  # median mean saturation of the frames fitted on

    def fit(self, observations: Sequence[Observation]) -> None:
        sat = [o.stats.saturation for o in observations]
        self.calibration_saturation = float(np.median(sat)) if sat else math.nan

    def inapplicable(self) -> str | None:
        if not self.calibration_saturation < MONOCHROME_SATURATION:
            return None
        return (f"the calibration frames hold almost no colour (median saturation "
                f"{self.calibration_saturation:.1f} of 255, below {MONOCHROME_SATURATION:g}: a monochrome "
                "camera or IR night mode), so there is no colour to lose")

    def compute(self, obs: Observation) -> float:
        return -float(obs.features[_I["log_saturation"]])


@register
class LowContrast(Test):
    """Contrast low for the exposure: score log(1 + brightness) - log(1 + contrast).

    Luma standard deviation relative to the mean, in log units: a gain change (a darker or
    brighter exposure) moves both and leaves it (that is ``dark``/``overexposed``), while a
    veil lowers it: fog, haze, a dirty or fogged lens, veiling glare, a washed-out stream.
    """

    name = "low_contrast"
    # Blur lowers the contrast too, a little: above the calibration's largest score, ImageNet-C
    # defocus and motion blur reach 0.13 on opencv_vtest.avi, zoom blur 0.21, the synthetic
    # camera's blur 0.15-0.22; a veil goes further (haze severity 2: 0.5, fog 1: 0.48 median,
    # contrast 1: 0.83, the synthetic fog 0.8). 0.3 (a quarter of the contrast) keeps a blurred
    # lens out of this reason.
    default_tolerance = 0.3
    default_resolution = 0.05

    def compute(self, obs: Observation) -> float:
        return float(obs.features[_I["log_brightness"]] - obs.features[_I["log_contrast"]])


@register
class ColorCast(RobustDistanceTest):
    """Channel-mean ratios far from their calibrated location (two-sided, robust distance)."""

    name = "color_cast"
    default_tolerance = 1.0
    features = ("cast_b", "cast_r")
    floors = (CAST_FLOOR, CAST_FLOOR)

    def vector(self, obs: Observation) -> FloatArray:
        return obs.features[_CAST_COLS]


@register
class Covered(Test):
    """Near-uniform frame in most tiles: score -(75th percentile over tiles of log(1 + contrast_t)).

    The 75th percentile is low only when at least three quarters of the tiles lost their
    contrast (luma standard deviation). Contrast alone, not the Laplacian: a blurred lens
    smooths edges but keeps a tile's light and dark regions, so blur is ``blur`` and
    ``defocused``, not ``covered``. Measured below the least contrasted of 200 clean
    ``opencv_vtest.avi`` frames (median over held-out frames): ImageNet-C defocus blur lowers
    this score by 0.0-0.1 (and the tiles' Laplacian term by 1.9-2.9), motion and zoom blur by
    at most 0.24, the synthetic scene's strongest blur by 0.3; a hand, cap, tape or paint over
    the lens by 1.2-2.9. A 15 % exposure lowers it as much as a cover; the policy tells them apart
    by the view (explain.py).
    """

    name = "covered"
    # A factor 2 in tile contrast (ln 2): a softer, hazier or dimmer view is not a cover, a
    # covered lens's tiles have 3-20x less contrast than the camera's least contrasted frame.
    # The tail stays sharp (a cover lies far beyond the tolerance).
    default_tolerance = 0.7
    keeps_tolerance = True  # a tamper reason: the tolerance is the smallest event it names
    default_resolution = 0.1

    def compute(self, obs: Observation) -> float:
        return -float(obs.features[_I["tile_contrast_hi"]])


@register
class Frozen(Test):
    """Identical frames from a live source: score -log(0.01 + max diff_prev over the last k).

    k = ``CalibrationConfig.frozen_window``. Not applicable (NaN) for sources that are not
    live (files may legitimately repeat frames) and until k frames with a diff were seen.
    """

    name = "frozen"
    # A factor e in the inter-frame difference: a quiet stretch (less motion than the
    # calibration's quietest) is not a freeze; a frozen camera's difference is ~0, not 1/e.
    default_tolerance = 1.0
    keeps_tolerance = True  # a tamper reason: the tolerance is the smallest event it names
    default_resolution = 0.1

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self._window: deque[float] = deque(maxlen=self.cfg.frozen_window)

    def reset(self) -> None:
        self._window.clear()

    def compute(self, obs: Observation) -> float:
        diff = obs.stats.diff_prev
        if math.isnan(diff):
            self._window.clear()  # no previous frame of this size: a new stream starts
            return math.nan
        self._window.append(diff)
        if not obs.live or len(self._window) < self._window.maxlen:  # type: ignore[operator]
            return math.nan
        return -math.log(FROZEN_EPS + max(self._window))
