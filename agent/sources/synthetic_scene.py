"""The synthetic camera's world: a fixed view with objects passing through it.

``SyntheticScene(seed, size_wh).render(index)`` returns frame ``index`` of a
deterministic video and the class of the object in view (one of ``SCENE_CLASSES``).
Random access is cheap and exact: rendering frame 1000 does not need frames 0..999,
and the same (seed, size, style, index) always gives the same bytes. Other stages use
it two ways: the synthetic source streams it (with faults injected on top), and the
reference-model builder renders many (seed, index) pairs as labelled training images.

The timeline is a sequence of segments of 40..90 frames; each holds exactly one object
(car, person or ball) crossing the view, fully visible, or nothing ("empty"). Every
block of four consecutive segments contains each class once, in a seeded order, so any
16 s of video (400 frames at 25 fps) shows every class. A camera-like finish is applied
per frame: a slow global lighting flicker of about ±3.5 % and Gaussian sensor noise
(sigma 2 in 8-bit units), so consecutive frames are never bit-identical.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from agent.sources._noise import NoiseBank
from agent.sources._objects import BALL_COLORS, CAR_COLORS, SHIRT_COLORS, ObjectPose, draw_object
from agent.sources._scenery import SceneStyle, build_scenery

__all__ = ["SCENE_CLASSES", "SceneStyle", "SyntheticScene"]

SCENE_CLASSES: tuple[str, ...] = ("empty", "car", "person", "ball")
"""Classes of the synthetic scenes; index = class id of the reference model."""

Image = npt.NDArray[np.uint8]

_MIN_SEG, _MAX_SEG = 40, 90  # frames per timeline segment (inclusive bounds)
_FLICKER = ((0.02, 137.0), (0.015, 311.0))  # (amplitude, period in frames) of the lighting flicker


@dataclass(frozen=True, slots=True)
class _Segment:
    start: int
    length: int
    label: str
    x_from: float
    x_to: float
    base_y: float
    size: float
    color: tuple[int, int, int]
    bounce_px: float
    bounce_period: float
    phase_rate: float

    def pose(self, index: int) -> ObjectPose:
        k = index - self.start
        t = k / max(1, self.length - 1)
        base_y = self.base_y
        if self.bounce_px > 0:
            base_y -= self.bounce_px * abs(math.sin(math.pi * k / self.bounce_period))
        return ObjectPose(
            label=self.label,
            cx=self.x_from + (self.x_to - self.x_from) * t,
            base_y=base_y,
            size=self.size,
            color=self.color,
            facing_right=self.x_to >= self.x_from,
            phase=k * self.phase_rate,
        )


class SyntheticScene:
    """A deterministic camera view of ``style`` at ``size_wh`` = (width, height) pixels.

    >>> scene = SyntheticScene(seed=3, size_wh=(160, 96))
    >>> image, label = scene.render(0)
    >>> image.shape, label in SCENE_CLASSES
    ((96, 160, 3), True)
    """

    def __init__(
        self,
        seed: int = 0,
        size_wh: tuple[int, int] = (640, 360),
        *,
        style: SceneStyle = "street",
        noise_sigma: float = 2.0,
    ) -> None:
        w, h = size_wh
        if not (32 <= w <= 8192 and 32 <= h <= 8192):
            raise ValueError(f"size_wh must be between 32x32 and 8192x8192, but got {w}x{h}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, but got {seed}")
        self.seed = seed
        self.size_wh = (w, h)
        self.style: SceneStyle = style
        scenery = build_scenery(style, seed, (w, h))
        self._bg = scenery.image  # (H, W, 3), read-only from here on
        self._bg.flags.writeable = False
        self._floor_top = scenery.floor_top
        self._road = scenery.road
        self._noise = NoiseBank((h, w, 3), noise_sigma, seed)
        rng = np.random.default_rng([seed, 0xF11C])
        self._flicker_phase = rng.uniform(0, 2 * math.pi, len(_FLICKER))
        self._segments: list[_Segment] = []
        self._starts: list[int] = []

    # -- timeline -------------------------------------------------------------------------------------------------

    def _make_segment(self, k: int, start: int) -> _Segment:
        w, h = self.size_wh
        rng = np.random.default_rng([self.seed, 0x5E6, k])
        order = np.random.default_rng([self.seed, 0xB10C, k // 4]).permutation(len(SCENE_CLASSES))
        label = SCENE_CLASSES[int(order[k % len(SCENE_CLASSES)])]
        length = int(rng.integers(_MIN_SEG, _MAX_SEG + 1))
        right = bool(rng.random() < 0.5)
        bounce_px, bounce_period, phase_rate = 0.0, 1.0, 0.0
        if label == "car":
            base_y = rng.uniform(self._road[0], self._road[1])
            scale = 0.75 + 0.5 * (base_y - self._floor_top) / max(1, h - self._floor_top)
            size = min(0.3 * w * scale * rng.uniform(0.9, 1.1), 0.9 * w)
            span = rng.uniform(0.45, 0.9) * (w - size - 4)
            color = CAR_COLORS[int(rng.integers(len(CAR_COLORS)))]
        elif label == "person":
            base_y = rng.uniform(self._floor_top + 0.1 * (h - self._floor_top), h - 2)
            scale = 0.75 + 0.5 * (base_y - self._floor_top) / max(1, h - self._floor_top)
            size = min(0.46 * h * scale * rng.uniform(0.9, 1.1), base_y - 2)
            span = rng.uniform(0.2, 0.45) * (w - 0.3 * size - 4)
            color = SHIRT_COLORS[int(rng.integers(len(SHIRT_COLORS)))]
            phase_rate = rng.uniform(0.25, 0.4)
        else:  # ball or empty (empty keeps the draws aligned but is never drawn)
            base_y = rng.uniform(self._floor_top + 0.2 * (h - self._floor_top), h - 2)
            scale = 0.75 + 0.5 * (base_y - self._floor_top) / max(1, h - self._floor_top)
            size = 0.16 * h * scale * rng.uniform(0.85, 1.15)
            span = rng.uniform(0.35, 0.8) * (w - size - 4)
            color = BALL_COLORS[int(rng.integers(len(BALL_COLORS)))]
            bounce_px = min(rng.uniform(0.08, 0.2) * h, base_y - size - 2)
            bounce_period = rng.uniform(18, 30)
            phase_rate = rng.uniform(0.1, 0.3) * (1 if right else -1)
        half = (size if label != "person" else 0.3 * size) / 2 + 2
        x_from = rng.uniform(half, w - half - span)
        x_to = x_from + span
        if not right:
            x_from, x_to = x_to, x_from
        return _Segment(start, length, label, x_from, x_to, base_y, size, color, bounce_px, bounce_period, phase_rate)

    def _segment(self, index: int) -> _Segment:
        if index < 0:
            raise ValueError(f"frame index must be >= 0, but got {index}")
        while not self._segments or self._segments[-1].start + self._segments[-1].length <= index:
            start = self._segments[-1].start + self._segments[-1].length if self._segments else 0
            self._segments.append(self._make_segment(len(self._segments), start))
            self._starts.append(start)
        return self._segments[bisect.bisect_right(self._starts, index) - 1]

    # -- rendering ------------------------------------------------------------------------------------------------

    def label(self, index: int) -> str:
        """Class of the object in view at frame ``index`` (``"empty"`` when there is none)."""
        return self._segment(index).label

    def draw(self, index: int) -> tuple[Image, str]:
        """Frame ``index`` as the optics see it: background and object, no flicker, no sensor noise."""
        seg = self._segment(index)
        image = self._bg.copy()
        if seg.label != "empty":
            draw_object(image, seg.pose(index))
        return image, seg.label

    def flicker(self, index: int) -> float:
        """Global lighting gain at frame ``index`` (about 1 ± 0.035)."""
        return 1.0 + sum(
            a * math.sin(2 * math.pi * index / period + ph)
            for (a, period), ph in zip(_FLICKER, self._flicker_phase, strict=True)
        )

    def expose(
        self,
        image: Image,
        index: int,
        gains_bgr: tuple[float, float, float] = (1.0, 1.0, 1.0),
        offset: float = 0.0,
    ) -> None:
        """Apply the sensor response in place: ``v * flicker * gain_c + offset``, rounded and clipped.

        One per-channel lookup table, so exposure faults (dark, overexposed, colour
        cast) cost nothing beyond the normal frame.
        """
        f = self.flicker(index)
        v = np.arange(256, dtype=np.float32)[:, None]  # (256, 1)
        lut = np.clip(v * (f * np.asarray(gains_bgr, np.float32))[None, :] + offset + 0.5, 0, 255)  # (256, 3)
        cv2.LUT(image, lut.astype(np.uint8)[None, :, :], dst=image)

    def add_noise(self, image: Image, index: int) -> None:
        """Add frame ``index``'s sensor noise in place."""
        self._noise.apply(image, index)

    def render(self, index: int) -> tuple[Image, str]:
        """Frame ``index`` as the camera delivers it (BGR uint8, H x W x 3) and the class in view."""
        image, label = self.draw(index)
        self.expose(image, index)
        self.add_noise(image, index)
        return image, label
