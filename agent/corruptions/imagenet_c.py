"""ImageNet-C noise, blur and digital corruptions (Hendrycks & Dietterich, ICLR 2019).

Same definitions and severity parameters as the reference code packaged by
``imagecorruptions`` 1.1 (bethgelab), ported to NumPy/OpenCV so they need neither
scikit-image, SciPy, Wand/ImageMagick nor Numba. Every function takes a BGR uint8 image,
a severity 1..5 (checked by the registry) and a NumPy Generator, and returns a new BGR
uint8 image of the same shape. The weather types (snow, frost, fog) are in ``weather``.

Where the port differs from the reference it says so in the function's docstring; the
differences are sampling details, not different corruptions.
"""

from __future__ import annotations

import cv2
import numpy as np

from agent.corruptions._common import (
    U8,
    clipped_zoom,
    disk_kernel,
    from_unit,
    gaussian,
    motion_blur,
    to_unit,
)

__all__ = [
    "BRIGHTNESS",
    "CONTRAST",
    "DEFOCUS_BLUR",
    "ELASTIC_ALPHA",
    "GAUSSIAN_NOISE",
    "GLASS_BLUR",
    "IMPULSE_NOISE",
    "JPEG_QUALITY",
    "MOTION_BLUR",
    "PIXELATE",
    "SHOT_NOISE",
    "ZOOM_BLUR",
    "brightness",
    "contrast",
    "defocus_blur",
    "elastic_transform",
    "gaussian_noise",
    "glass_blur",
    "impulse_noise",
    "jpeg_compression",
    "motion_blur_corruption",
    "pixelate",
    "shot_noise",
    "zoom_blur",
]

# Severity tables, index = severity - 1 (the reference's values).
GAUSSIAN_NOISE: tuple[float, ...] = (0.08, 0.12, 0.18, 0.26, 0.38)  # sigma, image in 0..1
SHOT_NOISE: tuple[float, ...] = (60, 25, 12, 5, 3)  # photons at full scale
IMPULSE_NOISE: tuple[float, ...] = (0.03, 0.06, 0.09, 0.17, 0.27)  # salt-and-pepper share per value
DEFOCUS_BLUR: tuple[tuple[float, float], ...] = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # radius, alias
GLASS_BLUR: tuple[tuple[float, int, int], ...] = (
    (0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2),
)  # sigma, max_delta px, iterations
MOTION_BLUR: tuple[tuple[int, float], ...] = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # radius, sigma
ZOOM_BLUR: tuple[tuple[float, float, float], ...] = (
    (1.0, 1.11, 0.01), (1.0, 1.16, 0.01), (1.0, 1.21, 0.02), (1.0, 1.26, 0.02), (1.0, 1.31, 0.03),
)  # np.arange(start, stop, step) zoom factors
CONTRAST: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1, 0.05)  # factor around the channel mean
BRIGHTNESS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to HSV value, 0..1
JPEG_QUALITY: tuple[int, ...] = (25, 18, 15, 10, 7)
PIXELATE: tuple[float, ...] = (0.6, 0.5, 0.4, 0.3, 0.25)  # downscale factor
ELASTIC_ALPHA: tuple[float, ...] = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)


# --- noise ---------------------------------------------------------------------------------
def gaussian_noise(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Additive white Gaussian noise, sigma per severity (image scaled to 0..1)."""
    c = GAUSSIAN_NOISE[severity - 1]
    x = to_unit(image)
    return from_unit(x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(c))


def shot_noise(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Poisson (photon) noise: ``poisson(x * c) / c`` with c photons at full scale."""
    c = SHOT_NOISE[severity - 1]
    x = image.astype(np.float64) / 255.0
    return from_unit(rng.poisson(x * c) / float(c))


def impulse_noise(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Salt-and-pepper noise: each channel value independently set to 0 or 255 with probability c.

    Reference: ``skimage.util.random_noise(mode='s&p', amount=c)`` (salt vs pepper 0.5).
    """
    c = IMPULSE_NOISE[severity - 1]
    flipped = rng.random(image.shape, dtype=np.float32) < c
    salted = rng.random(image.shape, dtype=np.float32) < 0.5
    out = image.copy()
    out[flipped & salted] = 255
    out[flipped & ~salted] = 0
    return out


# --- blur ----------------------------------------------------------------------------------
def defocus_blur(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Convolution with an anti-aliased disk of the severity's radius (out-of-focus lens)."""
    radius, alias = DEFOCUS_BLUR[severity - 1]
    kernel = disk_kernel(radius, alias)
    return from_unit(np.asarray(cv2.filter2D(to_unit(image), -1, kernel)))


def glass_blur(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Gaussian blur, local pixel shuffling, Gaussian blur again (frosted glass).

    The reference loops over every pixel (bottom-right to top-left, ``iterations`` times) and
    sets it from a random neighbour within ``max_delta`` (its tuple "swap" of NumPy views
    copies rather than swaps, so it is a propagating copy). Here the pixels are split into
    K x K interleaved classes, K = max(2 * max_delta, 16); within a class no pixel reads
    another one's target, so each class is one vectorised gather, identical to the sequential
    loop over that class. Classes run bottom-right first, so a neighbour has already moved
    exactly when the reference would have moved it, except across class-block boundaries
    (|shift| / K of the moves). Milliseconds instead of seconds; PSNR per severity within
    0.2 dB of the reference on the test photos.
    """
    sigma, delta, iterations = GLASS_BLUR[severity - 1]
    x = from_unit(gaussian(to_unit(image), (sigma, sigma)))  # the reference rounds to uint8 here too
    h, w = x.shape[:2]
    # One uint32 per pixel (B, G, R, 0) so that a move is a single flat gather.
    packed = np.zeros((h, w, 4), dtype=np.uint8)
    packed[..., :3] = x
    flat = packed.view(np.uint32).reshape(-1)  # (H*W,)
    ys = np.arange(h - delta, delta, -1)
    xs = np.arange(w - delta, delta, -1)
    k = max(2 * delta, 16)
    for _ in range(iterations):
        for r in range(k):
            yy = ys[r::k][:, None]  # (n, 1)
            for c in range(k):
                xx = xs[c::k][None, :]  # (1, m)
                if yy.size == 0 or xx.size == 0:
                    continue
                d = rng.integers(-delta, delta, size=(2, yy.shape[0], xx.shape[1]))  # [dx, dy] in [-delta, delta)
                flat[yy * w + xx] = flat[(yy + d[1]) * w + xx + d[0]]
    return from_unit(gaussian(to_unit(packed[..., :3]), (sigma, sigma)))


def motion_blur_corruption(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """One-sided Gaussian-weighted streak at a random angle in [-45, 45) degrees (camera shake).

    The reference (imagecorruptions, which replaced ImageNet-C's ImageMagick call) sums
    shifted copies; this is the same sum as one ``filter2D`` kernel.
    """
    radius, sigma = MOTION_BLUR[severity - 1]
    angle = float(rng.uniform(-45.0, 45.0))
    out = motion_blur(image.astype(np.float32), radius, sigma, angle)
    return np.clip(out, 0.0, 255.0).astype(np.uint8)


def zoom_blur(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Average of the image and centre zooms by each factor of the severity's range."""
    start, stop, step = ZOOM_BLUR[severity - 1]
    zooms = np.arange(start, stop, step)
    x = to_unit(image)
    out = np.zeros_like(x)
    for z in zooms:
        out += clipped_zoom(x, float(z))
    return from_unit((x + out) / np.float32(len(zooms) + 1))


# --- digital -------------------------------------------------------------------------------
def contrast(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Scale each channel's deviation from its mean by c (< 1: lower contrast)."""
    c = np.float32(CONTRAST[severity - 1])
    x = to_unit(image)
    means = x.mean(axis=(0, 1), keepdims=True, dtype=np.float32)
    return from_unit((x - means) * c + means)


def brightness(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Add c to the HSV value channel (hue and saturation kept).

    With hue and saturation fixed, HSV->RGB is linear in V, so this scales each pixel by
    ``clip(V + c, 0, 1) / V`` (a black pixel becomes grey ``c``) — the reference's
    ``rgb2hsv`` / ``hsv2rgb`` round trip without the conversion cost.
    """
    c = np.float32(BRIGHTNESS[severity - 1])
    x = to_unit(image)
    v = x.max(axis=2, keepdims=True)  # (H, W, 1)
    v_new = np.minimum(v + c, np.float32(1.0))
    scale = np.divide(v_new, v, out=np.zeros_like(v), where=v > 0)
    return from_unit(np.where(v > 0, x * scale, v_new))


def jpeg_compression(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """JPEG encode/decode at the severity's quality (libjpeg via OpenCV; the reference used PIL)."""
    q = JPEG_QUALITY[severity - 1]
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode an image of shape {image.shape}")
    return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), dtype=np.uint8)


def pixelate(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Box-downscale by c, then nearest-neighbour upscale to the original size."""
    c = PIXELATE[severity - 1]
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, int(w * c)), max(1, int(h * c))), interpolation=cv2.INTER_AREA)
    # INTER_NEAREST_EXACT samples pixel centres like PIL's NEAREST (INTER_NEAREST is shifted).
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST_EXACT), dtype=np.uint8)


def elastic_transform(image: U8, severity: int, rng: np.random.Generator) -> U8:
    """Smooth random displacement field (imagecorruptions' size-independent version).

    Displacements: uniform in +-0.5% of the height per pixel, Gaussian-smoothed with sigma =
    1% of each side (truncate 3, reflect), times alpha; bilinear resampling with reflection.
    """
    alpha = np.float32(ELASTIC_ALPHA[severity - 1])
    h, w = image.shape[:2]
    sigma = (h * 0.01, w * 0.01)
    max_d = h * 0.005

    def field() -> np.ndarray:
        noise = rng.uniform(-max_d, max_d, size=(h, w)).astype(np.float32)
        return gaussian(noise, sigma, truncate=3.0, border=cv2.BORDER_REFLECT) * alpha

    dx, dy = field(), field()
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = cv2.remap(
        to_unit(image), grid_x + dx, grid_y + dy, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    return from_unit(np.asarray(out, dtype=np.float32))
