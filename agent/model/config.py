"""Config of the model stage (runner, preprocessing, output decoding)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from agent.configbase import StrictModel

__all__ = ["ModelConfig", "OutputConfig", "PreprocessConfig", "Provider"]

Provider = Literal["tensorrt", "cuda", "cpu"]


class PreprocessConfig(StrictModel):
    size: tuple[int, int] = Field((224, 224), description="Model input size as [width, height] in pixels.")
    resize: Literal["stretch", "letterbox"] = Field(
        "stretch", description="stretch: resize to size ignoring aspect; letterbox: keep aspect, pad."
    )
    pad_value: int = Field(114, ge=0, le=255, description="Letterbox padding value (0..255).")
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


class OutputConfig(StrictModel):
    name: str | None = Field(None, description="Output tensor name (null: the first output).")
    softmax: Literal["auto", "yes", "no"] = Field(
        "auto",
        description="auto: apply softmax unless the outputs already are probabilities "
        "(non-negative, summing to 1); yes/no force it.",
    )


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
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig, description="Input preparation.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Output decoding.")
    enabled: bool = Field(True, description="Run a model at all (false: statistics-only guard).")
