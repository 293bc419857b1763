"""Config of the model stage (runner, preprocessing, output decoding)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from agent.configbase import StrictModel

__all__ = ["ModelConfig", "OutputConfig", "PreprocessConfig", "Provider"]

Provider = Literal["tensorrt", "cuda", "cpu"]


class PreprocessConfig(StrictModel):
    size: tuple[int, int] = Field((224, 224), description="Model input size as [width, height] in pixels.")
    resize: Literal["stretch", "letterbox"] = Field(
        "stretch", description="stretch: resize to size ignoring aspect; letterbox: keep aspect, pad."
    )
    pad_value: int = Field(114, ge=0, le=255, description="Letterbox padding value (0..255), in raw pixel units.")
    pad_position: Literal["top_left", "center"] = Field(
        "top_left",
        description="Where the letterboxed image sits: top_left (YOLOX reference code: padding only right "
        "and bottom) or center (padding split evenly).",
    )
    interpolation: Literal["linear", "area", "nearest", "cubic"] = Field(
        "linear", description="OpenCV resize interpolation (area anti-aliases strong downscaling)."
    )
    channel_order: Literal["bgr", "rgb"] = Field("bgr", description="Channel order the model expects.")
    scale: float = Field(1.0, gt=0, description="Multiply pixel values (0..255) by this first, e.g. 1/255.")
    mean: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0), description="Subtracted per channel after scaling, in model channel order."
    )
    std: tuple[float, float, float] = Field(
        (1.0, 1.0, 1.0), description="Divides per channel after mean subtraction, in model channel order."
    )
    layout: Literal["nchw", "nhwc"] = Field("nchw", description="Input tensor layout.")
    dtype: Literal["float32", "float16", "uint8"] = Field("float32", description="Input tensor dtype.")

    @model_validator(mode="after")
    def _check(self) -> PreprocessConfig:
        w, h = self.size
        if not (1 <= w <= 8192 and 1 <= h <= 8192):
            raise ValueError(f"size must be [width, height] with each in 1..8192, got {list(self.size)}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive per channel, got {list(self.std)}")
        if self.dtype == "uint8" and (
            self.scale != 1.0 or any(m != 0.0 for m in self.mean) or any(s != 1.0 for s in self.std)
        ):
            raise ValueError("dtype uint8 feeds raw pixels: scale must be 1, mean 0 and std 1")
        return self


class OutputConfig(StrictModel):
    name: str | None = Field(None, description="Output tensor name (null: the first output).")
    concat: tuple[str, ...] = Field(
        (),
        description="Further output tensors appended to `name`'s along the last axis before decoding, for "
        "detectors whose boxes and class scores are separate outputs: YOLO-NAS [N, boxes, 4] + [N, boxes, "
        "classes] (decoder xyxy), RF-DETR [N, queries, 4] + [N, queries, classes] (decoder rtdetr). "
        "ONNX Runtime only.",
    )
    softmax: Literal["auto", "yes", "no"] = Field(
        "auto",
        description="auto: apply softmax unless the outputs already are probabilities "
        "(non-negative, summing to 1); yes/no force it.",
    )
    decoder: Literal["yolox", "yolov5", "yolov8", "end2end", "rtdetr", "xyxy"] = Field(
        "yolox",
        description="Detector output decoding (kind: detector). yolox: raw [N, anchors, 5+classes] grid "
        "output: add grid offsets, exp(wh), times stride; score = objectness x class probability. "
        "yolov5 (also YOLOv7 and other 'decoded rows' exports): [N, boxes, 5+classes] rows of [cx, cy, w, h] "
        "in input pixels, objectness, class scores; score = objectness x class. yolov8 (also YOLO11): "
        "[N, 4+classes, boxes] columns of [cx, cy, w, h] in input pixels and class scores; score = class. "
        "end2end (NMS-free or NMS-included exports: YOLOv10, YOLO26, Ultralytics nms=True): [N, detections, 6] "
        "final rows [x1, y1, x2, y2, score, class] in input pixels, taken as they are (no NMS). rtdetr "
        "(RT-DETR and other DETR-style set predictions): [N, queries, 4+classes] rows of [cx, cy, w, h] as "
        "fractions of the input size and class scores; score = class, no NMS. xyxy (e.g. YOLO-NAS): "
        "[N, boxes, 4+classes] rows of [x1, y1, x2, y2] in input pixels and class scores; score = class, NMS.",
    )
    strides: tuple[int, ...] = Field(
        (8, 16, 32), min_length=1,
        description="Detector feature-map strides in input pixels, in output order (decoder: yolox only).",
    )
    score_threshold: float = Field(
        0.3, ge=0.0, le=1.0, description="Detector: keep boxes whose score (obj x cls) is at least this."
    )
    nms_iou: float = Field(
        0.45, gt=0.0, le=1.0, description="Detector: class-wise non-maximum suppression IoU threshold."
    )
    max_detections: int = Field(300, ge=1, le=10000, description="Detector: keep at most this many boxes per frame.")

    @model_validator(mode="after")
    def _check(self) -> OutputConfig:
        if any(s < 1 for s in self.strides):
            raise ValueError(f"strides must be positive integers, got {list(self.strides)}")
        return self


class ModelConfig(StrictModel):
    path: Path | None = Field(
        None, description="ONNX model file. null: the embedded reference model (models/reference_cnn.onnx)."
    )
    kind: Literal["classifier", "detector"] = Field("classifier", description="How outputs are decoded.")
    labels: Path | None = Field(None, description="Text file with one class name per line (optional).")
    runtime: Literal["onnxruntime", "tensorrt"] = Field("onnxruntime", description="Inference engine.")
    providers: list[Provider] = Field(
        default_factory=lambda: list[Provider](["tensorrt", "cuda", "cpu"]),
        min_length=1,
        description="ONNX Runtime execution providers in order of preference; the first that "
        "works is used and the fallback is logged once.",
    )
    batch_size: int = Field(1, ge=1, le=64, description="Frames per inference call.")
    threads: int = Field(1, ge=0, le=64, description="ONNX Runtime intra-op threads (0: runtime default).")
    trt_cache_dir: Path | None = Field(
        None,
        description="TensorRT engine cache folder (null: ~/.cache/edge-guard/trt): ONNX Runtime's TensorRT "
        "execution provider keeps its engine and timing caches in it, runtime tensorrt its engines in "
        "<folder>/engines; engines are built once per model and GPU, then reused.",
    )
    trt_fp16: bool = Field(False, description="Build FP16 TensorRT engines: ONNX Runtime's TensorRT execution provider "
                             "(trt_fp16_enable), or runtime tensorrt where the GPU has fast FP16.")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="Input preparation.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Output decoding.")
    enabled: bool = Field(True, description="Run a model at all (false: statistics-only guard).")

    @model_validator(mode="after")
    def _check_runtime(self) -> ModelConfig:
        if self.output.concat and self.kind != "detector":
            raise ValueError(
                f"output.concat {list(self.output.concat)} joins a detector's boxes and class scores; a "
                "classifier reads one output (output.name)"
            )
        if self.runtime == "tensorrt" and self.output.concat:
            raise ValueError(
                f"output.concat {list(self.output.concat)} needs runtime onnxruntime: the TensorRT runner reads "
                "one output (ONNX Runtime's TensorRT execution provider keeps the model on the GPU)"
            )
        return self
