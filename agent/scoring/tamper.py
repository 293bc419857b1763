"""Camera tampering: the ``defocused`` test, and tamper alarms with hysteresis.

Five reasons are tamper reasons (``TAMPER_REASONS``): ``covered`` and ``frozen`` (rules.py),
``moved`` and ``occluded`` (view.py), and ``defocused``, defined here.

**defocused** (blur across the whole view). Per tile, sharpness
x_t = log(20/12 + blur_t) - log(1/12 + contrast_t²) (Laplacian energy relative to the tile's
variance, offset by what 8-bit rounding gives a flat tile: patch.py; so an exposure gain or
a veil is not blur) is compared with the tile's own calibrated median m_t: r_t = m_t - x_t
(positive = blurrier). A defocus takes the Laplacian energy itself down with it; light
*added* over the view (a flare's halo, stray light) raises the variance and leaves the
Laplacian energy where it was, so the ratio drops and the detail does not. So a tile's
evidence is the smaller of the two drops,

    e_t = min(r_t, r_t - (log(1/12 + contrast_t²) - log(1/12 + c_t²))) / s_t

(the second is the drop of log(20/12 + blur_t); c_t the tile's calibrated median contrast,
s_t its floored robust scale of sharpness: patch.TileModel). Tiles more than
``CLIPPED_TILE`` (10 %) clipped lost their detail to the light and are left out. The
score is the median of e_t over the tiles left (not applicable with fewer than half of
them): at least half of the view lost detail. A person walking past changes one or two
tiles, a defocused lens all of them (ImageNet-C defocus s1-s5 on vtest: 30-42 either way;
the synthetic flare scored 1.3 robust units before the detail term and the clipped tiles,
-0.1 after; a gain or a veil leaves the ratio alone). ImageNet-C fog still scores 2-10: its
plasma adds light and its rescaling takes detail away, both at once. ~40 us per frame.

**Hysteresis.** A per-frame FLAG on a tamper test is evidence; a tamper *alarm* is a state.
``Hysteresis`` raises after ``raise_frames`` consecutive frames whose family-wise p-value is
<= alpha_flag (the frames that test flags anyway) and clears after ``clear_frames``
consecutive frames above the looser ``clear_alpha``. While raised, the policy keeps the
reason on frames with a p-value up to ``clear_alpha`` (a hand moving on the lens does not
flicker the alarm) and drops it on frames that look clean, so the clearing frames cost no
false alarms. With the defaults (3, 3) an alarm is raised 2 frames after the first tampered
frame (80 ms at 25 fps) and cleared on the third clean frame.

>>> h = Hysteresis(raise_frames=3, clear_frames=2)
>>> events = []
>>> for i, (on, off) in enumerate([(1, 0), (1, 0), (1, 0), (0, 0), (1, 0), (0, 1), (0, 1), (0, 1)]):
...     if h.update(bool(on), bool(off)).changed:
...         events.append((i, h.raised))
>>> events
[(2, True), (6, False)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np

from agent.scoring.base import register
from agent.scoring.config import TamperConfig
from agent.scoring.observation import Observation, clipped_mask
from agent.scoring.patch import ROUNDING_VAR, TILE_FEATURES, TileTest
from agent.stats.types import TILE_FIELDS

__all__ = ["TAMPER_REASONS", "Defocused", "Hysteresis", "TamperMonitor", "TamperState"]

TAMPER_REASONS: tuple[str, ...] = ("covered", "frozen", "defocused", "moved", "occluded")
_SHARP = TILE_FEATURES.index("sharpness")
_LOG_CONTRAST = TILE_FEATURES.index("log_contrast")
_CONTRAST = TILE_FIELDS.index("contrast")


@register
class Defocused(TileTest):
    """Median over unclipped tiles of the smaller of the sharpness and detail drops (module docstring)."""

    name = "defocused"
    default_tolerance = 0.5
    keeps_tolerance = True  # a tamper reason: the tolerance is the smallest event it names

    def compute(self, obs: Observation) -> float:
        model = self._model()
        ratio = -model.deviation(obs.stats)[:, _SHARP]  # (T,) positive = blurrier than the tile's profile
        contrast = obs.stats.tiles[:, :, _CONTRAST].ravel()
        calibrated = np.maximum(np.exp(model.median[:, _LOG_CONTRAST]) - 2.0, 0.0)  # median of log(2 + c) -> c
        variance_rise = np.log(ROUNDING_VAR + contrast**2) - np.log(ROUNDING_VAR + calibrated**2)
        e = np.minimum(ratio, ratio - variance_rise) / model.scale[:, _SHARP]
        usable = ~clipped_mask(obs.stats) & ~np.isnan(e)
        if not usable.any() or 2 * int(usable.sum()) < int((~np.isnan(e)).sum()):
            return math.nan  # most of the view is clipped (or no tile has statistics): glare, not focus
        return float(np.median(e[usable]))


class Hysteresis:
    """Two-level alarm: raise on ``raise_frames`` consecutive "on" frames, clear on
    ``clear_frames`` consecutive "off" frames (river style: ``update`` then read properties).

    ``on``: strong evidence (the test fires at the flag level); ``off``: clean evidence (above
    the clearing level). A frame that is neither restarts both runs.
    """

    def __init__(self, raise_frames: int = 3, clear_frames: int = 3) -> None:
        if raise_frames < 1 or clear_frames < 1:
            raise ValueError(f"raise_frames and clear_frames must be >= 1, but got {raise_frames}, {clear_frames}")
        self.raise_frames = raise_frames
        self.clear_frames = clear_frames
        self._raised = False
        self._changed = False
        self._run = 0
        self.n = 0

    def update(self, on: bool, off: bool) -> Self:
        """One frame's evidence; read ``raised`` and ``changed`` afterwards."""
        self.n += 1
        was = self._raised
        hit = off if self._raised else on
        self._run = self._run + 1 if hit else 0
        if self._run >= (self.clear_frames if self._raised else self.raise_frames):
            self._raised = not self._raised
            self._run = 0
        self._changed = self._raised != was
        return self

    def reset(self) -> None:
        self._raised = self._changed = False
        self._run = 0

    @property
    def raised(self) -> bool:
        """True while the alarm is on."""
        return self._raised

    @property
    def changed(self) -> bool:
        """True when the last update raised or cleared the alarm."""
        return self._changed


@dataclass(frozen=True, slots=True)
class TamperState:
    """One tamper alarm after a frame: on or off, whether this frame changed it, since when."""

    reason: str
    raised: bool
    changed: bool
    since_seq: int | None


class TamperMonitor:
    """Hysteresis alarms for the tamper reasons, fed with each frame's family-wise p-values."""

    def __init__(self, cfg: TamperConfig | None = None, reasons: Sequence[str] = TAMPER_REASONS) -> None:
        self.cfg = cfg if cfg is not None else TamperConfig()
        self._alarms = {r: Hysteresis(self.cfg.raise_frames, self.cfg.clear_frames) for r in reasons}
        self._since: dict[str, int | None] = dict.fromkeys(reasons)

    def update(self, seq: int, p_family: Mapping[str, float], alpha_flag: float) -> dict[str, TamperState]:
        """Feed one frame: ``p_family[reason]`` = F(p) of the reason's test (missing = not applicable)."""
        out: dict[str, TamperState] = {}
        for reason, alarm in self._alarms.items():
            pf = p_family.get(reason)
            if pf is None:
                continue
            alarm.update(pf <= alpha_flag, pf > self.cfg.clear_alpha)
            if alarm.changed:
                self._since[reason] = seq if alarm.raised else None
            out[reason] = TamperState(reason, alarm.raised, alarm.changed, self._since[reason])
        return out

    def keeps(self, reason: str, p_family: float) -> bool:
        """True when a raised alarm keeps ``reason`` on a frame with family p-value ``p_family``."""
        alarm = self._alarms.get(reason)
        return alarm is not None and alarm.raised and p_family <= self.cfg.clear_alpha

    @property
    def raised(self) -> list[str]:
        """Tamper reasons currently in alarm."""
        return [r for r, a in self._alarms.items() if a.raised]

    def reset(self) -> None:
        for alarm in self._alarms.values():
            alarm.reset()
        self._since = dict.fromkeys(self._alarms)
