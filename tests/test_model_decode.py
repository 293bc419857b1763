"""Output decoding: softmax auto-detection, logits kept, YOLOX grid decoding and class-wise NMS."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.errors import ModelError
from agent.model.config import OutputConfig, PreprocessConfig
from agent.model.decode import (
    classifier_outputs,
    detector_outputs,
    is_probability_rows,
    nms_classwise,
    softmax,
    yolox_decode,
    yolox_grid,
)
from agent.model.preprocess import plan_resize


def _arr(x: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32]:
    """The array of an optional ModelOutput field, failing the test when it is missing."""
    assert x is not None
    return x


def test_logits_get_softmax_and_are_kept() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, -1.0]], np.float32)
    outs = classifier_outputs(logits, OutputConfig(), labels=("a", "b", "c"))
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(_arr(outs[0].probs), e / e.sum(), rtol=1e-6)
    np.testing.assert_array_equal(_arr(outs[0].logits), logits[0])
    assert outs[0].top1 == 2 and outs[0].label == "c"
    assert outs[1].top1 == 0 and outs[1].label == "a"
    assert outs[0].energy == pytest.approx(-np.log(e.sum()), rel=1e-9)


def test_probabilities_are_not_softmaxed_twice() -> None:
    probs = np.array([[0.1, 0.7, 0.2]], np.float32).reshape(1, 3, 1, 1)  # SqueezeNet-like [N, C, 1, 1]
    out = classifier_outputs(probs, OutputConfig())[0]
    np.testing.assert_allclose(_arr(out.probs), [0.1, 0.7, 0.2], rtol=1e-6)
    assert out.logits is None and out.energy is None
    assert out.top1 == 1 and out.confidence == pytest.approx(0.7)
    assert out.label is None  # no labels given


def test_softmax_forced_and_disabled() -> None:
    probs = np.array([[0.25, 0.75]], np.float32)
    forced = classifier_outputs(probs, OutputConfig(softmax="yes"))[0]
    np.testing.assert_allclose(_arr(forced.probs), softmax(probs)[0])
    assert forced.logits is not None
    kept = classifier_outputs(np.array([[2.0, 6.0]], np.float32), OutputConfig(softmax="no"))[0]
    np.testing.assert_allclose(_arr(kept.probs), [0.25, 0.75])  # renormalised
    assert kept.logits is None


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([[0.5, 0.5]], True),
        ([[0.5, 0.5004]], True),  # within 1e-3
        ([[0.5, 0.502]], False),  # sums to 1.002
        ([[1.2, -0.2]], False),  # negative value
        ([[0.0, 1.0], [3.0, 0.0]], False),  # one row off: the batch is logits
    ],
)
def test_probability_detection(rows: list[list[float]], expected: bool) -> None:
    assert is_probability_rows(np.asarray(rows, np.float32)) is expected


def test_float16_probabilities_tolerated() -> None:
    p = np.full((1, 1000), 1e-3, np.float16)  # fp16 rounding: sums to ~1.0002..1.005
    out = classifier_outputs(p, OutputConfig())[0]
    assert out.logits is None
    assert float(_arr(out.probs).sum()) == pytest.approx(1.0, abs=1e-6)


def test_bad_classifier_outputs() -> None:
    with pytest.raises(ModelError, match="NaN"):
        classifier_outputs(np.array([[np.nan, 1.0]], np.float32), OutputConfig())
    with pytest.raises(ModelError, match="shape"):
        classifier_outputs(np.array([1.0, 2.0], np.float32), OutputConfig())


def test_yolox_grid_layout() -> None:
    grid, stride = yolox_grid((64, 32), (8, 16))
    # stride 8: 8x4 cells, stride 16: 4x2 cells; x varies fastest
    assert grid.shape == (32 + 8, 2) and stride.shape == (40, 1)
    np.testing.assert_array_equal(grid[:3], [[0, 0], [1, 0], [2, 0]])
    np.testing.assert_array_equal(grid[8], [0, 1])
    np.testing.assert_array_equal(grid[32], [0, 0])
    assert stride[31, 0] == 8 and stride[32, 0] == 16


def _yolox_raw(input_wh: tuple[int, int], strides: tuple[int, ...], classes: int) -> np.ndarray:
    n = sum((input_wh[0] // s) * (input_wh[1] // s) for s in strides)
    return np.zeros((1, n, 5 + classes), np.float32)


def test_yolox_decode_one_box_by_hand() -> None:
    cfg = OutputConfig(strides=(8, 16), score_threshold=0.3)
    raw = _yolox_raw((64, 32), (8, 16), classes=3)
    # anchor 32 + 1*4 + 2 = stride-16 cell (x=2, y=1); offset (0.5, 0.25), size exp(log 2) * 16 = 32 x 16
    a = 32 + 1 * 4 + 2
    raw[0, a, :5] = [0.5, 0.25, np.log(2.0), 0.0, 0.8]
    raw[0, a, 5:] = [0.1, 0.9, 0.2]
    det = yolox_decode(raw, (64, 32), cfg)[0]
    cx, cy = (2 + 0.5) * 16, (1 + 0.25) * 16
    np.testing.assert_allclose(det, [[cx - 16, cy - 8, cx + 16, cy + 8, 0.72, 1]], rtol=1e-6)


def test_yolox_threshold_and_classwise_nms() -> None:
    cfg = OutputConfig(strides=(8,), score_threshold=0.3, nms_iou=0.45)
    raw = _yolox_raw((32, 32), (8,), classes=2)
    raw[0, :, 4] = 1.0
    # cells 0, 1 and 2 get offsets that put the same 16x16 box at (0, 0) in all three
    raw[0, 0, :4] = [0.0, 0.0, np.log(2.0), np.log(2.0)]
    raw[0, 0, 5:] = [0.9, 0.0]
    raw[0, 1, :4] = [-1.0, 0.0, np.log(2.0), np.log(2.0)]  # same box as cell 0, lower score, same class
    raw[0, 1, 5:] = [0.8, 0.0]
    raw[0, 2, :4] = [-2.0, 0.0, np.log(2.0), np.log(2.0)]  # same box again but another class: kept
    raw[0, 2, 5:] = [0.0, 0.7]
    raw[0, 3, :4] = [0.0, 0.0, 0.0, 0.0]
    raw[0, 3, 5:] = [0.2, 0.1]  # below threshold
    det = yolox_decode(raw, (32, 32), cfg)[0]
    np.testing.assert_allclose(det[:, 4], [0.9, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(det[:, 5], [0, 1])


def test_yolox_sigmoid_applied_to_raw_logits() -> None:
    cfg = OutputConfig(strides=(8,), score_threshold=0.5)
    raw = _yolox_raw((16, 16), (8,), classes=1)
    raw[0, :, 4:] = -10.0
    raw[0, 0, 4:] = [5.0, 5.0]  # sigmoid(5)^2 = 0.9866
    det = yolox_decode(raw, (16, 16), cfg)[0]
    assert det.shape == (1, 6) and det[0, 4] == pytest.approx((1 / (1 + np.exp(-5.0))) ** 2, rel=1e-6)


def test_yolox_anchor_count_mismatch_names_both() -> None:
    raw = np.zeros((1, 100, 85), np.float32)
    with pytest.raises(ModelError, match=r"100 anchors .* gives 3549"):
        yolox_decode(raw, (416, 416), OutputConfig())


def test_detector_outputs_in_frame_pixels() -> None:
    cfg = OutputConfig(strides=(8,), score_threshold=0.3)
    pre = PreprocessConfig(size=(32, 32), resize="letterbox")
    geo = plan_resize((64, 32), pre)  # r = 0.5, content 32x16 at the top
    raw = _yolox_raw((32, 32), (8,), classes=2)
    raw[0, 5, :] = [0.5, 0.5, 0.0, 0.0, 1.0, 0.0, 0.6]  # cell (1, 1): centre (12, 12), 8x8 box
    empty = _yolox_raw((32, 32), (8,), classes=2)
    outs = detector_outputs(np.concatenate([raw, empty]), (32, 32), [geo, geo], cfg, labels=("x", "y"))
    np.testing.assert_allclose(_arr(outs[0].detections), [[16, 16, 32, 32, 0.6, 1]], rtol=1e-6)
    assert outs[0].top1 == 1 and outs[0].label == "y" and outs[0].confidence == pytest.approx(0.6)
    assert outs[1].top1 == -1 and outs[1].confidence == 0.0
    assert outs[1].detections is not None and outs[1].detections.shape == (0, 6)


def test_nms_matches_opencv() -> None:
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 200, (300, 2))
    wh = rng.uniform(5, 60, (300, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    classes = rng.integers(0, 3, 300).astype(np.intp)
    ours = nms_classwise(boxes, scores, classes, 0.45, 1000)
    xywh = np.concatenate([xy, wh], axis=1)
    ref = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), classes.tolist(), 0.0, 0.45)
    assert sorted(ours.tolist()) == sorted(np.asarray(ref).reshape(-1).tolist())
    assert np.all(np.diff(scores[ours]) <= 0)  # ordered by score
