"""What every scorer sees of one frame: an Observation (statistics, features, model scores).

The transformed feature vector (``FEATURES``) is computed once per frame and shared by
all tests. Transforms make the statistics closer to additive and gain-invariant
(a camera's exposure multiplies luma, so logs of brightness/contrast shift by a constant,
and ``sharpness`` does not change when a frame is only darker):

| feature | definition |
|---|---|
| ``log_brightness`` | log(1 + brightness) |
| ``log_contrast`` | log(1 + contrast) |
| ``log_saturation`` | log(SATURATION_OFFSET + saturation), SATURATION_OFFSET = 10 |
| ``sharpness`` | log(1 + blur) - 2 log(1 + contrast): Laplacian energy relative to contrast |
| ``log_noise`` | log(1 + noise) |
| ``dark`` | log(1 + dark_frac / f), f = ``glare_floor`` |
| ``clip`` | log(1 + clip_frac / f) |
| ``cast_b`` / ``cast_r`` | log((1 + mean_b) / (1 + mean_g)), log((1 + mean_r) / (1 + mean_g)) |
| ``motion`` | log(0.1 + diff_prev) (NaN without a previous frame) |
| ``tile_spread`` | log(1 + std over tiles of tile brightness) |
| ``tile_structure`` | 25th percentile over tiles of log(1 + contrast_t) + 0.5 log(1 + blur_t) |
| ``tile_contrast_hi`` | 75th percentile over tiles of log(1 + contrast_t) (``covered`` tests it) |

Percentiles over tiles interpolate linearly between order statistics (NumPy's default).

Besides the statistics, an Observation may carry what only the image or an extra model pass
can give: ``thumb``, a small luma thumbnail (``make_thumbnail``: area-averaged to
``THUMB_WIDTH`` columns, ~0.2 ms at 768x432) that the ``moved`` test compares with the
calibrated reference; ``chroma``, the per-tile high-frequency chroma noise floor
(``chroma_energy``, ~1 ms at 768x432) that ``adversarial_hf`` reads; ``motion``, per tile
how much the colour thumbnail changed over the last ``MOTION_LAG`` frames (``TileMotion``:
kept by the Guard and the Calibrator, which see every frame), which ``patch`` reads to tell
a slow or iso-luminant mover (a purple shirt on a grey road changes the luma difference
``diff_prev`` hardly at all) from a static patch; ``detail``, the luma area-averaged to
``DETAIL_WIDTH`` = 256 columns (``make_detail``, ~0.3 ms at 768x576), which ``warped``
(warp.py) compares with the calibrated background; and ``squeeze``, the feature-squeezing
distance (adversarial.py). They are None when not available; the tests that need them are
then not applicable (``patch`` then goes by ``diff_prev`` alone).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from agent.model.types import ModelOutput
from agent.scoring.detector_outputs import DetectionSummary, summarize_detections
from agent.stats.types import TILE_FIELDS, FrameStats

__all__ = [
    "CHROMA_ROWS",
    "CLIPPED_TILE",
    "DETAIL_WIDTH",
    "FEATURES",
    "FEATURE_TOLERANCE",
    "MOTION_LAG",
    "SATURATION_OFFSET",
    "THUMB_WIDTH",
    "ModelScores",
    "Observation",
    "TileMotion",
    "chroma_energy",
    "clipped_mask",
    "clipped_tiles",
    "feature_vector",
    "make_detail",
    "make_thumbnail",
    "model_scores",
    "observe",
    "thumbnail_bgr",
    "tile_structure",
]

FloatArray = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

#: Added to the mean saturation (HSV S, 0-255) before its log: a grey picture's codec and sensor
#: noise alone reads as a mean saturation of 3-9, and it moves with the scene's content by more
#: than 5 % (the feature's tolerance). log(1 + s) turned that into a 2-4 sd "change" on a
#: monochrome camera (vtest in grey, MJPEG: 11 % of clean held-out frames flagged by
#: ``ood_stats``); with 10, a change must exceed about half a code value as well as 5 %. A
#: colour scene (saturation 50-150) reads as before.
SATURATION_OFFSET: float = 10.0
#: Columns of the luma thumbnail kept per frame (rows follow the aspect ratio, at least 8).
THUMB_WIDTH: int = 64
#: Columns of the luma detail image ``warped`` compares (rows follow the aspect ratio).
DETAIL_WIDTH: int = 256
#: A tile with a larger share of clipped pixels lost its detail and edges to the light: ``defocused``
#: and ``moved`` leave it out, ``blur`` does not apply where most tiles are such (``clipped_tiles``).
CLIPPED_TILE: float = 0.1
#: TileMotion compares the colour thumbnail with the one this many frames earlier.
MOTION_LAG: int = 5
#: chroma_energy samples about this many rows of the frame (every k-th row, k >= 1).
CHROMA_ROWS: int = 96
_BLOCK_H, _BLOCK_W = 2, 8  # blocks of sampled rows x columns
_FLOOR_Q = 0.1  # a tile's noise floor: this quantile of its block means

FEATURES: tuple[str, ...] = (
    "log_brightness",
    "log_contrast",
    "log_saturation",
    "sharpness",
    "log_noise",
    "dark",
    "clip",
    "cast_b",
    "cast_r",
    "motion",
    "tile_spread",
    "tile_structure",
    "tile_contrast_hi",
)
#: Smallest spread of each feature that matters physically (5 % of brightness, contrast,
#: saturation or noise; 3 % of a channel ratio; ...): it floors the robust scatter, so a
#: feature that is nearly constant on clean frames (clip share 0, a static scene) does not
#: turn tiny changes into huge distances.
FEATURE_TOLERANCE: tuple[float, ...] = (0.05, 0.05, 0.05, 0.1, 0.05, 0.5, 0.5, 0.03, 0.03, 0.3, 0.1, 0.1, 0.1)
assert len(FEATURE_TOLERANCE) == len(FEATURES)

_C = TILE_FIELDS.index("contrast")
_L = TILE_FIELDS.index("blur")
_B = TILE_FIELDS.index("brightness")
_CLIP = TILE_FIELDS.index("clip_frac")
MOTION_OFFSET: float = 0.1


def tile_structure(tiles: FloatArray) -> FloatArray:
    """Per-tile structure log(1 + contrast_t) + 0.5 log(1 + blur_t), flattened (rows*cols,)."""
    t = tiles.reshape(-1, tiles.shape[-1])
    out: FloatArray = np.log1p(t[:, _C]) + 0.5 * np.log1p(t[:, _L])
    return out


def _percentile(ordered: list[float], q: float) -> float:
    """Linear-interpolation percentile (q in [0, 100]) of an ascending list; NaN when empty."""
    if not ordered:
        return math.nan
    pos = q / 100.0 * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def feature_vector(stats: FrameStats, floor: float = 1e-3) -> FloatArray:
    """The FEATURES vector of one frame (see the module table). ``floor`` is ``glare_floor``."""
    log1p = math.log1p
    contrast = log1p(stats.contrast)
    diff = stats.diff_prev
    # 16 tiles: sorting a Python list beats np.percentile's overhead by ~20x
    struct = sorted(v for v in tile_structure(stats.tiles).tolist() if not math.isnan(v))
    tile_contrast = sorted(math.log1p(v) for v in stats.tiles[:, :, _C].ravel().tolist() if not math.isnan(v))
    bright = stats.tiles[:, :, _B]
    if np.isnan(bright).any():
        bright = bright[~np.isnan(bright)]
    return np.array(
        (
            log1p(stats.brightness),
            contrast,
            math.log(SATURATION_OFFSET + stats.saturation),
            log1p(stats.blur) - 2.0 * contrast,
            log1p(stats.noise),
            log1p(stats.dark_frac / floor),
            log1p(stats.clip_frac / floor),
            math.log((1.0 + stats.mean_b) / (1.0 + stats.mean_g)),
            math.log((1.0 + stats.mean_r) / (1.0 + stats.mean_g)),
            math.log(MOTION_OFFSET + diff) if not math.isnan(diff) else math.nan,
            log1p(float(bright.std())) if bright.size > 1 else 0.0,
            _percentile(struct, 25.0),
            _percentile(tile_contrast, 75.0),
        ),
        dtype=np.float64,
    )


def _area_resize(image: U8, width: int) -> U8:
    """``image`` area-averaged to ``width`` columns (aspect kept, >= 8 rows), contiguous uint8."""
    h, w = image.shape[:2]
    rows = max(8, round(width * h / max(w, 1)))
    return np.ascontiguousarray(cv2.resize(image, (width, rows), interpolation=cv2.INTER_AREA), dtype=np.uint8)


def thumbnail_bgr(image: U8, width: int = THUMB_WIDTH) -> U8:
    """Colour thumbnail (rows, ``width``, 3) of a BGR uint8 frame, area-averaged (aspect kept, >= 8 rows)."""
    return _area_resize(image, width)


def clipped_mask(stats: FrameStats) -> npt.NDArray[np.bool_]:
    """(rows * cols,) True for the tiles more than ``CLIPPED_TILE`` clipped (False for empty tiles)."""
    clip = stats.tiles[:, :, _CLIP].ravel()
    return np.asarray(clip > CLIPPED_TILE)  # NaN compares False


def clipped_tiles(stats: FrameStats) -> float:
    """Share of the tiles (those with statistics) more than ``CLIPPED_TILE`` clipped (0 when none has any).

    >>> import numpy as np
    >>> tiles = np.zeros((2, 2, len(TILE_FIELDS))); tiles[0, :, TILE_FIELDS.index("clip_frac")] = 0.5
    >>> clipped_tiles(FrameStats(8, 8, *[0.0] * 11, hist=np.zeros(32, np.int64), tiles=tiles))
    0.5
    """
    known = int(np.count_nonzero(~np.isnan(stats.tiles[:, :, _CLIP])))
    return float(np.count_nonzero(clipped_mask(stats))) / max(1, known)


def make_detail(image: U8, width: int = DETAIL_WIDTH) -> U8:
    """Luma (rows, min(``width``, image width)) of a BGR or grey uint8 frame, area-averaged (aspect kept, >= 8 rows)."""
    gray = np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image, dtype=np.uint8)
    return gray if width >= gray.shape[1] else _area_resize(gray, width)


def make_thumbnail(image: U8, width: int = THUMB_WIDTH, *, small: U8 | None = None) -> U8:
    """Luma thumbnail (rows, ``width``) of a BGR uint8 frame (``small``: its ``thumbnail_bgr``, if made)."""
    small = thumbnail_bgr(image, width) if small is None else small
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    return np.ascontiguousarray(gray, dtype=np.uint8)


class TileMotion:
    """Per-tile change of the colour thumbnail over ``lag`` frames (one stream, fed every frame).

    motion_t = mean over the thumbnail pixels of tile t of max over B, G, R of
    |thumb_now - thumb_lag| (code values). Area averaging (THUMB_WIDTH columns) removes sensor
    noise, the lag makes slow movers visible, and the colour channels make iso-luminant ones
    visible; a static patch, sticker or overlay stays near 0. ``update`` returns None until
    ``lag`` earlier frames of the same size were seen. ~80 us per frame (4x4 grid).

    >>> import numpy as np
    >>> tm = TileMotion((1, 2), lag=1)
    >>> a = np.zeros((8, 16, 3), np.uint8); b = a.copy(); b[:, 8:, 2] = 40   # right tile turns red
    >>> tm.update(a) is None, tm.update(b).tolist()
    (True, [0.0, 40.0])
    """

    def __init__(self, grid: tuple[int, int], lag: int = MOTION_LAG) -> None:
        if lag < 1:
            raise ValueError(f"lag must be >= 1, but got {lag}")
        self.grid = grid
        self.lag = lag
        self._history: deque[U8] = deque(maxlen=lag + 1)

    def reset(self) -> None:
        self._history.clear()

    def update(self, small: U8 | None) -> FloatArray | None:
        """Add this frame's ``thumbnail_bgr`` (None: no image, the history restarts)."""
        if small is None or (self._history and self._history[-1].shape != small.shape):
            self._history.clear()
        if small is None:
            return None
        self._history.append(small)
        if len(self._history) <= self.lag:
            return None
        diff = np.abs(small.astype(np.int16) - self._history[0].astype(np.int16)).max(axis=2)  # (R, C)
        rows, cols = self.grid
        h, w = diff.shape
        r_edges = np.arange(rows + 1) * h // rows
        c_edges = np.arange(cols + 1) * w // cols
        if (np.diff(r_edges) == 0).any() or (np.diff(c_edges) == 0).any():
            return np.full(rows * cols, np.nan)  # a thumbnail smaller than the grid
        sums = np.add.reduceat(np.add.reduceat(diff.astype(np.float64), r_edges[:-1], axis=0), c_edges[:-1], axis=1)
        out: FloatArray = (sums / np.outer(np.diff(r_edges), np.diff(c_edges))).ravel()
        return out


def chroma_energy(image: U8, grid: tuple[int, int]) -> FloatArray:
    """Per-tile high-frequency chroma *noise floor* (rows * cols,); NaN for tiles too small.

    K = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]] (Immerkaer's kernel, the product of two second
    differences) cancels smooth structure and responds to pixel-level noise. Applied to the
    colour differences B - G and R - G it measures high-frequency *chroma* energy, which natural
    images hardly have (optics blur chroma; cameras subsample and denoise it) while an L-inf
    attack perturbs each channel with its own sign pattern. |K(B - G)| + |K(R - G)| is
    evaluated on every k-th row (k = max(1, H // CHROMA_ROWS)), averaged over blocks of 2
    sampled rows x 8 columns, and each tile reports the 10th percentile of its blocks: the
    tile's noise floor, unmoved by colourful edges and objects. ~1 ms at 768x432.
    """
    h, w = image.shape[:2]
    rows, cols = grid
    out = np.full(rows * cols, np.nan)
    mid = np.arange(1, h - 1, max(1, h // CHROMA_ROWS))
    if mid.size < 2 or w < 3 + _BLOCK_W:
        return out
    v = image[mid - 1].astype(np.int16)  # (R, W, 3): the vertical second difference of each channel
    v += image[mid + 1]
    v -= image[mid]
    v -= image[mid]
    k = np.zeros((mid.size, w - 2), np.int16)  # at most 2 x 4 x 1020 = 8160
    for c in (0, 2):  # B - G and R - G (the operator is linear: differences of second differences)
        d = v[:, :, c] - v[:, :, 1]
        k += np.abs(d[:, :-2] - 2 * d[:, 1:-1] + d[:, 2:])  # horizontal second difference
    nr, nc = k.shape[0] // _BLOCK_H, k.shape[1] // _BLOCK_W
    sums = k[: nr * _BLOCK_H, : nc * _BLOCK_W].astype(np.int32).reshape(nr, _BLOCK_H, -1).sum(axis=1)
    sums = sums.reshape(nr, nc, _BLOCK_W).sum(axis=2)  # (nr, nc) block sums, exact integers
    blocks = (sums / float(_BLOCK_H * _BLOCK_W)).astype(np.float32)
    for i in range(rows):
        for j in range(cols):
            t = blocks[i * nr // rows : (i + 1) * nr // rows, j * nc // cols : (j + 1) * nc // cols].ravel()
            if t.size:
                q = int(_FLOOR_Q * (t.size - 1))
                out[i * cols + j] = float(np.partition(t, q)[q])
    return out


@dataclass(frozen=True, slots=True)
class ModelScores:
    """Scalar summaries of a model output used by scoring (small enough to keep per frame).

    ``energy`` is -logsumexp(logits) (None without logits), ``entropy`` of the class
    probabilities (None for detectors), ``confidence`` the top-1 probability or best detection
    score, ``detections`` the number of detections (None for classifiers), ``boxes`` the
    detections' summary (detector_outputs.py; None for classifiers).
    """

    top1: int
    confidence: float
    entropy: float | None
    energy: float | None
    detections: int | None
    boxes: DetectionSummary | None = None


def model_scores(output: ModelOutput | None, width: int = 1, height: int = 1) -> ModelScores | None:
    """Reduce a ModelOutput to ModelScores (None stays None); ``width``/``height``: the frame's size."""
    if output is None:
        return None
    det = output.detections
    return ModelScores(
        top1=int(output.top1),
        confidence=float(output.confidence),
        entropy=output.entropy,
        energy=output.energy,
        detections=None if det is None else int(det.shape[0]),
        boxes=None if det is None else summarize_detections(det, width, height),
    )


@dataclass(frozen=True, slots=True)
class Observation:
    """One frame as scorers see it. ``live`` is False for files/folders (no frozen test then).

    ``thumb``: luma thumbnail (``make_thumbnail``) or None; ``chroma``: per-tile chroma
    energy (``chroma_energy``) or None; ``motion``: per-tile ``TileMotion`` or None;
    ``squeeze``: feature-squeezing distance or None; ``detail``: the luma at ``DETAIL_WIDTH``
    columns (``make_detail``) or None (see the module docstring).
    """

    stats: FrameStats
    features: FloatArray
    model: ModelScores | None
    live: bool = True
    thumb: U8 | None = None
    chroma: FloatArray | None = None
    squeeze: float | None = None
    motion: FloatArray | None = None
    detail: U8 | None = None

    def feature(self, name: str) -> float:
        return float(self.features[FEATURES.index(name)])


def observe(
    stats: FrameStats,
    output: ModelOutput | None,
    *,
    live: bool = True,
    floor: float = 1e-3,
    image: U8 | None = None,
    squeeze: float | None = None,
    small: U8 | None = None,
    motion: FloatArray | None = None,
) -> Observation:
    """Build the Observation of one frame (features computed once here; the thumbnail when ``image``).

    ``small``: the frame's ``thumbnail_bgr`` when the caller already made it (for ``TileMotion``).
    """
    return Observation(
        stats=stats,
        features=feature_vector(stats, floor),
        model=model_scores(output, stats.width, stats.height),
        live=live,
        thumb=None if image is None else make_thumbnail(image, small=small),
        chroma=None if image is None else chroma_energy(image, stats.grid),
        squeeze=squeeze,
        motion=motion,
        detail=None if image is None else make_detail(image),
    )
