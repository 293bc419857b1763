"""Camera faults rendered on top of a ``SyntheticScene``.

Each fault imitates a real failure at a clearly visible but plausible severity, and
is applied at the stage of the imaging chain where it happens in a camera:

    optics (scene, covered lens, defocus)  ->  sensor response (flicker x gain, cast)
    ->  stray light (glare)  ->  sensor noise  ->  transport (frozen frame)

| fault          | what it does (640x360 numbers)                                              |
|----------------|-----------------------------------------------------------------------------|
| `blur`         | defocus: Gaussian blur, sigma 3 px (scaled with width), before the sensor    |
| `dark`         | exposure gain x0.15 (luma ~120 -> ~18), noise unchanged                      |
| `overexposed`  | gain x1.9 + 45, clipped at 255 (sky and bright walls saturate)               |
| `glare`        | a saturated flare disc with halo and horizontal streak, drifting slowly      |
| `noise`        | Gaussian sensor noise sigma 18 instead of 2                                  |
| `frozen`       | the last frame before the freeze repeated bit-identically                    |
| `covered`      | near-uniform dark brown frame (luma ~35) with smooth shading and some noise |
| `sticker`      | a dark grey patch with soft edges over 6 % of the view (a sticker or dirt on the lens) |
| `fog`          | a veil of scattered light: 45 % of each pixel is light grey airlight (a fogged lens, morning fog) |
| `color_cast`   | channel gains B x0.6, G x0.95, R x1.45 (white-balance failure)               |
| `scene_change` | the camera now sees another place: the other scene style, another seed      |
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from agent.sources._noise import NoiseBank
from agent.sources.synthetic_scene import SceneStyle, SyntheticScene
from agent.sources.synthetic_schedule import FaultSchedule

__all__ = ["SyntheticCamera"]

Image = npt.NDArray[np.uint8]

_BLUR_SIGMA_640 = 3.0
_DARK_GAIN = 0.15
_OVER_GAIN, _OVER_OFFSET = 1.9, 45.0
_CAST_GAINS_BGR = (0.6, 0.95, 1.45)
_NOISE_SIGMA = 18.0
_COVER_BGR = (22.0, 32.0, 45.0)
_FOG_SHARE, _FOG_AIRLIGHT_BGR = 0.45, (212.0, 208.0, 204.0)
_SCENE_CHANGE_SEED = 7777
#: The sticker: (x0, x1, y0, y1) as fractions of the frame (over the buildings), colour, edge blur / width.
_STICKER_BOX, _STICKER_BGR, _STICKER_SOFT = (0.62, 0.86, 0.16, 0.42), (48.0, 44.0, 40.0), 0.006


def _flare(w: int, h: int) -> Image:
    """A (2h, 2w, 3) additive flare centred at (w, h): saturated core, warm halo, streak."""
    yy, xx = np.mgrid[0 : 2 * h, 0 : 2 * w].astype(np.float32)
    r = np.hypot(xx - w, yy - h)  # (2h, 2w) distance to the centre, px
    core = 0.09 * w
    halo = 230.0 * np.exp(-np.square(np.maximum(r - core, 0.0)) / (2 * (0.12 * w) ** 2))
    streak = 120.0 * np.exp(-np.square(yy - h) / (2 * (0.012 * h + 1) ** 2)) * np.exp(-np.abs(xx - w) / (0.6 * w))
    amp = np.where(r <= core, 255.0, halo + streak)
    tint = np.array((0.88, 0.96, 1.0), np.float32)  # slightly warm, like sunlight
    out: Image = np.clip(amp[:, :, None] * tint + 0.5, 0, 255).astype(np.uint8)
    return out


def _cover(w: int, h: int, seed: int) -> Image:
    """A lens covered by a hand or cloth: dark brown, smooth shading, a few soft blotches."""
    rng = np.random.default_rng([seed, 0xC0FE])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 1.0 - 0.35 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)  # (h, w)
    blot: npt.NDArray[np.float32] = np.zeros((h, w), np.float32)
    for _ in range(4):
        c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        cv2.circle(blot, c, int(rng.uniform(0.1, 0.3) * w), float(rng.uniform(-1, 1)), -1)
    blot = cv2.GaussianBlur(blot, (0, 0), 0.08 * w).astype(np.float32)
    img = np.array(_COVER_BGR, np.float32)[None, None, :] * (shade + 0.15 * blot)[:, :, None]
    out: Image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return out


def _sticker(w: int, h: int) -> npt.NDArray[np.float32]:
    """(h, w, 1) coverage of an out-of-focus sticker on the lens: 1 inside, soft edges."""
    x0, x1, y0, y1 = _STICKER_BOX
    mask = np.zeros((h, w), np.float32)
    mask[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)] = 1.0
    return np.asarray(cv2.GaussianBlur(mask, (0, 0), _STICKER_SOFT * w), dtype=np.float32)[:, :, None]


class SyntheticCamera:
    """Frames of ``scene`` with the faults of ``schedule`` injected; random access by index."""

    def __init__(self, scene: SyntheticScene, schedule: FaultSchedule) -> None:
        self.scene = scene
        self.schedule = schedule
        self._alt: SyntheticScene | None = None
        self._strong_noise: NoiseBank | None = None
        self._flare: Image | None = None
        self._cover: Image | None = None
        self._airlight: Image | None = None
        self._sticker: npt.NDArray[np.float32] | None = None
        self._last: tuple[int, Image, str] | None = None  # last delivered frame, for freezes

    def _alt_scene(self) -> SyntheticScene:
        if self._alt is None:
            other: SceneStyle = "indoor" if self.scene.style == "street" else "street"
            self._alt = SyntheticScene(self.scene.seed + _SCENE_CHANGE_SEED, self.scene.size_wh, style=other)
        return self._alt

    def _glare(self, image: Image, index: int) -> None:
        w, h = self.scene.size_wh
        if self._flare is None:
            self._flare = _flare(w, h)
        # The flare drifts slowly over the upper half of the view (sun moving behind the camera).
        cx = int(w * (0.5 + 0.25 * math.sin(index / 40.0)))
        cy = int(h * (0.3 + 0.08 * math.sin(index / 23.0)))
        window = np.ascontiguousarray(self._flare[h - cy : 2 * h - cy, w - cx : 2 * w - cx])
        cv2.add(image, window, dst=image)

    def _faulty(self, index: int, fault: str | None) -> tuple[Image, str]:
        scene = self.scene
        w, h = scene.size_wh
        if fault == "scene_change":
            return self._alt_scene().render(index)
        if fault == "covered":
            if self._cover is None:
                self._cover = _cover(w, h, scene.seed)
            image, label = self._cover.copy(), scene.label(index)
        else:
            image, label = scene.draw(index)
        if fault == "sticker":
            if self._sticker is None:
                self._sticker = _sticker(w, h)
            patch = np.array(_STICKER_BGR, np.float32)
            image[:] = np.clip(image * (1.0 - self._sticker) + patch * self._sticker + 0.5, 0, 255).astype(np.uint8)
        if fault == "blur":
            sigma = _BLUR_SIGMA_640 * w / 640.0
            cv2.GaussianBlur(image, (0, 0), sigma, dst=image)
        elif fault == "fog":
            if self._airlight is None:
                self._airlight = np.empty_like(image)
                self._airlight[:] = _FOG_AIRLIGHT_BGR
            cv2.addWeighted(image, 1.0 - _FOG_SHARE, self._airlight, _FOG_SHARE, 0.0, dst=image)
        if fault == "dark":
            scene.expose(image, index, (_DARK_GAIN,) * 3)
        elif fault == "overexposed":
            scene.expose(image, index, (_OVER_GAIN,) * 3, _OVER_OFFSET)
        elif fault == "color_cast":
            scene.expose(image, index, _CAST_GAINS_BGR)
        else:
            scene.expose(image, index)
        if fault == "glare":
            self._glare(image, index)
        if fault == "noise":
            if self._strong_noise is None:
                self._strong_noise = NoiseBank((h, w, 3), _NOISE_SIGMA, scene.seed + 1)
            self._strong_noise.apply(image, index)
        else:
            scene.add_noise(image, index)
        return image, label

    def _frame(self, index: int) -> tuple[Image, str, str | None]:
        window = self.schedule.window_at(index)
        fault = window.fault if window is not None else None
        if window is not None and fault == "frozen":
            # A frozen camera keeps sending the last frame it delivered before the freeze.
            src = window.start - 1
            if src < 0:
                image, label = self._faulty(0, None)
            elif self._last is not None and self._last[0] == src:
                image, label = self._last[1], self._last[2]
            else:
                image, label, _ = self._frame(src)
            return image, label, fault
        image, label = self._faulty(index, fault)
        return image, label, fault

    def render(self, index: int) -> tuple[Image, str, str | None]:
        """Frame ``index``: (BGR image, label of the scene content, injected fault or None).

        The image is a fresh array the caller may keep or modify.
        """
        if index < 0:
            raise ValueError(f"frame index must be >= 0, but got {index}")
        image, label, fault = self._frame(index)
        if fault != "frozen":
            self._last = (index, image, label)
        return image.copy(), label, fault
