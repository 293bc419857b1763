"""Shared helpers of the corruption functions (NumPy/OpenCV ports of the reference helpers).

The reference is Hendrycks & Dietterich's ImageNet-C code as packaged by ``imagecorruptions``
(bethgelab). Where it used scikit-image or SciPy this module uses the OpenCV operation with
the same kernel, border mode and sampling grid, so results agree up to float rounding.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "F32",
    "U8",
    "clipped_zoom",
    "disk_kernel",
    "from_unit",
    "gaussian",
    "motion_blur",
    "next_power_of_2",
    "plasma_fractal",
    "to_unit",
]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def to_unit(image: U8) -> F32:
    """uint8 0..255 -> float32 0..1."""
    return image.astype(np.float32) * np.float32(1.0 / 255.0)


def from_unit(x: npt.NDArray[np.floating]) -> U8:
    """float 0..1 -> uint8, clipping first and truncating like the reference's ``np.uint8(x * 255)``."""
    return np.asarray(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def gaussian(x: F32, sigma_yx: tuple[float, float], truncate: float = 4.0, border: int = cv2.BORDER_REPLICATE) -> F32:
    """``skimage.filters.gaussian`` on a float image (per channel).

    Same kernel radius as SciPy (``int(truncate * sigma + 0.5)``); skimage's default mode
    ``nearest`` is BORDER_REPLICATE, SciPy's ``reflect`` is BORDER_REFLECT.
    """
    sy, sx = sigma_yx
    ky = 2 * int(truncate * sy + 0.5) + 1
    kx = 2 * int(truncate * sx + 0.5) + 1
    out = cv2.GaussianBlur(x, (kx, ky), sigmaX=sx, sigmaY=sy, borderType=border)
    return np.asarray(out, dtype=np.float32).reshape(x.shape)


def disk_kernel(radius: float, alias_blur: float) -> F32:
    """The reference's anti-aliased disk kernel (defocus blur), normalised to sum 1."""
    if radius <= 8:
        coords = np.arange(-8, 8 + 1)
        ksize = (3, 3)
    else:
        r = int(radius)
        coords = np.arange(-r, r + 1)
        ksize = (5, 5)
    xx, yy = np.meshgrid(coords, coords)
    aliased = np.asarray(xx**2 + yy**2 <= radius**2, dtype=np.float32)
    aliased /= aliased.sum()
    return np.asarray(cv2.GaussianBlur(aliased, ksize=ksize, sigmaX=alias_blur), dtype=np.float32)


def clipped_zoom(x: F32, zoom: float) -> F32:
    """Zoom into the centre by ``zoom`` and keep the top-left (H, W) of the result.

    Reference: crop the centre ``ceil(H / zoom)`` x ``ceil(W / zoom)``, ``scipy.ndimage.zoom``
    it (order 1, output size ``round(crop * zoom)``, corner-aligned grid), then ``[:H, :W]``.
    Here one ``warpAffine`` samples exactly those output pixels from the original image.
    """
    h, w = x.shape[:2]
    ch = math.ceil(h / zoom)
    cw = math.ceil(w / zoom)
    top, left = (h - ch) // 2, (w - cw) // 2
    out_h, out_w = round(ch * zoom), round(cw * zoom)
    # scipy's corner-aligned grid: output i samples input i * (n_in - 1) / (n_out - 1).
    sy = (ch - 1) / (out_h - 1) if out_h > 1 else 0.0
    sx = (cw - 1) / (out_w - 1) if out_w > 1 else 0.0
    m = np.array([[sx, 0.0, float(left)], [0.0, sy, float(top)]], dtype=np.float64)
    out = cv2.warpAffine(
        x, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )
    return np.asarray(out, dtype=np.float32).reshape(x.shape)


def _motion_kernel(
    radius: int, sigma: float, angle_deg: float, shape_hw: tuple[int, int]
) -> tuple[F32, tuple[int, int]]:
    """The reference ``_motion_blur`` as one correlation kernel and its anchor (x, y).

    The reference sums ``width = 2 * radius + 1`` copies of the image, copy i shifted by
    (dx_i, dy_i) along the angle with edge replication and weighted by a one-sided Gaussian
    k_i. That is ``filter2D`` with weight k_i at (anchor - dy_i, anchor - dx_i) and
    BORDER_REPLICATE. It stops where a shift would leave the image, as the reference does.
    """
    width = 2 * radius + 1
    k = np.exp(-(np.arange(width, dtype=np.float64) ** 2) / (2.0 * sigma**2))
    k /= k.sum()
    py = width * math.sin(math.radians(angle_deg))
    px = width * math.cos(math.radians(angle_deg))
    hyp = math.hypot(py, px)
    c = width
    kernel = np.zeros((2 * width + 1, 2 * width + 1), dtype=np.float64)
    for i in range(width):
        dy = -math.ceil(i * py / hyp - 0.5)
        dx = -math.ceil(i * px / hyp - 0.5)
        if abs(dy) >= shape_hw[0] or abs(dx) >= shape_hw[1]:
            break  # simulated motion exceeded the image borders
        kernel[c - dy, c - dx] += k[i]
    rows = np.flatnonzero(kernel.any(axis=1))
    cols = np.flatnonzero(kernel.any(axis=0))
    y0, x0 = int(rows[0]), int(cols[0])
    cropped = kernel[y0 : int(rows[-1]) + 1, x0 : int(cols[-1]) + 1].astype(np.float32)
    return cropped, (c - x0, c - y0)


def motion_blur(x: F32, radius: int, sigma: float, angle_deg: float) -> F32:
    """The reference's Gaussian-weighted one-sided motion blur along ``angle_deg`` (per channel)."""
    kernel, anchor = _motion_kernel(radius, sigma, angle_deg, (x.shape[0], x.shape[1]))
    out = cv2.filter2D(x, -1, kernel, anchor=anchor, borderType=cv2.BORDER_REPLICATE)
    return np.asarray(out, dtype=np.float32).reshape(x.shape)


def plasma_fractal(mapsize: int, wibbledecay: float, rng: np.random.Generator) -> F64:
    """Diamond-square height map in [0, 1] of side ``mapsize`` (a power of two), as in the reference."""
    if mapsize < 2 or mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two >= 2, but got {mapsize}")
    maparray = np.zeros((mapsize, mapsize), dtype=np.float64)
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array: F64) -> F64:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        # squares: the middle of each square is the mean of its corners plus noise
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squareaccum)
        # diamonds: the edge midpoints from the two corners and two centres around them
        drgrid = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return np.asarray(maparray / maparray.max(), dtype=np.float64)


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (1 for n = 0)."""
    return 1 if n == 0 else 2 ** (n - 1).bit_length()
