"""Preprocessing: letterbox geometry, layouts, dtypes, channel order and normalisation, by hand."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from agent.errors import FrameError
from agent.model.config import PreprocessConfig
from agent.model.preprocess import Letterbox, plan_resize, preprocess, preprocess_with_transforms


def _solid(h: int, w: int, bgr: tuple[int, int, int]) -> np.ndarray:
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = bgr
    return img


@pytest.mark.parametrize(
    ("frame_wh", "size", "position", "resized", "pad"),
    [
        # wide frame into a square: width fills, height = floor(576 * 416/768) = 312, pad below
        ((768, 576), (416, 416), "top_left", (416, 312), (0, 0)),
        # same, centred: (416 - 312) // 2 = 52 rows above
        ((768, 576), (416, 416), "center", (416, 312), (0, 52)),
        # tall frame: height fills, width = floor(100 * 50/200) = 25; centred: (50 - 25) // 2 = 12
        ((100, 200), (50, 50), "center", (25, 50), (12, 0)),
        # upscaling works too: r = min(64/10, 32/10) = 3.2 -> 32x32 content
        ((10, 10), (64, 32), "top_left", (32, 32), (0, 0)),
        # extreme aspect: content at least 1 px
        ((1000, 1), (10, 10), "top_left", (10, 1), (0, 0)),
    ],
)
def test_letterbox_geometry(
    frame_wh: tuple[int, int],
    size: tuple[int, int],
    position: str,
    resized: tuple[int, int],
    pad: tuple[int, int],
) -> None:
    cfg = PreprocessConfig(size=size, resize="letterbox", pad_position=position)
    geo = plan_resize(frame_wh, cfg)
    assert geo.resized_wh == resized
    assert (geo.pad_x, geo.pad_y) == pad
    r = min(size[0] / frame_wh[0], size[1] / frame_wh[1])
    assert geo.scale_x == geo.scale_y == pytest.approx(r)


def test_letterbox_pixels_and_pad_value() -> None:
    img = _solid(20, 40, (10, 20, 30))  # 40x20 -> 8x4 content in a 8x8 input
    cfg = PreprocessConfig(size=(8, 8), resize="letterbox", pad_value=114, pad_position="center", layout="nhwc")
    x = preprocess([img], cfg)
    assert x.shape == (1, 8, 8, 3) and x.dtype == np.float32
    assert np.all(x[0, 2:6] == np.array([10, 20, 30], np.float32))  # content rows 2..5
    assert np.all(x[0, :2] == 114) and np.all(x[0, 6:] == 114)  # padding rows above and below
    cfg_tl = cfg.model_copy(update={"pad_position": "top_left"})
    y = preprocess([img], cfg_tl)
    assert np.all(y[0, :4] == np.array([10, 20, 30], np.float32)) and np.all(y[0, 4:] == 114)


def test_letterbox_maps_boxes_back_to_frame() -> None:
    cfg = PreprocessConfig(size=(416, 416), resize="letterbox", pad_position="center")
    geo = plan_resize((768, 576), cfg)
    r = 416 / 768
    frame_box = np.array([[100.0, 50.0, 300.0, 500.0]], np.float32)
    model_box = frame_box * r + np.array([geo.pad_x, geo.pad_y, geo.pad_x, geo.pad_y], np.float32)
    np.testing.assert_allclose(geo.to_frame(model_box), frame_box, rtol=1e-5)
    # boxes reaching into the padding are clipped to the frame
    clipped = geo.to_frame(np.array([[-20.0, 0.0, 430.0, 416.0]], np.float32))
    np.testing.assert_allclose(clipped, [[0.0, 0.0, 768.0, 576.0]])


def test_stretch_geometry() -> None:
    geo = plan_resize((640, 360), PreprocessConfig(size=(96, 64)))
    assert geo == Letterbox((640, 360), (96, 64), 96 / 640, 64 / 360, 0, 0)


def test_layout_channel_order_and_normalisation_by_hand() -> None:
    img = _solid(4, 6, (10, 20, 30))  # B=10, G=20, R=30
    cfg = PreprocessConfig(
        size=(6, 4), channel_order="rgb", scale=0.5, mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 8.0), layout="nchw"
    )
    x = preprocess([img, img], cfg)
    assert x.shape == (2, 3, 4, 6) and x.dtype == np.float32
    # model channel order RGB: R=30 -> (15 - 1)/2 = 7; G=20 -> (10 - 2)/4 = 2; B=10 -> (5 - 3)/8 = 0.25
    for c, want in enumerate((7.0, 2.0, 0.25)):
        assert np.all(x[:, c] == np.float32(want))
    xh = preprocess([img], cfg.model_copy(update={"layout": "nhwc"}))
    assert xh.shape == (1, 4, 6, 3)
    np.testing.assert_array_equal(xh[0, 0, 0], np.array([7.0, 2.0, 0.25], np.float32))


def test_caffe_preprocessing_is_exact() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    cfg = PreprocessConfig(size=(224, 224), mean=(104.0, 117.0, 123.0))
    x = preprocess([img], cfg)
    want = img.astype(np.float32) - np.array([104, 117, 123], np.float32)  # BGR, 0..255, no std
    np.testing.assert_array_equal(x[0], want.transpose(2, 0, 1))


def test_float16_and_uint8_dtypes() -> None:
    img = _solid(8, 8, (255, 0, 128))
    x16 = preprocess([img], PreprocessConfig(size=(8, 8), dtype="float16", scale=1 / 255))
    assert x16.dtype == np.float16 and x16.flags.c_contiguous
    np.testing.assert_allclose(x16[0, :, 0, 0].astype(np.float32), [1.0, 0.0, 128 / 255], atol=1e-3)
    xu8 = preprocess([img], PreprocessConfig(size=(4, 4), dtype="uint8", layout="nhwc", channel_order="rgb"))
    assert xu8.dtype == np.uint8
    np.testing.assert_array_equal(xu8[0, 0, 0], [128, 0, 255])


def test_uint8_with_normalisation_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="uint8 feeds raw pixels"):
        PreprocessConfig(dtype="uint8", scale=1 / 255)


def test_mixed_frame_sizes_in_one_batch() -> None:
    cfg = PreprocessConfig(size=(32, 32), resize="letterbox")
    x, geos = preprocess_with_transforms([_solid(10, 40, (1, 2, 3)), _solid(40, 10, (4, 5, 6))], cfg)
    assert x.shape == (2, 3, 32, 32)
    assert geos[0].resized_wh == (32, 8) and geos[1].resized_wh == (8, 32)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.uint8),  # grey, no channels
        np.zeros((4, 4, 3), np.float32),  # wrong dtype
        np.zeros((0, 4, 3), np.uint8),  # empty
        np.zeros((4, 4, 4), np.uint8),  # BGRA
    ],
)
def test_bad_frames_raise_frame_error(bad: np.ndarray) -> None:
    with pytest.raises(FrameError):
        preprocess([bad], PreprocessConfig(size=(8, 8)))


def test_empty_batch_raises() -> None:
    with pytest.raises(FrameError, match="empty batch"):
        preprocess([], PreprocessConfig())
