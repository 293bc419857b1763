"""The calibrated view: ``moved`` (the camera points elsewhere) and ``occluded`` (part of it is hidden).

Both tests compare each frame's luma thumbnail (observation.make_thumbnail, 64 columns) with
a reference: the per-pixel median thumbnail of the calibration frames (the static background;
passers-by are not in a median). Both are tamper reasons (tamper.py: hysteresis alarms).

**What an occluder hides.** A sticker, dirt, tape or a sign hung in front of the lens replaces
part of the view with something flat (an occluder that close is out of focus). Texture is the
3 x 3 luma standard deviation of a thumbnail (``texture``); a view's typical texture is its
``TYPICAL_Q`` = 75th percentile over pixels (what a view three quarters hidden still shows).
The texture each pixel should show now is the reference's, scaled by the smaller of the view's
contrast gain g = typical(frame) / typical(reference) (haze, a low-contrast exposure) and the
light the pixel gets, (local mean + 1) / (reference's local mean + 1) over a Gaussian of
``LOCAL_SIGMA`` = 2 pixels (texture scales with illumination: a corner gone dark at dusk shows
none). A pixel is *hidden* where that expected texture is measurable (>= ``REF_DETAIL`` = 1 code
value) and the frame is flat there: below ``HIDDEN_REL`` = 5 % of both that and its own typical
texture, and not clipped (>= ``CLIPPED_LUMA``: light, not an occluder). On ``opencv_vtest.avi``
(colour or grey) clean held-out frames hide at most 0.1 % of the view (pedestrians included);
the camera corruption ``occlusion`` s1-s5 (flat rectangles of grey 0-63 over 5-40 % of the
frame) 0.6-25 %; no exposure (x0.15 to x1.6), half of the view or a ramp to x0.05 with noise
(dusk), vignetting, ImageNet-C or camera corruption more than 0.2 %, but ImageNet-C JPEG s5
(1.8 %: flattened 8 x 8 blocks). A near-black occluder (tape) is not told from darkness: its
pixels get no light, so nothing is expected of them (``dark``, ``patch``, ``covered`` see it).
On the synthetic scene (clean: 0.3 %), whose smooth sky and road flatten under compression,
JPEG s3-s5 hide 3-10 %, and a camera bumped or tilted 1-3 %: ``defocused`` and ``moved``
account for those (explain.py).

**occluded** scores the hidden share of the reference's measurable pixels (texture >=
``REF_DETAIL``; not applicable where fewer than ``MIN_DETAIL`` = 5 % of them are). Tolerance
0.01 (1 % of the view: the smallest occluder it names). ``Reason.detail``: ``hidden_share`` and
the hidden pixels' centre (``center_x``, ``center_y``, 0..1 of the frame). With the defaults on
vtest it names 21 of 25 frames with a 5 % rectangle (the 4 missed are the darkest), and 24 are
flagged (16 before: ``patch`` and ``ood_stats`` 11 each); the rectangles' ``blur`` is explained
away. Over three quarters of the view hidden, the typical texture is the occluder's: nothing
counts as hidden and ``covered`` (three quarters of the tiles flat) names it. explain.py drops ``occluded`` where
``covered``, ``moved`` or ``defocused`` fires. ~0.05 ms.

**moved** (the scene no longer matches the reference). The thumbnails become edge maps
E = G_1 * |grad T| (Sobel magnitude, then a Gaussian of 1 thumbnail pixel so a one-pixel
jitter does not count), cut into a 4 x 4 grid of blocks (``EdgeBlocks``; a 64 x 27 thumbnail's
block rows span 6, 7, 7 and 7 rows) and compared block by block with

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
much of the view is washed out to tell where the camera points. Hidden pixels, widened by
``HIDDEN_RADIUS`` = 3 (the edge map's reach, so an occluder's own outline is not compared),
are left out of each block's NCC, and blocks more than half hidden are left out; where fewer
than half of the structured blocks (or 4) would be left, most of the view is gone (a hand, a
camera turned to a blank wall) and the blocks are compared whole. Occluding rectangles over
20-30 % of the view (``occlusion`` s3-s4) raised ``moved`` on 92-96 % of vtest frames before
profile format 6, 0-8 % after; 40 % (s5) still does on some (its five rectangles hide more
than half the blocks). Not applicable without thumbnails (frames calibrated or guarded
without their image). ~0.15 ms per frame (the blocks are compared as rows of one array).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from agent.scoring.base import Params, Test, register
from agent.scoring.config import CalibrationConfig
from agent.scoring.observation import CLIPPED_TILE, U8, Observation
from agent.stats.types import TILE_FIELDS

__all__ = [
    "CLIPPED_LUMA",
    "HIDDEN_RADIUS",
    "HIDDEN_REL",
    "LOCAL_SIGMA",
    "MIN_DETAIL",
    "MOVED_BLOCKS",
    "REF_DETAIL",
    "TYPICAL_Q",
    "EdgeBlocks",
    "Moved",
    "Occluded",
    "ViewReference",
    "block_clip",
    "block_ncc",
    "edge_map",
    "hidden_mask",
    "ncc",
    "texture",
    "typical",
]

FloatArray = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]

#: Blocks (rows, cols) of the thumbnail compared one by one by ``moved``.
MOVED_BLOCKS: tuple[int, int] = (4, 4)
#: A pixel is hidden where the frame keeps less than this share of the texture the reference predicts
#: there and of the frame's own typical texture ...
HIDDEN_REL: float = 0.05
#: ... where that prediction is at least this many code values (below it, rounding hides texture anyway) ...
REF_DETAIL: float = 1.0
#: ... and the frame is not clipped (thumbnail luma at or above this: light, not an occluder).
CLIPPED_LUMA: int = 250
#: The frame's typical texture is this quantile over its pixels (what a view three quarters hidden still shows).
TYPICAL_Q: float = 0.75
#: Local light is the thumbnail blurred by a Gaussian of this many pixels (texture scales with it).
LOCAL_SIGMA: float = 2.0
#: ``moved`` widens the hidden pixels by this many thumbnail pixels (the edge map's reach).
HIDDEN_RADIUS: int = 3
#: ``occluded`` needs at least this share of the reference's pixels to have measurable texture.
MIN_DETAIL: float = 0.05
_CLIP = TILE_FIELDS.index("clip_frac")
_WIDEN = np.ones((2 * HIDDEN_RADIUS + 1, 2 * HIDDEN_RADIUS + 1), np.uint8)


def edge_map(thumb: U8) -> F32:
    """Gaussian-smoothed Sobel gradient magnitude of a luma thumbnail (float32, same shape)."""
    t = thumb.astype(np.float32)
    gx = cv2.Sobel(t, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(t, cv2.CV_32F, 0, 1, ksize=3)
    mag = cv2.magnitude(gx, gy)
    return np.asarray(cv2.GaussianBlur(mag, (0, 0), 1.0), dtype=np.float32)


def texture(thumb: U8) -> F32:
    """3 x 3 local standard deviation of a luma thumbnail (code values, float32, same shape)."""
    t = thumb.astype(np.float32)
    mean = cv2.blur(t, (3, 3))
    return np.asarray(np.sqrt(np.maximum(cv2.blur(t * t, (3, 3)) - mean * mean, 0.0)), dtype=np.float32)


def typical(texture_map: F32) -> float:
    """A view's typical texture: its ``TYPICAL_Q`` quantile over pixels (lower order statistic)."""
    flat = texture_map.ravel()
    k = int(TYPICAL_Q * (flat.size - 1))
    return float(np.partition(flat, k)[k])


def _local_mean(thumb: U8) -> F32:
    return np.asarray(cv2.GaussianBlur(thumb.astype(np.float32), (0, 0), LOCAL_SIGMA), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class ViewReference:
    """What ``hidden_mask`` needs of the reference thumbnail: its texture, typical level and local light,
    and how many of its pixels have measurable texture (>= ``REF_DETAIL``: what ``occluded`` counts)."""

    texture: F32
    level: float
    light: F32
    measurable: int

    @classmethod
    def of(cls, reference: U8) -> ViewReference:
        t = texture(reference)
        return cls(t, typical(t), _local_mean(reference), int(np.count_nonzero(t >= REF_DETAIL)))


def hidden_mask(thumb: U8, ref: ViewReference) -> Mask:
    """Pixels whose calibrated texture is gone (module docstring); all False for a flat reference.

    >>> stripes = np.tile(np.array([0, 60], np.uint8), (8, 8))  # a fine pattern, 16 x 16
    >>> ref = ViewReference.of(stripes)
    >>> stuck = stripes.copy(); stuck[:, :8] = 30  # left half under a flat grey sticker
    >>> bool(hidden_mask(stuck, ref)[:, :6].all()), bool(hidden_mask(stuck, ref)[:, 9:].any())
    (True, False)
    >>> dark = stripes.copy(); dark[:, :8] //= 30  # left half in the dark: its texture fell with its light
    >>> bool(hidden_mask(dark, ref).any())
    False
    """
    if ref.level <= 0.0:
        return np.zeros(thumb.shape, dtype=bool)
    sd = texture(thumb)
    level = typical(sd)
    # the texture each pixel should show now: the reference's, scaled by the view's contrast gain (haze,
    # a low-contrast exposure) and by the light the pixel gets (a dark corner at dusk), whichever is less
    light = (_local_mean(thumb) + 1.0) / (ref.light + 1.0)
    expected = ref.texture * np.minimum(light, np.float32(level / ref.level))
    flat = (sd < HIDDEN_REL * level) & (sd < HIDDEN_REL * expected)  # flat for this frame, and where texture was
    return np.asarray(flat & (expected >= REF_DETAIL) & (thumb < CLIPPED_LUMA))


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


class EdgeBlocks:
    """An edge map cut into a ``grid`` of blocks (row i spans rows i*h//R to (i+1)*h//R, columns
    alike), gathered into rows of a (blocks, pixels) array padded to the largest block (``valid``
    marks the real pixels), with the blocks that have structure (``keep``)."""

    def __init__(self, edges: F32, grid: tuple[int, int] = MOVED_BLOCKS) -> None:
        h, w = edges.shape
        rows, cols = max(1, min(grid[0], h)), max(1, min(grid[1], w))
        self.grid = (rows, cols)
        ys = [i * h // rows for i in range(rows + 1)]
        xs = [j * w // cols for j in range(cols + 1)]
        spans = [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(rows) for j in range(cols)]
        size = max((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in spans)
        self._index = np.zeros((len(spans), size), dtype=np.intp)  # flat pixel indices, 0 where padded
        valid = np.zeros((len(spans), size), dtype=bool)
        for k, (y0, y1, x0, x1) in enumerate(spans):
            flat = (np.arange(y0, y1)[:, None] * w + np.arange(x0, x1)[None, :]).ravel()
            self._index[k, : flat.size], valid[k, : flat.size] = flat, True
        self.valid: F32 | None = None if valid.all() else valid.astype(np.float32)  # None: equal blocks
        self.rows = self.split(edges)
        sd = np.sqrt(_weighted_var(self.rows, self.valid))
        keep = np.flatnonzero(sd > np.median(sd) / 8.0)
        self.keep = keep if keep.size >= 4 else np.arange(self.rows.shape[0])

    def split(self, a: npt.NDArray[np.float32] | Mask) -> F32:
        """(blocks, pixels) float32 rows of an array shaped like the edge map (padding: its first pixel)."""
        return np.asarray(a.ravel()[self._index], dtype=np.float32)


def _weighted_var(x: F32, weights: F32 | None) -> FloatArray:
    """Variance of each row of ``x`` over the pixels of weight 1 (all: None)."""
    v = x.astype(np.float64)
    if weights is None:
        return np.asarray(v.var(axis=1), dtype=np.float64)
    wt = weights.astype(np.float64)
    n = wt.sum(axis=1)
    mean = (wt * v).sum(axis=1) / n
    return np.asarray((wt * (v - mean[:, None]) ** 2).sum(axis=1) / n, dtype=np.float64)


def ncc(a: F32, b: F32) -> float:
    """Normalised cross-correlation of two equally shaped arrays (0 when either is flat)."""
    return float(_ncc_rows(a.reshape(1, -1), b.reshape(1, -1))[0])


def _ncc_rows(a: F32, b: F32, weights: F32 | None = None) -> FloatArray:
    """``ncc`` of each row of ``a`` with the same row of ``b``, over the pixels of weight 1 (all: None)."""
    x, y = a.astype(np.float64), b.astype(np.float64)
    if weights is None:
        x -= x.mean(axis=1, keepdims=True)
        y -= y.mean(axis=1, keepdims=True)
    else:
        wt = weights.astype(np.float64)
        n = wt.sum(axis=1, keepdims=True)
        x = (x - (wt * x).sum(axis=1, keepdims=True) / n) * wt
        y = (y - (wt * y).sum(axis=1, keepdims=True) / n) * wt
    num = (x * y).sum(axis=1)
    den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    return np.where(den > 1e-9, num / np.where(den > 1e-9, den, 1.0), 0.0)


def block_ncc(
    frame_edges: F32, ref: F32 | EdgeBlocks, grid: tuple[int, int] = MOVED_BLOCKS, usable: Mask | None = None,
    hidden: Mask | None = None,
) -> float:
    """Median over the reference's structured blocks of the blockwise NCC (module docstring).

    ``ref``: the reference's edge map, or its ``EdgeBlocks`` (then ``grid`` is theirs). ``usable``:
    per block (flattened), False where the frame's block cannot be compared (clipped); NaN when
    fewer than half of the structured blocks (or 4) are usable. ``hidden``: per pixel, what an
    occluder hides (widened): blocks more than half hidden are left out and the others compared on
    what is seen, unless fewer than half of the structured blocks (or 4) would be left (most of the
    view is gone: the blocks are compared whole).
    """
    blocks = ref if isinstance(ref, EdgeBlocks) else EdgeBlocks(ref, grid)
    keep = blocks.keep
    enough = max(4, (keep.size + 1) // 2)
    if usable is not None:
        keep = keep[usable[keep]]
        if keep.size < enough:
            return math.nan
    frame = blocks.split(frame_edges)
    if hidden is not None and hidden.any():  # nothing hidden (the usual case): the blocks are compared whole
        seen = 1.0 - blocks.split(hidden)
        if blocks.valid is not None:
            seen *= blocks.valid
        pixels = float(seen.shape[1]) if blocks.valid is None else blocks.valid[keep].sum(axis=1)
        visible = keep[seen[keep].sum(axis=1) >= 0.5 * pixels]
        if visible.size >= enough:
            return float(np.median(_ncc_rows(frame[visible], blocks.rows[visible], seen[visible])))
        # most of the view is "hidden": gone (a hand) or changed (a zoom smooths what was texture)
    valid = None if blocks.valid is None else blocks.valid[keep]
    return float(np.median(_ncc_rows(frame[keep], blocks.rows[keep], valid)))


class ViewTest(Test):
    """A test against the reference thumbnail (the calibration frames' per-pixel median)."""

    fitted = True
    needs_image = True

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self.reference: U8 | None = None
        self._ref_view: ViewReference | None = None

    def fit(self, observations: Sequence[Observation]) -> None:
        thumbs = [o.thumb for o in observations if o.thumb is not None]
        if not thumbs:
            self._set(None)
            return
        median = np.median(np.stack(thumbs), axis=0)  # (rows, cols) the static background
        self._set(np.asarray(np.round(median), dtype=np.uint8))

    def _set(self, reference: U8 | None) -> None:
        """Keep ``reference`` and what is derived from it (None: no reference)."""
        self.reference = reference
        self._ref_view = None if reference is None else ViewReference.of(reference)

    def params(self) -> Params:
        return {} if self.reference is None else {"reference": self.reference.tolist()}

    def load_params(self, params: Params) -> None:
        ref = np.asarray(params.get("reference", []), dtype=np.float64)
        if ref.ndim != 2 or ref.shape[0] < 3 or ref.shape[1] < 3 or ref.min() < 0 or ref.max() > 255:
            raise ValueError(
                f"{self.name}: reference must be a 2-D thumbnail of 0..255 values, but got shape {ref.shape}"
            )
        self._set(ref.astype(np.uint8))

    def _thumb(self, obs: Observation) -> U8 | None:
        """The frame's thumbnail, or None where there is none (or no reference)."""
        if obs.thumb is None or self.reference is None:
            return None
        if obs.thumb.shape != self.reference.shape:
            raise ValueError(f"{self.name}: thumbnail {obs.thumb.shape} does not match the reference "
                             f"{self.reference.shape}")
        return obs.thumb


@register
class Moved(ViewTest):
    """1 - blockwise median NCC of the frame's edge map with the reference's (module docstring)."""

    name = "moved"
    # A crowd near the camera hides several blocks: 1 - median NCC reached 0.15 on a busy clean
    # view (calibration: < 0.05); another view, a tilted or zoomed camera score 0.5-1.
    default_tolerance = 0.2
    keeps_tolerance = True  # a tamper reason: the tolerance is the smallest event it names
    default_resolution = 0.05

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self._ref_blocks: EdgeBlocks | None = None

    def _set(self, reference: U8 | None) -> None:
        super()._set(reference)
        self._ref_blocks = None if reference is None else EdgeBlocks(edge_map(reference))

    def compute(self, obs: Observation) -> float:
        thumb = self._thumb(obs)
        if thumb is None or self._ref_blocks is None or self._ref_view is None:
            return math.nan
        usable = block_clip(obs.stats.tiles[:, :, _CLIP], self._ref_blocks.grid) <= CLIPPED_TILE
        hidden = hidden_mask(thumb, self._ref_view)
        if hidden.any():
            hidden = np.asarray(cv2.dilate(hidden.astype(np.uint8), _WIDEN) > 0)
        return 1.0 - block_ncc(edge_map(thumb), self._ref_blocks, usable=usable, hidden=hidden)


@register
class Occluded(ViewTest):
    """Share of the reference's measurable pixels whose texture is gone (module docstring)."""

    name = "occluded"
    # 1 % of the view: the smallest occluder it names (clean vtest frames hide at most 0.1 %,
    # a 5 % rectangle 2.5-3.3 %).
    default_tolerance = 0.01
    keeps_tolerance = True  # a tamper reason: the tolerance is the smallest event it names

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self._detail: dict[str, float | int | str] = {}

    def compute(self, obs: Observation) -> float:
        self._detail = {}
        thumb = self._thumb(obs)
        if thumb is None or self._ref_view is None:
            return math.nan
        ref = self._ref_view
        if ref.measurable < MIN_DETAIL * ref.texture.size:
            return math.nan  # a flat reference: nothing to hide
        hidden = hidden_mask(thumb, ref)
        share = float(hidden.sum()) / ref.measurable
        if share > 0.0:
            ys, xs = np.nonzero(hidden)
            rows, cols = hidden.shape
            self._detail = {"hidden_share": round(share, 4), "center_x": round(float(xs.mean() + 0.5) / cols, 3),
                            "center_y": round(float(ys.mean() + 0.5) / rows, 3)}
        return share

    @property
    def detail(self) -> dict[str, float | int | str]:
        """How much of the view is hidden, and where (the hidden pixels' centre, 0..1 of the frame)."""
        return dict(self._detail)
