"""Turn BGR uint8 frames into the model's input tensor, as declared in :class:`PreprocessConfig`.

Order of operations (the same for every model, so a config describes any of them):

1. **resize** each frame to ``size`` = (W, H): ``stretch`` ignores the aspect ratio; ``letterbox``
   scales by ``r = min(W / w, H / h)`` to ``(int(w * r), int(h * r))`` (floored, at least 1 px, as the
   YOLOX reference code does) and pads with ``pad_value`` in raw pixel units, either ``top_left``
   (image at the origin, padding right and bottom: YOLOX) or ``center`` (padding split evenly,
   the odd pixel going right/bottom);
2. **channel order**: BGR is reversed to RGB when the model wants RGB;
3. **normalise**: ``x = (pixel * scale - mean) / std`` per channel (model channel order), in float32;
4. **layout** NCHW or NHWC, then **dtype** (float32, float16; uint8 keeps raw pixels).

Each frame's geometric mapping is kept as a :class:`Letterbox` so detections in model pixels can be
mapped back to frame pixels. Everything after the per-frame resize is vectorized over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import FrameError
from agent.model.config import PreprocessConfig

__all__ = ["Letterbox", "plan_resize", "preprocess", "preprocess_with_transforms", "resize_frame"]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

_INTERP = {
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "nearest": cv2.INTER_NEAREST,
    "cubic": cv2.INTER_CUBIC,
}


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Geometric map frame pixels -> model input pixels: ``x_model = x_frame * scale_x + pad_x``.

    ``resized_wh`` is the size of the image content inside the model input (the rest is padding);
    ``frame_wh`` the original frame size.
    """

    frame_wh: tuple[int, int]
    resized_wh: tuple[int, int]
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int

    def to_frame(self, boxes_xyxy: F32) -> F32:
        """Map (K, 4) boxes [x1, y1, x2, y2] in model pixels to frame pixels, clipped to the frame."""
        out = np.empty_like(boxes_xyxy, dtype=np.float32)
        w, h = self.frame_wh
        out[:, 0::2] = np.clip((boxes_xyxy[:, 0::2] - self.pad_x) / self.scale_x, 0.0, float(w))
        out[:, 1::2] = np.clip((boxes_xyxy[:, 1::2] - self.pad_y) / self.scale_y, 0.0, float(h))
        return out


def plan_resize(frame_wh: tuple[int, int], cfg: PreprocessConfig) -> Letterbox:
    """The resize/pad geometry for one frame size (pure arithmetic, no pixels)."""
    w, h = frame_wh
    tw, th = cfg.size
    if cfg.resize == "stretch":
        return Letterbox(frame_wh, (tw, th), tw / w, th / h, 0, 0)
    r = min(tw / w, th / h)
    # floor like the YOLOX reference (int(w * r)); the mapping back uses r itself, as it does
    nw, nh = max(1, min(tw, int(w * r))), max(1, min(th, int(h * r)))
    if cfg.pad_position == "top_left":
        px, py = 0, 0
    else:
        px, py = (tw - nw) // 2, (th - nh) // 2
    return Letterbox(frame_wh, (nw, nh), r, r, px, py)


def resize_frame(image: U8, cfg: PreprocessConfig) -> tuple[U8, Letterbox]:
    """Resize (and pad) one BGR uint8 frame to ``cfg.size``; returns (H, W, 3) uint8 and its geometry."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise FrameError(f"model input must be an HxWx3 uint8 BGR array, got shape {shape} dtype {dtype}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise FrameError(f"model input frame is empty: shape {image.shape}")
    geo = plan_resize((w, h), cfg)
    tw, th = cfg.size
    interp = _INTERP[cfg.interpolation]
    if cfg.resize == "stretch":
        resized = image if (w, h) == (tw, th) else cv2.resize(image, (tw, th), interpolation=interp)
        return np.ascontiguousarray(resized), geo
    nw, nh = geo.resized_wh
    content = image if (w, h) == (nw, nh) else cv2.resize(image, (nw, nh), interpolation=interp)
    canvas = np.full((th, tw, 3), cfg.pad_value, dtype=np.uint8)
    canvas[geo.pad_y : geo.pad_y + nh, geo.pad_x : geo.pad_x + nw] = content
    return canvas, geo


def preprocess_with_transforms(
    images: list[U8], cfg: PreprocessConfig
) -> tuple[npt.NDArray[np.generic], list[Letterbox]]:
    """Preprocess a batch; returns the input tensor and each frame's :class:`Letterbox`.

    Tensor shape (N, 3, H, W) for nchw or (N, H, W, 3) for nhwc; dtype per ``cfg.dtype``.
    """
    if len(images) == 0:
        raise FrameError("preprocess needs at least one frame, got an empty batch")
    tw, th = cfg.size
    batch = np.empty((len(images), th, tw, 3), dtype=np.uint8)  # (N, H, W, 3) BGR
    geos: list[Letterbox] = []
    for i, img in enumerate(images):
        batch[i], geo = resize_frame(img, cfg)
        geos.append(geo)
    if cfg.channel_order == "rgb":
        batch = batch[..., ::-1]
    if cfg.dtype == "uint8":
        tensor: npt.NDArray[np.generic] = batch
    else:
        # (x * scale - mean) / std  ==  x * a + b, with a = scale / std, b = -mean / std per channel
        std = np.asarray(cfg.std, dtype=np.float32)
        a = np.float32(cfg.scale) / std
        b = -np.asarray(cfg.mean, dtype=np.float32) / std
        norm = batch.astype(np.float32)  # (N, H, W, 3)
        norm *= a
        norm += b
        tensor = norm
    if cfg.layout == "nchw":
        tensor = tensor.transpose(0, 3, 1, 2)
    if cfg.dtype == "float16":
        tensor = tensor.astype(np.float16)
    return np.ascontiguousarray(tensor), geos


def preprocess(images: list[U8], cfg: PreprocessConfig) -> npt.NDArray[np.generic]:
    """Preprocess a batch of BGR uint8 frames (any sizes) into the model's input tensor."""
    return preprocess_with_transforms(images, cfg)[0]
