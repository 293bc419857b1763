"""Raw model outputs -> :class:`ModelOutput`: classifier probabilities and YOLOX detections.

Classifiers: the output is flattened per frame, so shapes like [N, 1000, 1, 1] (SqueezeNet) work.
Softmax is applied only when the outputs are not already probabilities (``softmax: auto``: every
value >= 0 and each row sums to 1 within 1e-3, 1e-2 for float16 outputs); then the raw outputs are
kept as ``logits`` (energy scores need them). Outputs that already are probabilities are
renormalised to sum exactly to 1 and ``logits`` is None.

YOLOX: raw output [N, A, 5 + C] with A = sum over strides s of (W/s)(H/s) anchors in stride order,
each row [cx, cy, log w, log h, objectness, class probabilities...] (objectness/classes already
through a sigmoid in the exported models; raw logits are detected and passed through a sigmoid).
Centre = (offset + grid cell) * stride, size = exp(log size) * stride, score = obj * cls, then a
threshold, class-wise NMS, and the map back to frame pixels through the letterbox.

Decoded-row detectors (``decoder: yolov5`` / ``yolov8``): the export already applied the grid,
so each candidate is [cx, cy, w, h] in model-input pixels followed by scores. YOLOv5/v7:
(B, N, 5 + C) rows [box, objectness, classes], score = obj * cls. YOLOv8/YOLO11: (B, 4 + C, N),
one *column* per candidate [box, classes] (no objectness), score = cls. Scores outside [0, 1]
are logits and go through a sigmoid, as for YOLOX; the threshold, NMS and letterbox map are the same.

End-to-end detectors (``decoder: end2end``: YOLOv10, YOLO26, Ultralytics exports with
``nms=True``): (B, D, 6) final rows [x1, y1, x2, y2, score, class] in model-input pixels, padded
to a fixed D (zero or negative-class rows). The model already chose its detections, so no NMS:
rows under the threshold or with a negative class are dropped, the rest kept best first (at most
``max_detections``) and mapped through the letterbox. The class count is not in the shape.

Corner rows (``decoder: xyxy``, e.g. YOLO-NAS): (B, N, 4 + C), [x1, y1, x2, y2] in model-input
pixels then the class scores; score = best class, then threshold, class-wise NMS, letterbox map.
Detectors whose boxes and scores are separate outputs are read with ``output.concat``: the runner
appends those outputs to the first along the last axis, which gives these rows.

DETR-style detectors (``decoder: rtdetr``: RT-DETR as Ultralytics exports it): (B, Q, 4 + C), one
row per query [cx, cy, w, h] as fractions of the model input's width and height, then the class
scores (logits go through a sigmoid); score = best class. A set prediction has no duplicates to
suppress, so no NMS: threshold, best first, letterbox map.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from agent.errors import ModelError, ModelOutputError
from agent.model.config import OutputConfig
from agent.model.preprocess import Letterbox
from agent.model.types import ModelOutput

__all__ = [
    "classifier_outputs",
    "detector_classes",
    "detector_outputs",
    "end2end_decode",
    "is_probability_rows",
    "nms_classwise",
    "rtdetr_decode",
    "softmax",
    "xyxy_decode",
    "yolo_rows_decode",
    "yolox_decode",
    "yolox_grid",
]

F32 = npt.NDArray[np.float32]


def softmax(z: npt.NDArray[np.floating]) -> F32:
    """Row-wise softmax of (B, C), computed in float64 for stability, returned as float32."""
    x = z.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x.astype(np.float32)


def is_probability_rows(x: npt.NDArray[np.floating], tol: float = 1e-3) -> bool:
    """True when every value is >= 0 and every row sums to 1 within ``tol``."""
    if x.size == 0 or not np.all(np.isfinite(x)) or float(x.min()) < 0.0:
        return False
    sums = x.astype(np.float64).sum(axis=1)
    return bool(np.all(np.abs(sums - 1.0) <= tol))


def classifier_outputs(
    raw: npt.NDArray[np.generic], cfg: OutputConfig, labels: Sequence[str] = ()
) -> list[ModelOutput]:
    """Decode a classifier's raw output (B, ...) into one :class:`ModelOutput` per frame."""
    if raw.ndim < 2 or raw.shape[0] == 0:
        raise ModelError(f"classifier output must be [batch, classes, ...], got shape {list(raw.shape)}")
    if not np.issubdtype(raw.dtype, np.floating):
        raise ModelError(f"classifier output must be floating point, got {raw.dtype}")
    rows = np.asarray(raw, dtype=np.float32).reshape(raw.shape[0], -1)  # (B, C): [B, C, 1, 1] -> [B, C]
    if not np.all(np.isfinite(rows)):
        raise ModelOutputError("classifier output contains NaN or infinity")
    tol = 1e-2 if raw.dtype == np.float16 else 1e-3
    if cfg.softmax == "yes" or (cfg.softmax == "auto" and not is_probability_rows(rows, tol)):
        logits: F32 | None = rows
        probs = softmax(rows)
    else:
        logits = None
        p = np.clip(rows.astype(np.float64), 0.0, None)
        total = p.sum(axis=1, keepdims=True)
        if np.any(total <= 0):
            raise ModelOutputError("softmax: no, but an output row sums to 0; the model does not output probabilities")
        probs = (p / total).astype(np.float32)
    top = probs.argmax(axis=1)
    out: list[ModelOutput] = []
    for i in range(rows.shape[0]):
        k = int(top[i])
        out.append(
            ModelOutput(
                top1=k,
                confidence=float(probs[i, k]),
                probs=probs[i],
                logits=None if logits is None else logits[i],
                label=labels[k] if k < len(labels) else None,
            )
        )
    return out


@lru_cache(maxsize=16)
def yolox_grid(input_wh: tuple[int, int], strides: tuple[int, ...]) -> tuple[F32, F32]:
    """Grid cell offsets (A, 2) [gx, gy] and per-anchor stride (A, 1) for a YOLOX head, stride order."""
    w, h = input_wh
    grids: list[F32] = []
    steps: list[F32] = []
    for s in strides:
        gw, gh = w // s, h // s
        xv, yv = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))
        grids.append(np.stack((xv, yv), axis=2).reshape(-1, 2))  # row-major: y outer, x inner
        steps.append(np.full((gw * gh, 1), float(s), dtype=np.float32))
    grid, stride = np.concatenate(grids), np.concatenate(steps)
    grid.setflags(write=False)
    stride.setflags(write=False)
    return grid, stride


def nms_classwise(
    boxes: F32, scores: F32, classes: npt.NDArray[np.intp], iou: float, max_keep: int
) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression per class; returns kept indices by descending score.

    Boxes of different classes never suppress each other (they are shifted apart by class).
    """
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.intp)
    span = float(boxes.max() - min(0.0, float(boxes.min()))) + 1.0
    b = boxes.astype(np.float64) + (classes.astype(np.float64) * span)[:, None]
    area = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0 and len(keep) < max_keep:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(b[i, 0], b[rest, 0])
        yy1 = np.maximum(b[i, 1], b[rest, 1])
        xx2 = np.minimum(b[i, 2], b[rest, 2])
        yy2 = np.minimum(b[i, 3], b[rest, 3])
        inter = np.maximum(xx2 - xx1, 0.0) * np.maximum(yy2 - yy1, 0.0)
        union = area[i] + area[rest] - inter
        ious = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        order = rest[ious <= iou]
    return np.asarray(keep, dtype=np.intp)


def yolox_decode(raw: npt.NDArray[np.generic], input_wh: tuple[int, int], cfg: OutputConfig) -> list[F32]:
    """Decode YOLOX raw output (B, A, 5 + C) to per-frame (K, 6) [x1, y1, x2, y2, score, cls] in model pixels."""
    if raw.ndim != 3 or raw.shape[2] < 6:
        raise ModelError(f"YOLOX output must be [batch, anchors, 5 + classes], got shape {list(raw.shape)}")
    grid, stride = yolox_grid(input_wh, cfg.strides)
    if raw.shape[1] != grid.shape[0]:
        raise ModelError(
            f"YOLOX output has {raw.shape[1]} anchors but input {input_wh[0]}x{input_wh[1]} with strides "
            f"{list(cfg.strides)} gives {grid.shape[0]}; check output.strides and preprocess.size"
        )
    out: list[F32] = []
    for pred in raw.astype(np.float32):  # (A, 5 + C)
        conf = _probabilities(pred[:, 4:])
        score, cls, sel = _best_class(conf[:, :1] * conf[:, 1:], cfg)  # obj x cls
        p = pred[sel]
        cxy = (p[:, :2] + grid[sel]) * stride[sel]
        half = np.exp(np.minimum(p[:, 2:4], 20.0)) * stride[sel] / 2.0  # clamp: exp overflow on garbage
        out.append(_suppress(np.concatenate((cxy - half, cxy + half), axis=1), score, cls, cfg))
    return out


def yolo_rows_decode(raw: npt.NDArray[np.generic], cfg: OutputConfig) -> list[F32]:
    """Decode YOLOv5 (B, N, 5 + C) or YOLOv8 (B, 4 + C, N) output (``cfg.decoder``, module
    docstring) to per-frame (K, 6) [x1, y1, x2, y2, score, cls] in model pixels."""
    v8 = cfg.decoder == "yolov8"
    first = 4 if v8 else 5  # attributes before the class scores
    shape = "[batch, 4 + classes, boxes]" if v8 else "[batch, boxes, 5 + classes]"
    if raw.ndim != 3 or raw.shape[1 if v8 else 2] < first + 1:
        hint = " (a [batch, boxes, 4 + classes] output is yolov8 transposed: check output.decoder)" if not v8 else ""
        raise ModelError(f"{cfg.decoder} output must be {shape}, got shape {list(raw.shape)}{hint}")
    n_boxes, n_attrs = (raw.shape[2], raw.shape[1]) if v8 else (raw.shape[1], raw.shape[2])
    if n_boxes < n_attrs:  # exports give thousands of candidates and a few dozen attributes
        other = "yolov5" if v8 else "yolov8"
        raise ModelError(
            f"{cfg.decoder} output {list(raw.shape)} would hold {n_boxes} candidate boxes of {n_attrs} values: "
            f"the layout looks transposed, check output.decoder (is it {other}?)"
        )
    rows = np.asarray(raw, dtype=np.float32)
    if v8:
        rows = rows.transpose(0, 2, 1)  # (B, N, 4 + C)
    out: list[F32] = []
    for pred in rows:
        conf = _probabilities(pred[:, 4:])
        score, cls, sel = _best_class(conf if v8 else conf[:, :1] * conf[:, 1:], cfg)
        cxy, half = pred[sel, :2], np.abs(pred[sel, 2:4]) / 2.0
        out.append(_suppress(np.concatenate((cxy - half, cxy + half), axis=1), score, cls, cfg))
    return out


def _class_rows(raw: npt.NDArray[np.generic], decoder: str, rows: str, box: str, hint: str = "") -> F32:
    """(B, N, 4 + C) rows of a box and class scores as float32, once the shape is checked."""
    if raw.ndim != 3 or raw.shape[2] < 5:
        raise ModelError(
            f"{decoder} output must be [batch, {rows}, 4 + classes] rows of {box} and class scores, got shape "
            f"{list(raw.shape)}{hint}"
        )
    if raw.shape[1] < raw.shape[2]:
        raise ModelError(
            f"{decoder} output {list(raw.shape)} would hold {raw.shape[1]} {rows} of {raw.shape[2]} values: the "
            "layout looks transposed ([batch, 4 + classes, boxes] is decoder yolov8)"
        )
    return np.asarray(raw, dtype=np.float32)


def xyxy_decode(raw: npt.NDArray[np.generic], cfg: OutputConfig) -> list[F32]:
    """Decode corner rows (B, N, 4 + C) (module docstring) to per-frame (K, 6) rows in model pixels."""
    rows = _class_rows(raw, "xyxy", "boxes", "[x1, y1, x2, y2] in pixels",
                       " (boxes and scores in two outputs: list the second in output.concat)")
    out: list[F32] = []
    for pred in rows:
        score, cls, sel = _best_class(_probabilities(pred[:, 4:]), cfg)
        out.append(_suppress(pred[sel, :4], score, cls, cfg))
    return out


def end2end_decode(raw: npt.NDArray[np.generic], cfg: OutputConfig) -> list[F32]:
    """Decode end-to-end output (B, D, 6) (module docstring) to per-frame (K, 6) rows in model pixels."""
    if raw.ndim != 3 or raw.shape[2] != 6:
        hint = " (a [batch, 6, detections] output is transposed)" if raw.ndim == 3 and raw.shape[1] == 6 else ""
        raise ModelError(
            f"end2end output must be [batch, detections, 6] rows of [x1, y1, x2, y2, score, class], got shape "
            f"{list(raw.shape)}{hint}; raw YOLO heads need decoder yolov5, yolov8 or yolox, DETR-style "
            "[batch, queries, 4 + classes] rows rtdetr"
        )
    out: list[F32] = []
    for pred in np.asarray(raw, dtype=np.float32):
        score = _probabilities(pred[:, 4])
        sel = np.flatnonzero((score >= cfg.score_threshold) & (pred[:, 5] >= 0) & np.isfinite(pred[:, :4]).all(axis=1))
        sel = sel[_best_first(score[sel], cfg)]
        det = pred[sel].copy()
        det[:, 4] = score[sel]
        det[:, 5] = np.rint(det[:, 5])
        out.append(det)
    return out


def rtdetr_decode(raw: npt.NDArray[np.generic], input_wh: tuple[int, int], cfg: OutputConfig) -> list[F32]:
    """Decode DETR-style output (B, Q, 4 + C) (module docstring) to per-frame (K, 6) rows in model pixels."""
    rows = _class_rows(raw, "rtdetr", "queries", "normalised [cx, cy, w, h]")
    scale = np.array([input_wh[0], input_wh[1]], np.float32)
    out: list[F32] = []
    for pred in rows:
        score, cls, sel = _best_class(_probabilities(pred[:, 4:]), cfg)
        finite = np.isfinite(pred[sel, :4]).all(axis=1)  # a box that is not finite is left out
        score, cls, sel = score[finite], cls[finite], sel[finite]
        order = _best_first(score, cfg)
        cxy, half = pred[sel, :2] * scale, np.abs(pred[sel, 2:4]) * scale / 2.0
        det = np.empty((sel.size, 6), np.float32)
        det[:, :2], det[:, 2:4], det[:, 4], det[:, 5] = cxy - half, cxy + half, score, cls
        out.append(det[order])
    return out


def _best_first(score: F32, cfg: OutputConfig) -> npt.NDArray[np.intp]:
    """Indices of the ``max_detections`` highest scores, highest first (ties in input order)."""
    return np.argsort(-score, kind="stable")[: cfg.max_detections]


def _probabilities(conf: F32) -> F32:
    """Scores as probabilities: logits (any value outside [0, 1]) go through a sigmoid."""
    if conf.size and (float(conf.min()) < 0.0 or float(conf.max()) > 1.0):
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(conf, -60.0, 60.0))), dtype=np.float32)
    return conf


def _best_class(scores_all: F32, cfg: OutputConfig) -> tuple[F32, npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Per candidate: best class score and class, restricted to candidates at or above the threshold."""
    cls = scores_all.argmax(axis=1)
    score = scores_all[np.arange(cls.size), cls]
    sel = np.flatnonzero(score >= cfg.score_threshold)
    return score[sel], cls[sel], sel


def _suppress(boxes: npt.NDArray[np.floating], score: F32, cls: npt.NDArray[np.intp], cfg: OutputConfig) -> F32:
    """Class-wise NMS of the selected candidates -> (K, 6) [x1, y1, x2, y2, score, cls].

    A candidate whose box is not finite (NaN, infinity) is left out first: NMS would keep it, and a
    NaN box has no place in the detection summary's grid.
    """
    boxes = boxes.astype(np.float32)
    finite = np.isfinite(boxes).all(axis=1)
    if not finite.all():
        boxes, score, cls = boxes[finite], score[finite], cls[finite]
    keep = nms_classwise(boxes, score, cls, cfg.nms_iou, cfg.max_detections)
    det = np.empty((keep.size, 6), dtype=np.float32)
    det[:, :4] = boxes[keep]
    det[:, 4] = score[keep]
    det[:, 5] = cls[keep]
    return det


def detector_classes(dims: Sequence[int], cfg: OutputConfig) -> int | None:
    """Number of classes a detector output of per-frame shape ``dims`` declares (None: unknown)."""
    if len(dims) != 2 or cfg.decoder == "end2end":
        return None
    if cfg.decoder == "yolov8":
        attrs, first = int(dims[0]), 4
    else:
        attrs, first = int(dims[1]), 4 if cfg.decoder in ("rtdetr", "xyxy") else 5
    return attrs - first if attrs > first else None


def detector_outputs(
    raw: npt.NDArray[np.generic],
    input_wh: tuple[int, int],
    geos: Sequence[Letterbox],
    cfg: OutputConfig,
    labels: Sequence[str] = (),
) -> list[ModelOutput]:
    """Decode a detector's raw output into one :class:`ModelOutput` per frame, boxes in frame pixels."""
    if cfg.decoder == "yolox":
        dets = yolox_decode(raw, input_wh, cfg)
    elif cfg.decoder == "end2end":
        dets = end2end_decode(raw, cfg)
    elif cfg.decoder == "rtdetr":
        dets = rtdetr_decode(raw, input_wh, cfg)
    elif cfg.decoder == "xyxy":
        dets = xyxy_decode(raw, cfg)
    else:
        dets = yolo_rows_decode(raw, cfg)
    if len(dets) != len(geos):
        raise ModelError(f"detector output batch is {len(dets)} but {len(geos)} frames were sent")
    out: list[ModelOutput] = []
    for det, geo in zip(dets, geos, strict=True):
        if det.shape[0]:
            det[:, :4] = geo.to_frame(det[:, :4])
            k = int(det[0, 5])
            out.append(
                ModelOutput(
                    top1=k, confidence=float(det[0, 4]), detections=det, label=labels[k] if k < len(labels) else None
                )
            )
        else:
            out.append(ModelOutput(top1=-1, confidence=0.0, detections=det))
    return out
