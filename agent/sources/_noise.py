"""Fast, deterministic per-frame sensor noise from a precomputed bank.

Drawing fresh Gaussian noise for every 640x360 frame costs several milliseconds, so
the bank draws it once: a 1-D buffer a little longer than one frame, split into its
positive and negative parts as uint8. Frame ``i`` uses the contiguous window starting
at offset ``o(i)``; consecutive frames get different offsets, so every pixel of
consecutive frames gets an independent sample (frames are never bit-identical), and
applying it is two saturating OpenCV adds (about 0.1 ms each).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["NoiseBank"]

# Offsets are drawn from [0, _SPARE): several rows of slack so the windows differ a lot.
_SPARE_ROWS = 16
# Step between consecutive frames' offsets; a prime, so it cycles through all offsets.
_STEP = 7919


class NoiseBank:
    """Additive zero-mean Gaussian noise of standard deviation ``sigma`` (8-bit units)."""

    def __init__(self, shape_hwc: tuple[int, int, int], sigma: float, seed: int) -> None:
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, but got {sigma}")
        h, w, c = shape_hwc
        self._shape = shape_hwc
        self._n = h * w * c
        self._spare = max(1, _SPARE_ROWS * w * c)
        rng = np.random.default_rng([seed, 0x5E7502])
        noise = np.rint(rng.normal(0.0, sigma, self._n + self._spare)).clip(-255, 255)  # (n + spare,)
        self._pos: npt.NDArray[np.uint8] = np.maximum(noise, 0).astype(np.uint8)
        self._neg: npt.NDArray[np.uint8] = np.maximum(-noise, 0).astype(np.uint8)
        self._base = int(rng.integers(0, self._spare))
        self.sigma = sigma

    def apply(self, image: npt.NDArray[np.uint8], index: int) -> None:
        """Add frame ``index``'s noise to ``image`` in place (saturating at 0 and 255)."""
        if image.shape != self._shape:
            raise ValueError(f"image must have shape {self._shape}, but got {image.shape}")
        off = (self._base + index * _STEP) % self._spare
        pos = self._pos[off : off + self._n].reshape(self._shape)
        neg = self._neg[off : off + self._n].reshape(self._shape)
        cv2.add(image, pos, dst=image)
        cv2.subtract(image, neg, dst=image)
