"""The unit that flows through the pipeline: one decoded camera frame and its metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.errors import FrameError

__all__ = ["Frame", "validate_bgr"]

BGRImage = npt.NDArray[np.uint8]


def validate_bgr(image: object) -> BGRImage:
    """Return ``image`` if it is a non-empty (H, W, 3) uint8 array, else raise FrameError."""
    if not isinstance(image, np.ndarray):
        raise FrameError(f"frame must be a numpy.ndarray, but got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise FrameError(f"frame must have dtype uint8, but got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise FrameError(f"frame must have shape (H, W, 3) (BGR), but got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise FrameError(f"frame must not be empty, but got shape {image.shape}")
    return image


@dataclass(frozen=True, slots=True)
class Frame:
    """A BGR uint8 frame with the metadata every later stage needs.

    ``capture_ts`` is wall-clock seconds since the epoch (for messages);
    ``capture_mono`` is ``time.monotonic()`` at capture (for latencies and ages).
    ``live`` says whether the source claims to be a live camera (frozen detection
    only makes sense then). ``fault`` is the injected fault label for synthetic
    sources (``None`` for clean frames and for real cameras) and is used only for
    evaluation, never for decisions.
    """

    image: BGRImage
    camera_id: str
    seq: int
    capture_ts: float
    capture_mono: float
    live: bool = True
    fault: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_bgr(self.image)
        if self.seq < 0:
            raise FrameError(f"seq must be >= 0, but got {self.seq}")

    @property
    def size_wh(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])
