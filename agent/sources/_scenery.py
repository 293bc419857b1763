"""Static backgrounds of the synthetic camera, drawn once per scene.

Two styles with clearly different layouts and palettes (the ``scene_change`` fault
swaps one for the other): ``street`` (sky, buildings with windows, sidewalk, road,
verge) and ``indoor`` (coloured wall with shelves and posters, wooden floor, vignette).
Every surface except the sky carries a fixed fine-grained texture, because a real
scene has fine detail and the blur statistic (variance of the Laplacian) needs some
to measure. Sizes scale with the frame width, so any resolution looks alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["SceneStyle", "Scenery", "build_scenery"]

SceneStyle = Literal["street", "indoor"]
Image = npt.NDArray[np.uint8]
Color = tuple[int, int, int]
FColor = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class Scenery:
    """A background image and where objects may stand (rows, in pixels)."""

    image: Image  # (H, W, 3) BGR uint8
    floor_top: int  # smallest base row for people and balls
    road: tuple[int, int]  # base rows for cars: [road[0], road[1])


def _jitter(rng: np.random.Generator, color: Color, amount: float) -> Color:
    b, g, r = (int(np.clip(c + rng.normal(0.0, amount), 0, 255)) for c in color)
    return (b, g, r)


def _gradient(h: int, w: int, top: FColor, bottom: FColor) -> npt.NDArray[np.float32]:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]  # (h, 1, 1)
    a = np.array(top, np.float32)[None, None, :]
    b = np.array(bottom, np.float32)[None, None, :]
    return np.broadcast_to(a + (b - a) * t, (h, w, 3)).copy()


def _texture(rng: np.random.Generator, h: int, w: int, sigma: float) -> npt.NDArray[np.float32]:
    """Fine luminance texture (same on all channels) with a slight chroma component."""
    lum = rng.normal(0.0, sigma, (h, w, 1)).astype(np.float32)
    chroma = rng.normal(0.0, sigma * 0.25, (h, w, 3)).astype(np.float32)
    return lum + chroma


def _street(rng: np.random.Generator, w: int, h: int) -> Scenery:
    s = w / 640.0
    horizon = int(h * rng.uniform(0.36, 0.46))
    img = np.empty((h, w, 3), np.float32)
    sky_top = _jitter(rng, (205, 150, 105), 10)
    img[:horizon] = _gradient(horizon, w, sky_top, _jitter(rng, (232, 214, 196), 6))
    # Soft clouds: blurred bright ellipses on the sky only.
    clouds: npt.NDArray[np.float32] = np.zeros((horizon, w), np.float32)
    for _ in range(int(rng.integers(2, 5))):
        c = (int(rng.uniform(0, w)), int(rng.uniform(0.1, 0.6) * horizon))
        axes = (int(rng.uniform(40, 110) * s), int(rng.uniform(8, 22) * s))
        cv2.ellipse(clouds, c, axes, 0.0, 0.0, 360.0, 1.0, -1)
    clouds = cv2.GaussianBlur(clouds, (0, 0), 9.0 * s).astype(np.float32)
    img[:horizon] += clouds[:, :, None] * (np.array((238, 236, 234), np.float32) - img[:horizon]) * 0.6

    # Ground bands, far to near: sidewalk, road, near sidewalk, verge.
    g = h - horizon
    far_walk = horizon + int(0.16 * g)
    road_end = horizon + int(0.66 * g)
    near_walk = horizon + int(0.80 * g)
    img[horizon:far_walk] = _jitter(rng, (160, 165, 168), 6)
    img[far_walk:road_end] = _gradient(road_end - far_walk, w, (88, 88, 92), (72, 72, 76))
    img[road_end:near_walk] = _jitter(rng, (150, 155, 160), 6)
    img[near_walk:] = _jitter(rng, (55, 130, 75), 8)
    # Paving joints on both sidewalks.
    step = max(4, int(18 * s))
    for y0, y1 in ((horizon, far_walk), (road_end, near_walk)):
        for x in range(int(rng.integers(0, step)), w, step):
            cv2.line(img, (x, y0), (x, y1 - 1), (120, 122, 125), 1)
        cv2.line(img, (0, y1 - 1), (w - 1, y1 - 1), (110, 112, 115), max(1, int(2 * s)))
    # Lane markings.
    lane_y = (far_walk + road_end) // 2
    dash, gap = int(34 * s), int(26 * s)
    for x in range(int(rng.integers(-dash, 0)), w, dash + gap):
        half = max(1, int(2 * s))
        cv2.rectangle(img, (x, lane_y - half), (x + dash, lane_y + half), (215, 220, 222), -1)

    # Buildings along the horizon, with a grid of windows (the finest detail of the view).
    x = int(rng.uniform(-40, 0) * s)
    palette: list[Color] = [(80, 90, 150), (150, 170, 190), (120, 120, 125), (90, 110, 130), (170, 150, 140)]
    while x < w:
        bw = int(rng.uniform(0.08, 0.19) * w)
        top = horizon - int(rng.uniform(0.12, 0.34) * h)
        color = _jitter(rng, palette[int(rng.integers(len(palette)))], 12)
        cv2.rectangle(img, (x, max(0, top)), (x + bw, horizon), color, -1)
        edge = (0.6 * color[0], 0.6 * color[1], 0.6 * color[2])
        cv2.rectangle(img, (x, max(0, top)), (x + bw, horizon), edge, max(1, int(s)))
        ww, wh = max(2, int(5 * s)), max(2, int(7 * s))
        for wy in range(top + int(6 * s), horizon - wh - int(4 * s), wh + max(2, int(6 * s))):
            for wx in range(x + int(5 * s), x + bw - ww - int(3 * s), ww + max(2, int(5 * s))):
                lit = rng.random() < 0.25
                wc = (120, 200, 225) if lit else (95, 75, 60)
                cv2.rectangle(img, (wx, wy), (wx + ww, wy + wh), _jitter(rng, wc, 10), -1)
        x += bw + int(rng.uniform(0, 14) * s)

    # Lamp posts and trees on the far sidewalk.
    for _ in range(int(rng.integers(2, 5))):
        px = int(rng.uniform(0, w))
        py = int(rng.uniform(horizon + 2, far_walk))
        top = py - int(rng.uniform(0.15, 0.22) * h)
        cv2.line(img, (px, py), (px, top), (50, 50, 55), max(1, int(2 * s)))
        cv2.circle(img, (px, top), max(2, int(4 * s)), (170, 225, 235), -1)
    for _ in range(int(rng.integers(1, 4))):
        tx = int(rng.uniform(0, w))
        ty = int(rng.uniform(horizon, far_walk))
        cv2.line(img, (tx, ty), (tx, ty - int(0.08 * h)), (40, 60, 80), max(2, int(4 * s)))
        for _ in range(6):
            c = (tx + int(rng.normal(0, 10 * s)), ty - int(0.1 * h) + int(rng.normal(0, 8 * s)))
            cv2.circle(img, c, int(rng.uniform(10, 18) * s), _jitter(rng, (45, 110, 60), 10), -1)

    tex = _texture(rng, h, w, 7.0)
    tex[:horizon] *= 0.2  # sky: almost smooth
    img += tex
    return Scenery(np.clip(img + 0.5, 0, 255).astype(np.uint8), floor_top=far_walk, road=(far_walk + 8, road_end))


def _indoor(rng: np.random.Generator, w: int, h: int) -> Scenery:
    s = w / 640.0
    floor = int(h * rng.uniform(0.55, 0.64))
    walls: list[Color] = [(150, 140, 40), (60, 120, 200), (140, 60, 120), (70, 150, 110)]
    wall = _jitter(rng, walls[int(rng.integers(len(walls)))], 8)
    img = np.empty((h, w, 3), np.float32)
    img[:floor] = _gradient(floor, w, (0.7 * wall[0], 0.7 * wall[1], 0.7 * wall[2]), wall)
    img[floor:] = _gradient(h - floor, w, (40, 78, 120), (30, 62, 100))
    # Floor planks with grain.
    pw = max(6, int(46 * s))
    for x in range(int(rng.integers(0, pw)), w, pw):
        cv2.line(img, (x, floor), (x + int(0.3 * (x - w / 2)), h - 1), (22, 45, 70), max(1, int(2 * s)))
    # Shelves with boxes, and posters.
    for _ in range(int(rng.integers(2, 4))):
        sx = int(rng.uniform(0, 0.8) * w)
        sw = int(rng.uniform(0.15, 0.3) * w)
        for k in range(3):
            y = floor - int((0.12 + 0.14 * k) * h)
            cv2.rectangle(img, (sx, y), (sx + sw, y + max(2, int(4 * s))), (60, 60, 70), -1)
            bx = sx
            while bx < sx + sw - int(10 * s):
                bw = int(rng.uniform(12, 30) * s)
                bh = int(rng.uniform(14, 34) * s)
                cv2.rectangle(img, (bx, y - bh), (bx + bw, y), _jitter(rng, (70, 120, 170), 25), -1)
                cv2.line(img, (bx + bw // 2, y - bh), (bx + bw // 2, y), (150, 190, 210), max(1, int(2 * s)))
                bx += bw + int(2 * s)
    for _ in range(int(rng.integers(1, 3))):
        px, py = int(rng.uniform(0, 0.85) * w), int(rng.uniform(0.05, 0.2) * h)
        pw2, ph = int(0.12 * w), int(0.18 * h)
        cv2.rectangle(img, (px, py), (px + pw2, py + ph), _jitter(rng, (220, 220, 210), 10), -1)
        for k in range(6):
            y = py + int((k + 1) * ph / 7)
            cv2.line(img, (px + 4, y), (px + pw2 - 4, y), _jitter(rng, (40, 40, 160), 40), max(1, int(2 * s)))
    img += _texture(rng, h, w, 8.0)
    # Vignette: indoor light falls off towards the corners.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    img *= (1.0 - 0.25 * r2)[:, :, None]
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return Scenery(image, floor_top=floor + int(0.05 * h), road=(floor + int(0.1 * h), h - 4))


def build_scenery(style: SceneStyle, seed: int, size_wh: tuple[int, int]) -> Scenery:
    """Draw the background of ``style`` for ``seed`` at ``size_wh`` (deterministic)."""
    w, h = size_wh
    rng = np.random.default_rng([seed, 0x5CE4E, 0 if style == "street" else 1])
    if style == "street":
        return _street(rng, w, h)
    return _indoor(rng, w, h)
