"""Camera tampering: ``defocused`` and ``moved`` tests, and tamper alarms with hysteresis.

Four reasons are tamper reasons (``TAMPER_REASONS``): ``covered`` and ``frozen`` (rules.py),
and two tests defined here.

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

**moved** (the scene no longer matches the calibrated reference). Each frame's luma
thumbnail (observation.make_thumbnail, 64 columns) becomes an edge map E = G_1 * |grad T|
(Sobel magnitude, then a Gaussian of 1 thumbnail pixel so a one-pixel jitter does not
count). The reference R is the edge map of the per-pixel median thumbnail of the
calibration frames (the static background; passers-by are not in a median). Both are cut
into a 4 x 4 grid of blocks and compared block by block with

    NCC(a, b) = sum (a - mean a)(b - mean b) / (n sd(a) sd(b))     (0 when a or b is flat)

over the blocks where the reference has structure (edge sd above 1/8 of the median block
sd; all blocks if fewer than 4 qualify). The score is 1 - median over those blocks of NCC:
invariant to exposure gain and offset, near 0 for the calibrated view even when a bus
hides a few blocks, near 1 for another view (every block changed). Blocks more than
``CLIPPED_TILE`` (10 %) clipped (the stats tiles' ``clip_frac``, area-weighted onto the
blocks) lost their edges to the light, not to a move, and are left out: a flare or an
overexposure is ``glare``/``overexposed``, not ``moved`` (the synthetic flare scored 0.31
before, 0.05 after; ImageNet-C brightness s5 on vtest 0.15, 0.09; a 4 %/2° bump 0.52 either
way). Not applicable where fewer than half of the structured blocks (or 4) are left: too
much of the view is washed out to tell where the camera points. An occluder (a sticker, dirt,
a sign hung in front of the lens) hides part of the view without moving it: thumbnail pixels
flat in the frame (3 x 3 luma sd below ``HIDDEN_REL`` = 10 % of the frame's median, so a dim
view is not flat) where the reference is not, widened by ``HIDDEN_RADIUS`` = 3 pixels (the
edge map's reach, so the occluder's own outline is not compared), are left out of each block's
NCC, and blocks more than half hidden are left out; where fewer than half of the structured
blocks (or 4) would be left, most of the view is gone (a hand, a camera turned to a blank wall)
and the blocks are compared whole, as before. Occluding rectangles over 20-30 % of the view
(corruption ``occlusion`` s3-s4) raised ``moved`` on 92-96 % of vtest frames, 0-8 % now; 40 %
(s5) still does on some (its five rectangles hide more than half the blocks). Not applicable
without thumbnails (frames calibrated or guarded without their image). ~0.45 ms per frame
(thumbnail included).

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

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Self

import cv2
import numpy as np
import numpy.typing as npt

from agent.scoring.base import Params, Test, register
from agent.scoring.config import CalibrationConfig, TamperConfig
from agent.scoring.observation import CLIPPED_TILE, U8, Observation, clipped_mask
from agent.scoring.patch import ROUNDING_VAR, TILE_FEATURES, TileTest
from agent.stats.types import TILE_FIELDS

__all__ = [
    "TAMPER_REASONS",
    "Defocused",
    "Hysteresis",
    "Moved",
    "TamperMonitor",
    "TamperState",
    "block_clip",
    "block_ncc",
    "edge_map",
    "flat_mask",
    "hidden_mask",
    "ncc",
]

FloatArray = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

TAMPER_REASONS: tuple[str, ...] = ("covered", "frozen", "defocused", "moved")
#: Blocks (rows, cols) of the thumbnail compared one by one by ``moved``.
MOVED_BLOCKS: tuple[int, int] = (4, 4)
#: ``moved``: a thumbnail pixel is flat (hidden by an occluder) where its 3 x 3 luma sd is below this
#: share of the frame's median 3 x 3 sd (relative: a dim or low-contrast view is not hidden) ...
HIDDEN_REL: float = 0.1
#: ... or below this many code values (a frame that is flat almost everywhere)
HIDDEN_FLOOR: float = 0.25
#: ... and the flat pixels are widened by this many thumbnail pixels: the reach of the edge map
#: (Sobel, then a Gaussian of 1), so an occluder's own outline is not compared either.
HIDDEN_RADIUS: int = 3
_SHARP = TILE_FEATURES.index("sharpness")
_LOG_CONTRAST = TILE_FEATURES.index("log_contrast")
_CLIP = TILE_FIELDS.index("clip_frac")
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


def edge_map(thumb: U8) -> F32:
    """Gaussian-smoothed Sobel gradient magnitude of a luma thumbnail (float32, same shape)."""
    t = thumb.astype(np.float32)
    gx = cv2.Sobel(t, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(t, cv2.CV_32F, 0, 1, ksize=3)
    mag = cv2.magnitude(gx, gy)
    return np.asarray(cv2.GaussianBlur(mag, (0, 0), 1.0), dtype=np.float32)


def ncc(a: F32, b: F32) -> float:
    """Normalised cross-correlation of two equally shaped arrays (0 when either is flat)."""
    x = a.astype(np.float64).ravel()
    y = b.astype(np.float64).ravel()
    x = x - x.mean()
    y = y - y.mean()
    den = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / den if den > 1e-9 else 0.0


def _blocks(a: F32, grid: tuple[int, int]) -> list[F32]:
    rows, cols = grid
    h, w = a.shape
    ys = [i * h // rows for i in range(rows + 1)]
    xs = [j * w // cols for j in range(cols + 1)]
    return [a[ys[i] : ys[i + 1], xs[j] : xs[j + 1]] for i in range(rows) for j in range(cols)]


@functools.lru_cache(maxsize=16)
def _overlap(n_from: int, n_to: int) -> FloatArray:
    """(n_to, n_from) shares of each of ``n_to`` equal parts of [0, 1) covered by each of ``n_from`` parts."""
    lo, hi = np.arange(n_to)[:, None] / n_to, np.arange(1, n_to + 1)[:, None] / n_to
    a, b = np.arange(n_from)[None, :] / n_from, np.arange(1, n_from + 1)[None, :] / n_from
    return np.asarray(np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None) * n_to, dtype=np.float64)


def block_clip(tile_clip: FloatArray, grid: tuple[int, int] = MOVED_BLOCKS) -> FloatArray:
    """Share of clipped pixels per block (rows x cols, flattened), area-weighted from any tile grid.

    >>> block_clip(np.array([[0.0, 1.0]]), (2, 4)).tolist()  # one row of 2 tiles onto 2 x 4 blocks
    [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    """
    t = np.nan_to_num(np.asarray(tile_clip, dtype=np.float64))
    if t.shape == grid:  # the usual case: the stats grid is the blocks' grid
        return t.ravel()
    if not t.any():
        return np.zeros(grid[0] * grid[1])
    out = _overlap(t.shape[0], grid[0]) @ t @ _overlap(t.shape[1], grid[1]).T
    return np.asarray(out.ravel(), dtype=np.float64)


def flat_mask(thumb: U8) -> npt.NDArray[np.bool_]:
    """Flat thumbnail pixels: 3 x 3 luma sd below ``HIDDEN_REL`` of the thumbnail's median, at least
    ``HIDDEN_FLOOR`` (relative: a dim or low-contrast view is not flat)."""
    t = thumb.astype(np.float32)
    mean = cv2.blur(t, (3, 3))
    sd = np.sqrt(np.maximum(cv2.blur(t * t, (3, 3)) - mean * mean, 0.0))
    return np.asarray(sd < max(HIDDEN_FLOOR, HIDDEN_REL * float(np.median(sd))))


def hidden_mask(thumb: U8, ref_flat: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Thumbnail pixels an occluder hides: flat in the frame where the reference is not
    (``ref_flat``: ``flat_mask`` of the reference), widened by ``HIDDEN_RADIUS`` (module docstring)."""
    hidden = (flat_mask(thumb) & ~ref_flat).astype(np.uint8)
    size = 2 * HIDDEN_RADIUS + 1
    return np.asarray(cv2.dilate(hidden, np.ones((size, size), np.uint8)) > 0)


def block_ncc(
    frame_edges: F32, ref_edges: F32, grid: tuple[int, int] = MOVED_BLOCKS, usable: npt.NDArray[np.bool_] | None = None,
    hidden: npt.NDArray[np.bool_] | None = None,
) -> float:
    """Median over the reference's structured blocks of the blockwise NCC (module docstring).

    ``usable``: per block (flattened), False where the frame's block cannot be compared (clipped);
    NaN when fewer than half of the structured blocks (or 4) are usable. ``hidden``: per pixel
    (``hidden_mask``), what an occluder hides: blocks more than half hidden are left out and the
    others compared on what is seen, unless fewer than half of the structured blocks (or 4) would
    be left (most of the view is gone: the blocks are compared whole).
    """
    fb, rb = _blocks(frame_edges, grid), _blocks(ref_edges, grid)
    sd = np.array([float(b.std()) for b in rb])
    keep = np.flatnonzero(sd > np.median(sd) / 8.0)
    if keep.size < 4:
        keep = np.arange(len(rb))
    enough = max(4, (keep.size + 1) // 2)
    if usable is not None:
        keep = keep[usable[keep]]
        if keep.size < enough:
            return math.nan
    if hidden is not None and hidden.any():  # nothing hidden (the usual case): the blocks are compared whole
        seen = [b > 0.5 for b in _blocks((~hidden).astype(np.float32), grid)]
        visible = [k for k in keep if seen[k].mean() >= 0.5]
        if len(visible) >= enough:
            return float(np.median([ncc(fb[k][seen[k]], rb[k][seen[k]]) for k in visible]))
    return float(np.median([ncc(fb[k], rb[k]) for k in keep]))


@register
class Moved(Test):
    """1 - blockwise median NCC of the frame's edge map with the reference's (module docstring)."""

    name = "moved"
    # A crowd near the camera hides several blocks: 1 - median NCC reached 0.15 on a busy clean
    # view (calibration: < 0.05); another view, a tilted or zoomed camera score 0.5-1.
    default_tolerance = 0.2
    keeps_tolerance = True  # a tamper reason: the tolerance is the smallest event it names
    default_resolution = 0.05
    fitted = True
    needs_image = True

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self.reference: U8 | None = None
        self._ref_edges: F32 | None = None
        self._ref_flat: npt.NDArray[np.bool_] | None = None

    def fit(self, observations: Sequence[Observation]) -> None:
        thumbs = [o.thumb for o in observations if o.thumb is not None]
        if not thumbs:
            self.reference, self._ref_edges = None, None
            return
        median = np.median(np.stack(thumbs), axis=0)  # (rows, cols) the static background
        self._set(np.asarray(np.round(median), dtype=np.uint8))

    def _set(self, reference: U8) -> None:
        self.reference = reference
        self._ref_edges = edge_map(reference)
        self._ref_flat = flat_mask(reference)

    def params(self) -> Params:
        return {} if self.reference is None else {"reference": self.reference.tolist()}

    def load_params(self, params: Params) -> None:
        ref = np.asarray(params.get("reference", []), dtype=np.float64)
        if ref.ndim != 2 or ref.shape[0] < 3 or ref.shape[1] < 3 or ref.min() < 0 or ref.max() > 255:
            raise ValueError(f"moved: reference must be a 2-D thumbnail of 0..255 values, but got shape {ref.shape}")
        self._set(ref.astype(np.uint8))

    def compute(self, obs: Observation) -> float:
        if obs.thumb is None or self._ref_edges is None or self._ref_flat is None:
            return math.nan
        if obs.thumb.shape != self._ref_edges.shape:
            raise ValueError(f"moved: thumbnail {obs.thumb.shape} does not match the reference {self._ref_edges.shape}")
        usable = block_clip(obs.stats.tiles[:, :, _CLIP]) <= CLIPPED_TILE
        hidden = hidden_mask(obs.thumb, self._ref_flat)
        return 1.0 - block_ncc(edge_map(obs.thumb), self._ref_edges, usable=usable, hidden=hidden)


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
