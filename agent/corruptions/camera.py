"""Camera-reality corruptions that ImageNet-C lacks (used by ``edge-guard stress``).

ImageNet-C has brightness *up* and contrast *down* only, and none of the failure modes a
mounted camera meets every week: underexposure at dusk, a white-balance error, sun glare
or a headlight in the lens, something stuck on or in front of the lens, haze, and the
stream encoder's JPEG quality. Each is a pure function of (image, severity, rng) with five
fixed levels; the tables below are the documented parameters.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from agent.corruptions._common import U8, to_unit

__all__ = [
    "COLOR_CAST",
    "GLARE",
    "HAZE",
    "JPEG_CAMERA",
    "OCCLUSION",
    "UNDEREXPOSURE_EV",
    "color_cast",
    "glare",
    "haze",
    "jpeg_camera",
    "occlusion",
    "underexposure",
]

#: Exposure reduction in stops (EV) applied in linear light (sRGB approximated by gamma 2.2).
UNDEREXPOSURE_EV: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0)
#: White-balance error strength s: channel gains 1 +- s in linear light (direction drawn per image).
COLOR_CAST: tuple[float, ...] = (0.1, 0.2, 0.3, 0.45, 0.6)
#: Glare: (blob sigma as a fraction of the shorter side, peak added light, uniform veiling light), 0..1 units.
GLARE: tuple[tuple[float, float, float], ...] = (
    (0.08, 0.8, 0.02), (0.12, 1.2, 0.04), (0.16, 1.6, 0.07), (0.22, 2.0, 0.10), (0.30, 2.5, 0.15),
)
#: Partial occlusion: (number of rectangles, share of the image covered in total).
OCCLUSION: tuple[tuple[int, float], ...] = ((1, 0.05), (2, 0.10), (3, 0.20), (4, 0.30), (5, 0.40))
#: Uniform haze: transmission t of the atmospheric scattering model I = J t + A (1 - t).
HAZE: tuple[float, ...] = (0.85, 0.70, 0.55, 0.40, 0.25)
#: Stream-encoder JPEG quality (milder than ImageNet-C's 25..7: what camera encoders actually use).
JPEG_CAMERA: tuple[int, ...] = (80, 60, 40, 25, 15)

_GAMMA = 2.2
#: Haze airlight (B, G, R) in 0..1: slightly bluish light grey.
_AIRLIGHT = np.array([0.86, 0.84, 0.80], dtype=np.float32)
#: Glare light colour (B, G, R): warm white (sun, headlights).
_GLARE_TINT = np.array([0.92, 0.97, 1.0], dtype=np.float32)
#: Casts: per-channel (B, G, R) gain direction, scaled by s: warm (tungsten), cool (shade), green (fluorescent).
_CASTS = np.array([[-1.0, 0.0, 1.0], [1.0, 0.0, -1.0], [-0.5, 1.0, -0.5]], dtype=np.float32)


def _to_linear(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray(np.power(x, np.float32(_GAMMA)), dtype=np.float32)


def _to_gamma(x: npt.NDArray[np.float32]) -> U8:
    out = np.power(np.clip(x, 0.0, 1.0), np.float32(1.0 / _GAMMA)) * 255.0
    return np.asarray(np.rint(out), dtype=np.uint8)


def underexposure(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Exposure reduced by 1..5 stops: linear light times 2**-EV (shadows crush to black)."""
    ev = UNDEREXPOSURE_EV[severity - 1]
    return _to_gamma(_to_linear(to_unit(image)) * np.float32(2.0**-ev))


def color_cast(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Wrong white balance: channel gains ``1 + s * direction`` in linear light.

    The direction is drawn per image from warm (R up, B down), cool (B up, R down) and green
    (G up, R and B down by half), the casts of tungsten, shade and fluorescent light.
    """
    s = COLOR_CAST[severity - 1]
    gains = 1.0 + np.float32(s) * _CASTS[int(rng.integers(0, len(_CASTS)))]
    return _to_gamma(_to_linear(to_unit(image)) * gains)


def glare(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """A bright, saturated light blob (clipped core and bloom) plus uniform veiling glare.

    The blob is a Gaussian of sigma = f * min(H, W), centred at a random point of the central
    80% of the frame, adding up to ``peak`` (x full scale) warm-white light; the veil adds a
    constant that lowers contrast everywhere, as stray light in the lens does.
    """
    frac, peak, veil = GLARE[severity - 1]
    h, w = image.shape[:2]
    cy = rng.uniform(0.1, 0.9) * h
    cx = rng.uniform(0.1, 0.9) * w
    sigma = frac * min(h, w)
    yy = (np.arange(h, dtype=np.float32) - np.float32(cy)) ** 2
    xx = (np.arange(w, dtype=np.float32) - np.float32(cx)) ** 2
    blob = np.exp(-(yy[:, None] + xx[None, :]) / np.float32(2.0 * sigma * sigma))  # (H, W)
    light = (np.float32(peak) * blob)[..., None] * _GLARE_TINT + np.float32(veil)
    out = (to_unit(image) + light) * 255.0
    return np.clip(out, 0.0, 255.0).astype(np.uint8)


def occlusion(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Random dark rectangles (dirt, a sticker, a nearby object) covering a fixed share of the frame.

    The frame is split into n vertical bands and one rectangle of area share/n is placed at a
    random position inside each band, so rectangles never overlap and the covered share is
    exact (unless a rectangle would be taller than the frame). Each has a flat grey 0..63.
    """
    n, share = OCCLUSION[severity - 1]
    h, w = image.shape[:2]
    out = image.copy()
    area = share * h * w / n
    band = w / n
    for i in range(n):
        aspect = rng.uniform(0.5, 2.0)  # width / height
        rw = int(min(band, max(1.0, np.sqrt(area * aspect))))
        rh = int(min(h, max(1.0, round(area / rw))))
        x0 = int(i * band + rng.uniform(0.0, max(0.0, band - rw)))
        y0 = int(rng.uniform(0.0, max(0.0, h - rh)))
        out[y0 : y0 + rh, x0 : x0 + rw] = int(rng.integers(0, 64))
    return out


def haze(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Uniform haze (atmospheric scattering, same depth everywhere): ``J * t + A * (1 - t)``.

    Unlike ``fog`` (fractal, patchy) this is spatially uniform: the contrast loss of mist,
    smoke or a dirty window.
    """
    t = np.float32(HAZE[severity - 1])
    out = to_unit(image) * t + _AIRLIGHT * (np.float32(1.0) - t)
    return np.rint(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def jpeg_camera(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """JPEG encode/decode at a stream encoder's quality (80, 60, 40, 25, 15)."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_CAMERA[severity - 1]])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode an image of shape {image.shape}")
    return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), dtype=np.uint8)
