"""Feature-squeezing companion inputs: bit-depth reduction and a 3x3 median, and the batch layout.

Feature squeezing (Xu, Evans, Qi, NDSS 2018) runs the model on the input and on "squeezed"
copies of it; a large change of the output between them is evidence of an adversarial input
(the score itself belongs to the adversarial detector of docs/detection.md). Here the squeezers
act on the model-input canvas, the uint8 image after resize/letterbox and before normalisation,
so every squeezed copy is itself a valid model input:

- ``bits``: bit-depth reduction to ``b`` bits on the 0..255 scale,
  ``v' = round(round(v * L / 255) * 255 / L)`` with ``L = 2**b - 1`` and halves rounded up.
  Xu et al. keep ``round(v * L / 255) / L`` as a float; rounding it back to uint8 moves a value
  by at most 0.5/255 and keeps the squeezed copy a plain uint8 image that any runner accepts.
- ``median``: 3x3 median per channel with replicated borders, exactly ``cv2.medianBlur(x, 3)``.

On the GPU (kernels/preprocess.cu) each squeezed copy is one more slot of the same batch, built
from the same decoded frame in the same launch and run in the same engine call. The batch
layout is slot-major by variant: ``[frame 0..n-1 plain, frame 0..n-1 squeezer 1, ...]``.

On the CPU, :func:`squeezed_canvases` gives the same squeezed uint8 canvases from the CPU
preprocessing; passed to ``ModelRunner.infer`` they are already at the model size, so the
runner's resize is the identity and only the normalisation is applied.
:func:`infer_with_squeezers` is the one entry point: the TensorRT runner's batched GPU path
when the runner has one, else one ``infer`` call over the frames and their squeezed canvases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from agent.model.config import PreprocessConfig
from agent.model.preprocess import Letterbox, plan_resize, resize_frame
from agent.model.types import ModelOutput, ModelRunner

__all__ = [
    "SQUEEZE_CODES",
    "Squeeze",
    "bit_depth",
    "infer_with_squeezers",
    "median3",
    "parse_squeezers",
    "slot_layout",
    "split_by_variant",
    "squeeze_canvas",
    "squeezed_canvases",
]

U8 = npt.NDArray[np.uint8]
T = TypeVar("T")

SqueezeKind = Literal["bits", "median"]
#: Squeeze kind -> the kernel's EGP_SQUEEZE_* code (kernels/preprocess_math.h).
SQUEEZE_CODES: dict[str, int] = {"bits": 1, "median": 2}

_SPEC = re.compile(r"^\s*(bits|median)\s*(?::\s*(\d+))?\s*$")


@dataclass(frozen=True, slots=True)
class Squeeze:
    """One squeezer: ``Squeeze("bits", 5)`` (5-bit colour depth) or ``Squeeze("median", 3)`` (3x3)."""

    kind: SqueezeKind
    param: int

    def __post_init__(self) -> None:
        if self.kind == "bits" and not 1 <= self.param <= 7:
            raise ValueError(f"bit-depth squeeze needs 1..7 bits (8 changes nothing), but got {self.param}")
        if self.kind == "median" and self.param != 3:
            raise ValueError(f"median squeeze supports a 3x3 window only, but got size {self.param}")
        if self.kind not in SQUEEZE_CODES:
            raise ValueError(f"squeeze kind must be one of {sorted(SQUEEZE_CODES)}, but got {self.kind!r}")

    @property
    def name(self) -> str:
        """Short name used as a key in outputs, e.g. ``bits5`` or ``median3``."""
        return f"{self.kind}{self.param}"

    @property
    def code(self) -> int:
        """The kernel's squeeze code."""
        return SQUEEZE_CODES[self.kind]


def parse_squeezers(text: str) -> tuple[Squeeze, ...]:
    """Parse ``"bits:5,median:3"`` (``median`` alone means 3x3); empty text gives no squeezers."""
    out: list[Squeeze] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _SPEC.match(part)
        if m is None:
            raise ValueError(f"squeezer must look like 'bits:5' or 'median:3', but got {part!r}")
        kind = m.group(1)
        param = int(m.group(2)) if m.group(2) else (5 if kind == "bits" else 3)
        out.append(Squeeze("bits" if kind == "bits" else "median", param))
    if len({s.name for s in out}) != len(out):
        raise ValueError(f"squeezers must be distinct, but got {[s.name for s in out]}")
    return tuple(out)


def bit_depth(canvas: U8, bits: int) -> U8:
    """Bit-depth reduction of a uint8 array (the kernel's ``egp_bit_depth``, exactly)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, but got {bits}")
    levels = (1 << bits) - 1
    v = canvas.astype(np.int32)
    q = (2 * v * levels + 255) // 510
    return ((2 * q * 255 + levels) // (2 * levels)).astype(np.uint8)


def median3(canvas: U8) -> U8:
    """3x3 median per channel, borders replicated (the kernel's ``egp_median3_px``)."""
    return np.asarray(cv2.medianBlur(np.ascontiguousarray(canvas), 3), dtype=np.uint8)


def squeeze_canvas(canvas: U8, squeeze: Squeeze) -> U8:
    """Apply one squeezer to an (H, W, 3) uint8 model-input canvas."""
    if squeeze.kind == "bits":
        return bit_depth(canvas, squeeze.param)
    return median3(canvas)


def squeezed_canvases(images: Sequence[U8], cfg: PreprocessConfig, squeezers: Sequence[Squeeze]) -> list[U8]:
    """The squeezed model-input canvases of ``images`` on the CPU, in :func:`slot_layout` order
    (without the plain copies): squeezer 1 of every frame, then squeezer 2, ..."""
    canvases = [resize_frame(img, cfg)[0] for img in images]
    return [squeeze_canvas(c, sq) for sq in squeezers for c in canvases]


def slot_layout(n_frames: int, squeezers: Sequence[Squeeze]) -> list[tuple[int, Squeeze | None]]:
    """(frame index, squeezer or None) of every batch slot: plain copies first, then each squeezer."""
    variants: list[Squeeze | None] = [None, *squeezers]
    return [(i, sq) for sq in variants for i in range(n_frames)]


def split_by_variant(
    items: Sequence[T], n_frames: int, squeezers: Sequence[Squeeze]
) -> tuple[list[T], dict[str, list[T]]]:
    """Split per-slot results (slot_layout order) into (plain, {squeezer name: per-frame results})."""
    expected = n_frames * (1 + len(squeezers))
    if len(items) != expected:
        raise ValueError(
            f"expected {expected} results ({n_frames} frames x {1 + len(squeezers)} variants), but got {len(items)}"
        )
    plain = list(items[:n_frames])
    squeezed = {sq.name: list(items[(k + 1) * n_frames : (k + 2) * n_frames]) for k, sq in enumerate(squeezers)}
    return plain, squeezed


def _boxes_to_frame(out: ModelOutput, geo: Letterbox) -> ModelOutput:
    if out.detections is None or not out.detections.shape[0]:
        return out
    det = out.detections.copy()
    det[:, :4] = geo.to_frame(det[:, :4])
    return replace(out, detections=det)


def infer_with_squeezers(
    runner: ModelRunner, images: Sequence[U8], cfg: PreprocessConfig, squeezers: Sequence[Squeeze]
) -> tuple[list[ModelOutput], dict[str, list[ModelOutput]]]:
    """Outputs of ``images`` and of their squeezed copies, in one batched runner call.

    ``cfg`` must be the runner's preprocessing. Runners with ``infer_squeezed`` (TensorRT: GPU
    preprocessing and squeezing into the engine input) use it; others get the frames and
    their CPU-squeezed canvases in one ``infer`` call (one engine pass when the model's batch
    is dynamic). Detector boxes of squeezed copies are mapped to frame pixels like the plain ones.
    """
    native = getattr(runner, "infer_squeezed", None)
    if callable(native):
        result = native(list(images), squeezers)
        return list(result.outputs), dict(result.squeezed)
    outputs = runner.infer([*images, *squeezed_canvases(images, cfg, squeezers)])
    plain, squeezed = split_by_variant(outputs, len(images), squeezers)
    geos = [plan_resize((img.shape[1], img.shape[0]), cfg) for img in images]
    for name, outs in squeezed.items():  # canvases are model-sized: their boxes came back in model pixels
        squeezed[name] = [_boxes_to_frame(out, geo) for out, geo in zip(outs, geos, strict=True)]
    return plain, squeezed
