"""Output decoding: softmax auto-detection, logits kept, YOLOX grid decoding, YOLOv5/v8 rows, class-wise NMS."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.errors import ModelError, ModelOutputError
from agent.model.config import ModelConfig, OutputConfig, PreprocessConfig
from agent.model.decode import (
    classifier_outputs,
    detector_classes,
    detector_outputs,
    end2end_decode,
    is_probability_rows,
    nms_classwise,
    rtdetr_decode,
    softmax,
    xyxy_decode,
    yolo_rows_decode,
    yolox_decode,
    yolox_grid,
)
from agent.model.preprocess import plan_resize, preprocess_with_transforms
from agent.scoring.detector_outputs import summarize_detections


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
    # an output that is unusable for these frames (the frames are BLOCKed, the camera goes on) ...
    with pytest.raises(ModelOutputError, match="NaN"):
        classifier_outputs(np.array([[np.nan, 1.0]], np.float32), OutputConfig())
    with pytest.raises(ModelOutputError, match="sums to 0"):
        classifier_outputs(np.array([[0.0, 0.0]], np.float32), OutputConfig(softmax="no"))
    # ... and one that does not fit the declared decoding at all: a model or config problem
    with pytest.raises(ModelError, match="shape") as info:
        classifier_outputs(np.array([1.0, 2.0], np.float32), OutputConfig())
    assert not isinstance(info.value, ModelOutputError)


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


def test_a_box_that_is_not_finite_is_left_out_not_kept_by_nms() -> None:
    """The best-scored candidate's box regressors overflowed (NaN): NMS kept it as the frame's top
    detection and the detection summary crashed the worker (an out-of-range grid cell). It is left
    out; the other box of the class is kept."""
    cfg = OutputConfig(strides=(8,), score_threshold=0.3, nms_iou=0.45)
    raw = _yolox_raw((32, 32), (8,), classes=1)
    raw[0, 0, :5] = [np.nan, 0.0, np.log(2.0), np.log(2.0), 1.0]  # best score, NaN box
    raw[0, 0, 5] = 0.95
    raw[0, 5, :5] = [0.0, 0.0, np.log(2.0), np.log(2.0), 1.0]  # a box elsewhere, same class
    raw[0, 5, 5] = 0.8
    det = yolox_decode(raw, (32, 32), cfg)[0]
    assert det.shape == (1, 6) and np.isfinite(det).all() and det[0, 4] == pytest.approx(0.8)
    geo = plan_resize((32, 32), PreprocessConfig(size=(32, 32), resize="letterbox"))
    out = detector_outputs(raw, (32, 32), [geo], cfg)[0]
    assert summarize_detections(_arr(out.detections), 32, 32).count == 1
    # the same on rows of the other layouts: xyxy (NMS) and rtdetr (no NMS)
    rows = np.zeros((1, 8, 5), np.float32)
    rows[0, 0], rows[0, 1] = [np.nan, 0, 8, 8, 0.9], [16, 16, 24, 24, 0.7]
    assert xyxy_decode(rows, OutputConfig(decoder="xyxy"))[0][:, 4].tolist() == [pytest.approx(0.7)]
    rows[0, 0], rows[0, 1] = [0.5, np.inf, 0.1, 0.1, 0.9], [0.25, 0.25, 0.1, 0.1, 0.7]
    assert rtdetr_decode(rows, (32, 32), OutputConfig(decoder="rtdetr"))[0][:, 4].tolist() == [pytest.approx(0.7)]


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


def test_yolov5_and_yolov8_rows_by_hand() -> None:
    """One box at centre (20, 12), 16 x 8 input pixels: YOLOv5 row [box, obj, classes] and
    YOLOv8 column [box, classes]; a second candidate below the threshold is dropped."""
    v5 = np.zeros((1, 10, 5 + 3), np.float32)  # 8 empty candidates (score 0) after the two
    v5[0, 0] = [20, 12, 16, 8, 0.8, 0.1, 0.9, 0.2]
    v5[0, 1] = [5, 5, 4, 4, 0.3, 0.5, 0.1, 0.1]  # 0.15 < 0.3
    det = yolo_rows_decode(v5, OutputConfig(decoder="yolov5"))[0]
    np.testing.assert_allclose(det, [[12, 8, 28, 16, 0.72, 1]], rtol=1e-6)
    v8 = np.zeros((1, 4 + 3, 10), np.float32)
    v8[0, :, 0] = [20, 12, 16, 8, 0.1, 0.2, 0.9]
    v8[0, :, 1] = [5, 5, 4, 4, 0.2, 0.1, 0.1]
    det = yolo_rows_decode(v8, OutputConfig(decoder="yolov8"))[0]
    np.testing.assert_allclose(det, [[12, 8, 28, 16, 0.9, 2]], rtol=1e-6)
    assert detector_classes([10, 8], OutputConfig(decoder="yolov5")) == 3
    assert detector_classes([7, 10], OutputConfig(decoder="yolov8")) == 3
    assert detector_classes([3549, 85], OutputConfig()) == 80


def test_yolo_rows_shape_errors_name_the_decoder() -> None:
    with pytest.raises(ModelError, match=r"yolov5 output must be \[batch, boxes, 5 \+ classes\].*yolov8 transposed"):
        yolo_rows_decode(np.zeros((1, 10, 5), np.float32), OutputConfig(decoder="yolov5"))
    with pytest.raises(ModelError, match=r"yolov8 output must be \[batch, 4 \+ classes, boxes\]"):
        yolo_rows_decode(np.zeros((1, 8400), np.float32), OutputConfig(decoder="yolov8"))
    with pytest.raises(ModelError, match=r"looks transposed, check output.decoder \(is it yolov8\?\)"):
        yolo_rows_decode(np.zeros((1, 84, 8400), np.float32), OutputConfig(decoder="yolov5"))
    with pytest.raises(ModelError, match=r"84 candidate boxes of 8400 values.*is it yolov5\?"):
        yolo_rows_decode(np.zeros((1, 8400, 84), np.float32), OutputConfig(decoder="yolov8"))


def test_xyxy_rows_by_hand_and_concat_refused_for_tensorrt() -> None:
    """Corner rows [x1, y1, x2, y2, classes] in pixels: best class as score, class-wise NMS (the
    second box overlaps the first with IoU 0.89, same class: suppressed), threshold."""
    raw = np.zeros((1, 8, 4 + 2), np.float32)
    raw[0, 0] = [4, 4, 12, 12, 0.2, 0.8]
    raw[0, 1] = [4, 4, 12, 13, 0.1, 0.7]
    raw[0, 2] = [20, 20, 30, 30, 0.6, 0.1]
    raw[0, 3] = [0, 0, 2, 2, 0.2, 0.25]  # best 0.25 < 0.3
    det = xyxy_decode(raw, OutputConfig(decoder="xyxy"))[0]
    np.testing.assert_allclose(det, [[4, 4, 12, 12, 0.8, 1], [20, 20, 30, 30, 0.6, 0]], rtol=1e-6)
    assert detector_classes([8400, 84], OutputConfig(decoder="xyxy")) == 80
    with pytest.raises(ValueError, match=r"output.concat \['scores'\] needs runtime onnxruntime"):
        ModelConfig(runtime="tensorrt", kind="detector", output=OutputConfig(concat=("scores",), decoder="xyxy"))
    with pytest.raises(ValueError, match=r"a classifier reads one output"):
        ModelConfig(kind="classifier", output=OutputConfig(concat=("probs",)))


def test_end2end_rows_by_hand() -> None:
    """Final rows [x1, y1, x2, y2, score, class], padded: low scores, negative classes and padding
    are dropped, the rest kept best first without NMS (two overlapping boxes of one class both
    stay: the model chose them), then mapped through the letterbox."""
    raw = np.zeros((1, 8, 6), np.float32)  # 8 rows, the unused ones all zero (score 0)
    raw[0, 0] = [4, 4, 12, 12, 0.5, 2]
    raw[0, 1] = [4, 4, 12, 13, 0.9, 2]  # IoU 0.89 with row 0: kept all the same
    raw[0, 2] = [0, 0, 8, 8, 0.2, 0]  # below 0.3
    raw[0, 3] = [0, 0, 8, 8, 0.95, -1]  # padding some exports mark with class -1
    det = end2end_decode(raw, OutputConfig(decoder="end2end"))[0]
    np.testing.assert_allclose(det, [[4, 4, 12, 13, 0.9, 2], [4, 4, 12, 12, 0.5, 2]])
    assert end2end_decode(raw, OutputConfig(decoder="end2end", max_detections=1))[0].shape == (1, 6)
    geo = plan_resize((64, 32), PreprocessConfig(size=(32, 32), resize="letterbox"))  # r = 0.5
    out = detector_outputs(raw, (32, 32), [geo], OutputConfig(decoder="end2end"), labels=("a", "b", "c"))[0]
    np.testing.assert_allclose(_arr(out.detections)[0], [8, 8, 24, 26, 0.9, 2])
    assert (out.top1, out.label) == (2, "c") and out.confidence == pytest.approx(0.9)
    assert detector_classes([300, 6], OutputConfig(decoder="end2end")) is None  # not in the shape


def test_end2end_shape_errors() -> None:
    with pytest.raises(ModelError, match=r"\[batch, 6, detections\] output is transposed"):
        end2end_decode(np.zeros((1, 6, 300), np.float32), OutputConfig(decoder="end2end"))
    with pytest.raises(ModelError, match=r"got shape \[1, 8400, 84\]; raw YOLO heads need decoder yolov5"):
        end2end_decode(np.zeros((1, 8400, 84), np.float32), OutputConfig(decoder="end2end"))


def test_rtdetr_rows_by_hand() -> None:
    """Queries [cx, cy, w, h] as fractions of a 40 x 20 input, then class scores: the box at
    centre (20, 10), 16 x 8 pixels, class 1 at 0.9; a query under the threshold and one whose
    scores are all low are dropped; logits go through a sigmoid; no NMS (a set prediction)."""
    raw = np.zeros((1, 8, 4 + 3), np.float32)  # 8 queries, 5 of them empty
    raw[0, 0] = [0.5, 0.5, 0.4, 0.4, 0.1, 0.9, 0.2]
    raw[0, 1] = [0.5, 0.5, 0.4, 0.45, 0.6, 0.1, 0.1]  # IoU 0.89 with query 0, another class: kept
    raw[0, 2] = [0.1, 0.1, 0.1, 0.1, 0.2, 0.1, 0.25]  # best 0.25 < 0.3
    det = rtdetr_decode(raw, (40, 20), OutputConfig(decoder="rtdetr"))[0]
    np.testing.assert_allclose(det, [[12, 6, 28, 14, 0.9, 1], [12, 5.5, 28, 14.5, 0.6, 0]], rtol=1e-6)
    logits = raw.copy()
    logits[0, :, 4:] = -20.0  # empty queries: sigmoid 2e-9
    logits[0, :3, 4:] = np.log(raw[0, :3, 4:] / (1 - raw[0, :3, 4:]))  # the same scores before a sigmoid
    np.testing.assert_allclose(rtdetr_decode(logits, (40, 20), OutputConfig(decoder="rtdetr"))[0], det, rtol=1e-5)
    assert detector_classes([300, 84], OutputConfig(decoder="rtdetr")) == 80
    with pytest.raises(ModelError, match=r"looks transposed \(\[batch, 4 \+ classes, boxes\] is decoder yolov8\)"):
        rtdetr_decode(np.zeros((1, 84, 8400), np.float32), (640, 640), OutputConfig(decoder="rtdetr"))
    with pytest.raises(ModelError, match=r"rtdetr output must be \[batch, queries, 4 \+ classes\]"):
        rtdetr_decode(np.zeros((1, 300, 4), np.float32), (640, 640), OutputConfig(decoder="rtdetr"))


def _vtest_frames(test_data: Path, n: int) -> list[npt.NDArray[np.uint8]]:
    """The first ``n`` frames of opencv_vtest.avi (people walking: detections in every frame)."""
    cap = cv2.VideoCapture(str(test_data / "videos" / "opencv_vtest.avi"))
    try:
        frames = [np.asarray(cap.read()[1], np.uint8) for _ in range(n)]
    finally:
        cap.release()
    return frames


def test_yolov5_and_yolov8_layouts_decode_yolox_nano_alike(test_data: Path) -> None:
    """Real detections: YOLOX-nano's raw output on vtest frames, re-expressed as a YOLOv5 export
    (grid applied, [cx, cy, w, h, obj, classes] rows) and as a YOLOv8 one (columns, score =
    obj x cls), gives the same boxes through each decoder."""
    import onnxruntime as ort  # noqa: PLC0415

    pre = PreprocessConfig(size=(416, 416), resize="letterbox", pad_value=114)
    frames = _vtest_frames(test_data, 4)
    tensor, geos = preprocess_with_transforms(frames, pre)
    model = test_data / "models" / "yolox_nano_coco.onnx"
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    raw = np.concatenate([session.run(None, {session.get_inputs()[0].name: t[None]})[0] for t in tensor])
    grid, stride = yolox_grid((416, 416), (8, 16, 32))
    box = np.concatenate(((raw[..., :2] + grid) * stride, np.exp(raw[..., 2:4]) * stride), axis=2)
    v5 = np.concatenate((box, raw[..., 4:]), axis=2)
    v8 = np.concatenate((box, raw[..., 4:5] * raw[..., 5:]), axis=2).transpose(0, 2, 1)
    ref = detector_outputs(raw, (416, 416), geos, OutputConfig())
    assert sum(_arr(o.detections).shape[0] for o in ref) >= 12  # people in every frame
    for layout, decoder in ((v5, "yolov5"), (v8, "yolov8")):
        outs = detector_outputs(layout, (416, 416), geos, OutputConfig(decoder=decoder))
        for a, b in zip(ref, outs, strict=True):
            np.testing.assert_allclose(_arr(b.detections), _arr(a.detections), rtol=1e-4, atol=1e-3)


def _yolo_export(yolox: Path, out: Path, layout: str) -> Path:
    """YOLOX-nano with its grid decoding appended as ONNX nodes, giving the output(s) of another
    export: ``yolov5`` [1, A, 5 + 80] rows; ``yolov8`` [1, 4 + 80, A] columns (score = obj x cls);
    ``xyxy`` (YOLO-NAS) boxes [1, A, 4] as corners and scores [1, A, 80], two outputs; ``end2end``
    [1, 300, 6] rows [x1, y1, x2, y2, score, class]; ``rtdetr`` [1, 300, 4 + 80] rows of normalised
    [cx, cy, w, h] and class scores; ``rfdetr`` the same boxes and class *logits* as two outputs.
    The last three hold the 300 best candidates (no NMS), as NMS-free heads give them."""
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    model = onnx.load(str(yolox))
    graph = model.graph
    grid, stride = yolox_grid((416, 416), (8, 16, 32))
    consts: dict[str, np.ndarray] = {
        "grid": grid[None], "stride": stride[None], "half": np.array([0.5], np.float32),
        "side": np.array([416.0], np.float32), "one": np.array([1.0], np.float32),
        "k": np.array([300], np.int64), "flat": np.array([1, 3549], np.int64), "picks": np.array([300], np.int64),
        "axis": np.array([2], np.int64),
        **{f"{name}_{k}": np.array(v, np.int64) for name, (lo, hi) in
           {"xy": (0, 2), "wh": (2, 4), "obj": (4, 5), "cls": (5, 85), "box": (0, 4), "cs": (4, 84)}.items()
           for k, v in (("lo", [lo]), ("hi", [hi]))},
    }
    node = helper.make_node
    nodes = [node("Slice", ["output", f"{n}_lo", f"{n}_hi", "axis"], [n]) for n in ("xy", "wh", "obj", "cls")]
    nodes += [node("Add", ["xy", "grid"], ["xy_g"]), node("Mul", ["xy_g", "stride"], ["cxy"]),
              node("Exp", ["wh"], ["wh_e"]), node("Mul", ["wh_e", "stride"], ["wh_px"]),
              node("Mul", ["obj", "cls"], ["scores"]), node("Mul", ["wh_px", "half"], ["half_wh"]),
              node("Sub", ["cxy", "half_wh"], ["xy1"]), node("Add", ["cxy", "half_wh"], ["xy2"])]
    outputs: dict[str, list[int]] = {}
    if layout == "yolov5":
        nodes.append(node("Concat", ["cxy", "wh_px", "obj", "cls"], ["decoded"], axis=2))
        outputs["decoded"] = [1, 3549, 85]
    elif layout == "yolov8":
        nodes += [node("Concat", ["cxy", "wh_px", "scores"], ["rows"], axis=2),
                  node("Transpose", ["rows"], ["decoded"], perm=[0, 2, 1])]
        outputs["decoded"] = [1, 84, 3549]
    elif layout == "xyxy":
        nodes.append(node("Concat", ["xy1", "xy2"], ["decoded"], axis=2))
        outputs.update(decoded=[1, 3549, 4], scores=[1, 3549, 80])
    else:  # the 300 best candidates by best obj x cls
        nodes += [node("ReduceMax", ["scores"], ["score"], axes=[2], keepdims=1),
                  node("Reshape", ["score", "flat"], ["score_flat"]),
                  node("TopK", ["score_flat", "k"], ["top_v", "top_i"], axis=1),
                  node("Reshape", ["top_i", "picks"], ["top_flat"])]
        if layout == "end2end":
            nodes += [node("ArgMax", ["scores"], ["cls_i"], axis=2, keepdims=1),
                      node("Cast", ["cls_i"], ["cls_f"], to=TensorProto.FLOAT),
                      node("Concat", ["xy1", "xy2", "score", "cls_f"], ["rows"], axis=2),
                      node("Gather", ["rows", "top_flat"], ["decoded"], axis=1)]
            outputs["decoded"] = [1, 300, 6]
        else:
            nodes += [node("Div", ["cxy", "side"], ["cxy_n"]), node("Div", ["wh_px", "side"], ["wh_n"]),
                      node("Concat", ["cxy_n", "wh_n", "scores"], ["rows"], axis=2)]
            if layout == "rtdetr":
                nodes.append(node("Gather", ["rows", "top_flat"], ["decoded"], axis=1))
                outputs["decoded"] = [1, 300, 84]
            else:  # rfdetr: boxes, then the class probabilities turned back into logits
                nodes += [node("Gather", ["rows", "top_flat"], ["picked"], axis=1),
                          node("Slice", ["picked", "box_lo", "box_hi", "axis"], ["decoded"]),
                          node("Slice", ["picked", "cs_lo", "cs_hi", "axis"], ["probs"]),
                          node("Sub", ["one", "probs"], ["one_minus"]), node("Div", ["probs", "one_minus"], ["odds"]),
                          node("Log", ["odds"], ["logits"])]
                outputs.update(decoded=[1, 300, 4], logits=[1, 300, 80])
    used = {i for n in nodes for i in n.input}
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items() if k in used)
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in outputs.items())
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize(
    ("layout", "output"),
    [
        ("yolov5", OutputConfig(decoder="yolov5")),
        ("yolov8", OutputConfig(decoder="yolov8")),
        ("xyxy", OutputConfig(name="decoded", concat=("scores",), decoder="xyxy")),
        ("end2end", OutputConfig(decoder="end2end")),
        ("rtdetr", OutputConfig(decoder="rtdetr")),
        ("rfdetr", OutputConfig(name="decoded", concat=("logits",), decoder="rtdetr")),
    ],
)
def test_every_decoder_runs_an_exported_model_end_to_end(
    test_data: Path, tmp_path: Path, layout: str, output: OutputConfig
) -> None:
    """A real ONNX file in each layout through OnnxRunner (class count from the output shapes
    checked against the 80 COCO labels, where the shapes hold it; boxes and scores in two
    outputs joined by output.concat) gives YOLOX-nano's own detections; the end-to-end and
    DETR-style exports have no NMS in their graph, nor do their decoders, so they are compared
    with YOLOX-nano decoded without NMS."""
    from agent.model.onnx_runner import OnnxRunner  # noqa: PLC0415

    yolox = test_data / "models" / "yolox_nano_coco.onnx"
    pre = PreprocessConfig(size=(416, 416), resize="letterbox", pad_value=114)
    labels = test_data / "models" / "coco80.names"
    no_nms = output.decoder in ("end2end", "rtdetr")
    ref = OnnxRunner(ModelConfig(path=yolox, kind="detector", providers=["cpu"], preprocess=pre, labels=labels,
                                 output=OutputConfig(nms_iou=1.0 if no_nms else 0.45)))
    path = _yolo_export(yolox, tmp_path / f"{layout}.onnx", layout)
    runner = OnnxRunner(ModelConfig(path=path, kind="detector", providers=["cpu"], preprocess=pre, labels=labels,
                                    output=output))
    frames = _vtest_frames(test_data, 3)
    for a, b in zip(ref.infer(frames), runner.infer(frames), strict=True):
        assert _arr(a.detections).shape[0] >= 3 and a.label == b.label == "person"
        np.testing.assert_allclose(_arr(b.detections), _arr(a.detections), rtol=1e-4, atol=1e-2)


def test_concat_names_missing_and_mismatched_outputs(test_data: Path, tmp_path: Path) -> None:
    from agent.model.onnx_runner import OnnxRunner  # noqa: PLC0415

    path = _yolo_export(test_data / "models" / "yolox_nano_coco.onnx", tmp_path / "xyxy.onnx", "xyxy")
    pre = PreprocessConfig(size=(416, 416), resize="letterbox", pad_value=114)
    with pytest.raises(ModelError, match=r"no output 'nope' \(output.concat\); its outputs are \['decoded', 'sc"):
        OnnxRunner(ModelConfig(path=path, kind="detector", providers=["cpu"], preprocess=pre,
                               output=OutputConfig(name="decoded", concat=("nope",), decoder="xyxy")))
    with pytest.raises(ModelError, match=r"list the second in output.concat"):  # scores forgotten
        OnnxRunner(ModelConfig(path=path, kind="detector", providers=["cpu"], preprocess=pre,
                               output=OutputConfig(name="decoded", decoder="xyxy"))).infer(_vtest_frames(test_data, 1))
