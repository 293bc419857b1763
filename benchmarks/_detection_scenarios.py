"""The measurements of bench_detection: each function runs one scenario and returns plain numbers.

A guard's anomaly score for ROC curves is s = -ln p, with p the family-wise p-value of the
frame (``family_score``) or, for adversarial inputs, the smallest p-value of the
``adversarial`` tests (``adversarial_score``); the baseline's is its robust distance.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.frame import Frame
from agent.model.types import ModelOutput
from agent.scoring.calibrate import Calibrator
from agent.scoring.config import CalibrationConfig, PolicyConfig
from agent.scoring.policy import FAMILY_KEY, Guard
from agent.scoring.profile import Profile
from agent.stats.cpu import CpuStats
from agent.verdict import Decision, Verdict

__all__ = [
    "GuardRun",
    "adversarial_score",
    "calibrate",
    "event_delays",
    "family_score",
    "read_image",
    "time_ms",
]

U8 = npt.NDArray[np.uint8]
_P_FLOOR = 1e-300


def family_score(v: Verdict) -> float:
    """-ln of the family-wise p-value (higher = more anomalous)."""
    return -math.log(max(v.p_values[FAMILY_KEY], _P_FLOOR))


def adversarial_score(v: Verdict, guard: Guard) -> float:
    """-ln of the smallest p-value among the tests with reason ``adversarial``."""
    ps = [v.p_values[t.name] for t in guard.tests if t.reason == "adversarial" and t.name in v.p_values]
    return -math.log(max(min(ps), _P_FLOOR)) if ps else 0.0


def calibrate(
    frames: Sequence[U8],
    outputs: Sequence[ModelOutput | None] | None = None,
    squeeze: Sequence[float] | None = None,
    *,
    grid: tuple[int, int] = (4, 4),
    live: bool = False,
    alpha_flag: float | None = None,
    **cfg: Any,
) -> Profile:
    """A profile from clean ``frames`` (with their model outputs and squeezing distances).

    ``alpha_flag`` is told to the calibrator as the daemon tells it its policy's: when the
    frames resolve that level, the default tolerances are dropped (exact p-values).
    """
    backend = CpuStats(grid)
    cal = Calibrator(CalibrationConfig(frames=len(frames), **cfg), grid)
    for i, image in enumerate(frames):
        cal.update(backend.compute(image), outputs[i] if outputs else None, image=image,
                   squeeze=squeeze[i] if squeeze else None, live=live)
    return cal.build(model_sha256="bench" if outputs else None, alpha_flag=alpha_flag)


@dataclass
class GuardRun:
    """A Guard plus its own statistics backend, fed frame by frame."""

    guard: Guard
    grid: tuple[int, int] = (4, 4)
    backend: CpuStats = field(init=False)
    seq: int = 0

    def __post_init__(self) -> None:
        self.backend = CpuStats(self.grid)

    @classmethod
    def of(cls, profile: Profile, alpha: float) -> GuardRun:
        rows, cols = profile.grid
        return cls(Guard(profile, PolicyConfig(alpha_flag=alpha, alpha_block=alpha / 10)), (rows, cols))

    def reset(self) -> None:
        self.guard.reset()
        self.backend.reset()

    def update(
        self, image: U8, output: ModelOutput | None = None, squeeze: float | None = None, *, live: bool = False
    ) -> Verdict:
        self.seq += 1
        frame = Frame(image, "bench", self.seq, float(self.seq), float(self.seq), live=live)
        return self.guard.update(frame, self.backend.compute(image), output, squeeze=squeeze)


def event_delays(
    run: GuardRun, frames: Sequence[U8], event_start: int, *, tamper: str | None = None
) -> dict[str, Any]:
    """Guard ``frames`` (index 0 = first frame after calibration); frames >= event_start are the event.

    Returns the delay (frames) to the first FLAG at or after the event, to the ``tamper`` alarm,
    the share of event frames flagged, the clean frames flagged before it and the top reasons.
    """
    run.reset()
    first_flag: int | None = None
    first_alarm: int | None = None
    flagged_event = flagged_clean = 0
    reasons: Counter[str] = Counter()
    for i, image in enumerate(frames):
        v = run.update(image)
        bad = v.decision >= Decision.FLAG
        if i < event_start:
            flagged_clean += bad
            continue
        flagged_event += bad
        reasons.update(v.reason_codes)
        if bad and first_flag is None:
            first_flag = i - event_start
        state = run.guard.tamper_states.get(tamper) if tamper else None
        if state is not None and state.raised and first_alarm is None:
            first_alarm = i - event_start
    n_event = max(1, len(frames) - event_start)
    return {
        "delay_frames": first_flag,
        "alarm_delay_frames": first_alarm,
        "detection_rate": flagged_event / n_event,
        "event_frames": len(frames) - event_start,
        "clean_flagged_before": flagged_clean,
        "top_reasons": dict(reasons.most_common(4)),
    }


def time_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` in ms (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def read_image(path: object) -> U8 | None:
    """A BGR uint8 image, or None when OpenCV cannot decode the file."""
    image = cv2.imread(str(path))
    return None if image is None else np.asarray(image, np.uint8)


def letterbox_224(image: U8) -> U8:
    """Photos to the classifier's 224 x 224 frame (area resize, stretched as SqueezeNet expects)."""
    return np.asarray(cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA), np.uint8)


def photo_variants(image: U8) -> list[U8]:
    """Five clean frames of one photo: plain, mirrored, and three crops (more clean samples for FPR)."""
    h, w = image.shape[:2]
    crops = [image[h // 10 : h - h // 10, w // 10 : w - w // 10], image[: 4 * h // 5, : 4 * w // 5],
             image[h // 5 :, w // 5 :]]
    return [letterbox_224(image), letterbox_224(np.ascontiguousarray(image[:, ::-1])),
            *(letterbox_224(np.ascontiguousarray(c)) for c in crops)]
