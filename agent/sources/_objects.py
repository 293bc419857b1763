"""Moving objects of the synthetic camera: cars, people and balls.

Each class has its own shape and palette so a small classifier can tell them apart:
cars are wide boxes with a cabin and black wheels (red, blue, silver, white bodies),
people are tall figures with a head and a green, purple or teal shirt, balls are
orange or yellow discs with a white band. Objects are drawn with OpenCV primitives
straight into the frame (a few microseconds each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["BALL_COLORS", "CAR_COLORS", "SHIRT_COLORS", "ObjectPose", "draw_object"]

Image = npt.NDArray[np.uint8]
Color = tuple[int, int, int]

CAR_COLORS: tuple[Color, ...] = ((40, 40, 190), (170, 80, 30), (190, 190, 185), (235, 235, 235), (35, 35, 40))
SHIRT_COLORS: tuple[Color, ...] = ((60, 160, 40), (150, 50, 140), (150, 140, 20))
BALL_COLORS: tuple[Color, ...] = ((20, 130, 245), (30, 210, 240))
_AA = cv2.LINE_AA


@dataclass(frozen=True, slots=True)
class ObjectPose:
    """Where and how to draw one object in one frame (pixels; base = where it touches the ground)."""

    label: str
    cx: float
    base_y: float
    size: float  # characteristic size: car length, person height, ball diameter
    color: Color
    facing_right: bool
    phase: float  # animation phase (walk cycle, ball spin), radians


def _pt(x: float, y: float) -> tuple[int, int]:
    return (round(x), round(y))


def _car(img: Image, p: ObjectPose) -> None:
    length = p.size
    height = 0.32 * length
    x0, x1 = p.cx - length / 2, p.cx + length / 2
    wheel_r = 0.11 * length
    body_bottom = p.base_y - 0.55 * wheel_r
    body_top = body_bottom - 0.5 * height
    d = 1.0 if p.facing_right else -1.0
    # Shadow, body, cabin (slanted towards the direction of travel), windows.
    cv2.ellipse(img, _pt(p.cx, p.base_y), _pt(0.5 * length, 0.05 * length), 0, 0, 360, (30, 30, 32), -1, _AA)
    cv2.rectangle(img, _pt(x0, body_top), _pt(x1, body_bottom), p.color, -1, _AA)
    cabin_top = body_top - 0.5 * height
    rear, front = p.cx - d * 0.32 * length, p.cx + d * 0.18 * length
    cabin = np.array(
        [_pt(rear, body_top), _pt(rear + d * 0.06 * length, cabin_top), _pt(front - d * 0.04 * length, cabin_top),
         _pt(front + d * 0.1 * length, body_top)],
        np.int32,
    )
    cv2.fillPoly(img, [cabin], p.color, _AA)
    mid = (rear + front) / 2
    glass = (200, 170, 120)
    for a, b in (
        (rear + d * 0.04 * length, mid - d * 0.015 * length),
        (mid + d * 0.015 * length, front + d * 0.03 * length),
    ):
        poly = np.array(
            [_pt(a, body_top - 0.04 * height), _pt(a + d * 0.03 * length, cabin_top + 0.08 * height),
             _pt(b - d * 0.01 * length, cabin_top + 0.08 * height), _pt(b, body_top - 0.04 * height)],
            np.int32,
        )
        cv2.fillPoly(img, [poly], glass, _AA)
    # Headlight, tail light, door line, wheels with hubcaps.
    lamp_y = body_top + 0.15 * height
    cv2.circle(img, _pt(p.cx + d * 0.47 * length, lamp_y), max(1, round(0.025 * length)), (200, 245, 250), -1, _AA)
    cv2.circle(img, _pt(p.cx - d * 0.48 * length, lamp_y), max(1, round(0.02 * length)), (30, 30, 210), -1, _AA)
    cv2.line(img, _pt(mid, body_top), _pt(mid, body_bottom), (25, 25, 25), 1, _AA)
    for wx in (p.cx - 0.3 * length, p.cx + 0.3 * length):
        cv2.circle(img, _pt(wx, p.base_y - wheel_r), round(wheel_r), (25, 25, 25), -1, _AA)
        cv2.circle(img, _pt(wx, p.base_y - wheel_r), max(1, round(0.45 * wheel_r)), (170, 170, 170), -1, _AA)


def _person(img: Image, p: ObjectPose) -> None:
    tall = p.size
    head_r = 0.085 * tall
    hip_y = p.base_y - 0.47 * tall
    neck_y = p.base_y - 0.8 * tall
    width = 0.24 * tall
    swing = 0.12 * tall * math.sin(p.phase)
    thick = max(2, round(0.06 * tall))
    cv2.ellipse(img, _pt(p.cx, p.base_y), _pt(0.2 * tall, 0.03 * tall), 0, 0, 360, (30, 30, 32), -1, _AA)
    trousers = (70, 45, 35)
    for sgn in (1.0, -1.0):  # legs swing in opposite phase while walking
        cv2.line(img, _pt(p.cx, hip_y), _pt(p.cx + sgn * swing, p.base_y - 0.02 * tall), trousers, thick, _AA)
        cv2.line(img, _pt(p.cx + 0.3 * width, neck_y + 0.04 * tall),
                 _pt(p.cx - sgn * 0.8 * swing, hip_y + 0.02 * tall), p.color, max(2, thick - 1), _AA)
    cv2.rectangle(img, _pt(p.cx - width / 2, neck_y), _pt(p.cx + width / 2, hip_y), p.color, -1, _AA)
    skin = (120, 160, 215)
    cv2.circle(img, _pt(p.cx, neck_y - head_r), round(head_r), skin, -1, _AA)
    cv2.ellipse(img, _pt(p.cx, neck_y - 1.3 * head_r), _pt(head_r, 0.6 * head_r), 0, 180, 360, (30, 40, 50), -1, _AA)


def _ball(img: Image, p: ObjectPose) -> None:
    r = p.size / 2
    cy = p.base_y - r
    cv2.ellipse(img, _pt(p.cx, p.base_y + 0.5 * r), _pt(0.8 * r, 0.15 * r), 0, 0, 360, (30, 30, 32), -1, _AA)
    cv2.circle(img, _pt(p.cx, cy), round(r), p.color, -1, _AA)
    # A white band that turns with the ball, and a specular highlight.
    ang = math.degrees(p.phase)
    cv2.ellipse(img, _pt(p.cx, cy), _pt(r * 0.95, 0.25 * r), ang, 0, 360, (235, 235, 235), max(1, round(0.12 * r)), _AA)
    cv2.circle(img, _pt(p.cx - 0.35 * r, cy - 0.35 * r), max(1, round(0.18 * r)), (225, 240, 250), -1, _AA)


def draw_object(img: Image, pose: ObjectPose) -> None:
    """Draw ``pose`` into ``img`` in place."""
    if pose.label == "car":
        _car(img, pose)
    elif pose.label == "person":
        _person(img, pose)
    elif pose.label == "ball":
        _ball(img, pose)
    else:
        raise ValueError(f"object label must be 'car', 'person' or 'ball', but got {pose.label!r}")
