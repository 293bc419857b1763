"""ImageNet-C weather corruptions: snow, frost, fog (NumPy/OpenCV ports of the reference).

Frost differs from the reference on purpose: ImageNet-C blends the image with crops of six
photographs of frosted glass shipped with the package; we have no licence-clean copies, so
``frost_texture`` synthesises a procedural frost layer (low-frequency plasma haze, a fine ice
grain and thousands of short branching crystal strokes, bluish white, mean about 0.5) and
blends it with the reference's per-severity weights. Expect the same kind of degradation,
not identical numbers.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from agent.corruptions._common import (
    F32,
    U8,
    clipped_zoom,
    from_unit,
    gaussian,
    motion_blur,
    next_power_of_2,
    plasma_fractal,
    to_unit,
)

__all__ = ["FOG", "FROST", "SNOW", "fog", "frost", "frost_texture", "snow"]

# (mean, std, zoom, threshold, blur radius, blur sigma, image weight)
SNOW: tuple[tuple[float, float, float, float, int, float, float], ...] = (
    (0.1, 0.3, 3.0, 0.5, 10, 4.0, 0.8),
    (0.2, 0.3, 2.0, 0.5, 12, 4.0, 0.7),
    (0.55, 0.3, 4.0, 0.9, 12, 8.0, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8.0, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12.0, 0.55),
)
# (image weight, frost weight)
FROST: tuple[tuple[float, float], ...] = ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
# (fog strength, plasma wibble decay: lower = more high-frequency structure)
FOG: tuple[tuple[float, float], ...] = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))

#: Frost crystal colour (B, G, R): bluish white, like ice lit by daylight.
_FROST_TINT = np.array([1.0, 0.96, 0.9], dtype=np.float32)


def snow(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Falling snow: thresholded zoomed noise, motion-blurred downwards, added twice, over a whitened image."""
    mean, std, zoom, threshold, radius, sigma, weight = SNOW[severity - 1]
    x = to_unit(image)
    h, w = x.shape[:2]
    layer = rng.normal(mean, std, size=(h, w)).astype(np.float32)
    layer = clipped_zoom(layer, zoom)
    layer[layer < threshold] = 0.0
    layer = np.clip(layer, 0.0, 1.0)
    layer = motion_blur(layer, radius, sigma, float(rng.uniform(-135.0, -45.0)))
    layer = (np.round(layer * 255.0).astype(np.uint8).astype(np.float32) / 255.0)[..., None]  # (H, W, 1)
    gray = np.asarray(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY), dtype=np.float32)[..., None]
    x = weight * x + (1.0 - weight) * np.maximum(x, gray * 1.5 + 0.5)
    return from_unit(x + layer + np.rot90(layer, k=2))


def frost_texture(height: int, width: int, rng: np.random.Generator) -> F32:
    """A procedural frosted-glass layer, (H, W, 3) float32 BGR in 0..255 (see the module docstring)."""
    # Low-frequency haze: a plasma fractal at quarter resolution, upscaled; it also sets where
    # crystals cluster, together with a vignette (frost grows from the edges of a pane).
    side = next_power_of_2(max(8, math.ceil(max(height, width) / 4)))
    base = plasma_fractal(side, 1.6, rng).astype(np.float32)
    big = max(height, width)
    crop = base[: max(2, side * height // big), : max(2, side * width // big)]  # keep the frame's aspect
    base = np.asarray(cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR), dtype=np.float32)
    yy = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    vignette = np.clip(np.maximum(np.abs(yy), np.abs(xx)) ** 2, 0.0, 1.0)  # (H, W), 1 at the edges
    density = np.clip(0.35 + 0.5 * base + 0.5 * vignette, 0.0, 1.0)
    # Fine ice grain.
    grain = gaussian(rng.standard_normal((height, width), dtype=np.float32), (0.8, 0.8))
    # Crystals: feathery random-walk polylines (a few px per step), drawn anti-aliased.
    n = max(20, height * width // 250)
    steps = 8
    start = rng.uniform((0.0, 0.0), (width, height), size=(n, 2))
    keep = rng.random(n) < density[start[:, 1].astype(int), start[:, 0].astype(int)]
    start = start[keep]
    m = start.shape[0]
    step_px = rng.uniform(1.5, 2.5 + 0.004 * max(height, width), size=(m, 1))
    heading = rng.uniform(0.0, 2.0 * math.pi, size=(m, 1)) + np.cumsum(rng.normal(0.0, 0.45, size=(m, steps)), axis=1)
    walk = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], axis=2) * step_px[..., None], axis=1)
    paths = np.concatenate([start[:, None, :], start[:, None, :] + walk], axis=1)  # (m, steps + 1, 2) as (x, y)
    canvas = np.zeros((height, width), dtype=np.uint8)
    level = rng.integers(0, 4, size=m)
    for lv in range(4):
        pts = [p.reshape(-1, 1, 2) for p in np.round(paths[level == lv] * 4).astype(np.int32)]
        if pts:
            # shift=2: coordinates carry 2 fractional bits (sub-pixel, anti-aliased strokes)
            cv2.polylines(canvas, pts, isClosed=False, color=90 + 40 * lv, thickness=1, lineType=cv2.LINE_AA, shift=2)
    crystals = gaussian(canvas.astype(np.float32) / 255.0, (0.7, 0.7))
    tex = np.clip(0.52 + 0.3 * base * density + 0.5 * crystals + 0.05 * grain, 0.0, 1.0)
    return np.asarray(tex[..., None] * _FROST_TINT * 255.0, dtype=np.float32)


def frost(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Frosted lens/window: ``a * image + b * frost_texture`` with the reference's weights (procedural frost)."""
    a, b = FROST[severity - 1]
    h, w = image.shape[:2]
    out = a * image.astype(np.float32) + b * frost_texture(h, w, rng)
    return np.clip(out, 0.0, 255.0).astype(np.uint8)


def fog(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Fog: add a plasma-fractal haze of strength c, then rescale by max / (max + c)."""
    strength, decay = FOG[severity - 1]
    x = to_unit(image)
    h, w = x.shape[:2]
    max_val = float(x.max())
    # The reference sizes the map from max(H, W, 3); the channel count never wins.
    layer = plasma_fractal(next_power_of_2(max(h, w)), decay, rng)[:h, :w].astype(np.float32)
    x = x + np.float32(strength) * layer[..., None]
    return from_unit(x * np.float32(max_val / (max_val + strength)))
