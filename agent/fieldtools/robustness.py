"""The corruption sweep behind ``edge-guard stress``: model and guard on clean vs corrupted stills.

Every input image is evaluated clean, then under each corruption x severity (same seed per
image, so severities share their random draws). Per cell (corruption, severity):

* ``flip_rate``: share of images whose prediction differs from the clean one (classifiers:
  top-1 class; detectors: detection agreement F1 < 0.5, see :func:`changed`);
* ``conf_drop``: mean of clean confidence minus corrupted confidence (top-1 probability or
  best detection score); ``mean_confidence``;
* ``accuracy``: top-1 accuracy when labels are given (classifiers);
* ``guard_detect_rate`` / ``guard_block_rate``: share the guard FLAGs or BLOCKs (FLAG
  includes BLOCK), ``silent_flip_rate``: prediction flipped *and* the guard said PASS (the
  failures nobody would see), and the guard's most frequent reasons.

Each swept image is evaluated as a short *window* of frames ending in it, with a fresh
statistics key and a reset guard, marked not live (no ``frozen`` test):

* stills: a window of one frame, so ``diff_prev`` is NaN (no motion; the guard treats NaN
  as "no information");
* video frames: the frame and its ``context`` predecessors from the footage, all corrupted
  alike (same seed: a corruption that persists, as a real one does). Temporal tests then see
  what they see in the daemon — e.g. ``patch`` only counts tiles that stay still over its
  last frames, so people walking are not mistaken for a sticker — and the verdict is the
  last frame's.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.corruptions import CORRUPTIONS, check_severity
from agent.frame import Frame
from agent.model.types import ModelOutput, ModelRunner
from agent.scoring.policy import Guard
from agent.stats.types import FrameStats, StatsBackend
from agent.verdict import Decision, Verdict

__all__ = [
    "Evaluator",
    "Observed",
    "SweepResult",
    "changed",
    "detection_agreement",
    "find_cliffs",
    "fit_to_size",
    "robustness_curves",
    "sweep",
]

U8 = npt.NDArray[np.uint8]
#: Detector outputs "agree" when matched detections give F1 >= this (IoU >= 0.5, same class).
DETECTION_AGREEMENT_MIN: float = 0.5


def fit_to_size(image: U8, size_wh: tuple[int, int]) -> U8:
    """Centre-crop ``image`` to the aspect of ``size_wh``, then resize to it (no distortion)."""
    w, h = size_wh
    ih, iw = image.shape[:2]
    if (iw, ih) == (w, h):
        return image
    scale = max(w / iw, h / ih)
    cw, ch = min(iw, round(w / scale)), min(ih, round(h / scale))
    x0, y0 = (iw - cw) // 2, (ih - ch) // 2
    crop = image[y0 : y0 + ch, x0 : x0 + cw]
    interp = cv2.INTER_AREA if cw > w else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(crop, (w, h), interpolation=interp), dtype=np.uint8)


def _iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """IoU matrix of boxes a (N, 4+) and b (M, 4+) given as x1, y1, x2, y2."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9), dtype=np.float64)


def detection_agreement(a: npt.NDArray[np.float32] | None, b: npt.NDArray[np.float32] | None) -> float:
    """F1 of greedy one-to-one matching (IoU >= 0.5, same class) between two detection sets; 1 if both empty."""
    na = 0 if a is None else a.shape[0]
    nb = 0 if b is None else b.shape[0]
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0 or a is None or b is None:
        return 0.0
    iou = _iou(a, b)
    iou[a[:, None, 5] != b[None, :, 5]] = 0.0
    matched = 0
    while True:
        i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        if iou[i, j] < 0.5:
            break
        matched += 1
        iou[i, :] = 0.0
        iou[:, j] = 0.0
    return 2.0 * matched / (na + nb)


def changed(clean: ModelOutput, other: ModelOutput) -> bool:
    """Did the prediction change? Classifiers: top-1 class; detectors: agreement F1 < 0.5."""
    if clean.detections is not None or other.detections is not None:
        return detection_agreement(clean.detections, other.detections) < DETECTION_AGREEMENT_MIN
    return int(clean.top1) != int(other.top1)


@dataclass(frozen=True, slots=True)
class Observed:
    """One image as the pipeline saw it."""

    stats: FrameStats
    output: ModelOutput | None
    verdict: Verdict | None


class Evaluator:
    """Statistics, model and guard on independent windows of frames (no state carried between windows)."""

    def __init__(self, stats: StatsBackend, model: ModelRunner | None, guard: Guard | None,
                 camera_id: str = "stress") -> None:
        self.stats = stats
        self.model = model
        self.guard = guard
        self.camera_id = camera_id
        self._seq = itertools.count()

    def __call__(self, images: Sequence[U8]) -> list[Observed]:
        """Evaluate independent stills (windows of one frame: diff_prev is NaN)."""
        return self.windows([[image] for image in images])

    def windows(self, windows: Sequence[Sequence[U8]]) -> list[Observed]:
        """Evaluate windows of consecutive frames (one model call for all); the last frame's result each."""
        flat = [image for w in windows for image in w]
        outputs: list[ModelOutput | None] = [None] * len(flat)
        if self.model is not None and flat:
            outputs = list(self.model.infer(flat))
        observed: list[Observed] = []
        k = 0
        for w in windows:
            key = f"{self.camera_id}/window-{next(self._seq)}"  # a fresh key: no previous frame
            if self.guard is not None:
                self.guard.reset()
            last: Observed | None = None
            for image in w:
                seq = next(self._seq)
                st = self.stats.compute(image, key=key)
                verdict = None
                if self.guard is not None:
                    frame = Frame(image, self.camera_id, seq, time.time(), time.monotonic(), live=False)
                    verdict = self.guard.update(frame, st, outputs[k])
                last = Observed(st, outputs[k], verdict)
                k += 1
            self.stats.reset(key)
            if last is None:
                raise ValueError("a window must hold at least one frame")
            observed.append(last)
        return observed


@dataclass
class _Cell:
    n: int = 0
    compared: int = 0
    flips: int = 0
    conf_drop: float = 0.0
    conf: float = 0.0
    labelled: int = 0
    correct: int = 0
    guarded: int = 0
    flagged: int = 0
    blocked: int = 0
    silent: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, clean: Observed, obs: Observed, label: int | None) -> bool | None:
        """Account one image; returns whether its prediction flipped (None without a model)."""
        self.n += 1
        flipped: bool | None = None
        if clean.output is not None and obs.output is not None:
            self.compared += 1
            flipped = changed(clean.output, obs.output)
            self.flips += int(flipped)
            self.conf_drop += clean.output.confidence - obs.output.confidence
            self.conf += obs.output.confidence
            if label is not None:
                self.labelled += 1
                self.correct += int(int(obs.output.top1) == label)
        if obs.verdict is not None:
            self.guarded += 1
            d = obs.verdict.decision
            self.flagged += int(d >= Decision.FLAG)
            self.blocked += int(d == Decision.BLOCK)
            self.silent += int(bool(flipped) and d == Decision.PASS)
            self.reasons.update(r.code for r in obs.verdict.reasons)
        return flipped

    def summary(self) -> dict[str, Any]:
        def rate(k: int, n: int) -> float | None:
            return None if n == 0 else round(k / n, 4)

        return {
            "n": self.n,
            "flip_rate": rate(self.flips, self.compared),
            "conf_drop": None if self.compared == 0 else round(self.conf_drop / self.compared, 4),
            "mean_confidence": None if self.compared == 0 else round(self.conf / self.compared, 4),
            "accuracy": rate(self.correct, self.labelled),
            "guard_detect_rate": rate(self.flagged, self.guarded),
            "guard_block_rate": rate(self.blocked, self.guarded),
            "silent_flip_rate": rate(self.silent, min(self.compared, self.guarded)),
            "top_reasons": dict(self.reasons.most_common(3)),
        }


@dataclass
class SweepResult:
    """What the sweep measured; ``slice_rows`` feeds the confidence slices (one row per evaluated image)."""

    clean: dict[str, Any]
    cells: list[dict[str, Any]]
    clean_observed: list[Observed]
    slice_rows: list[tuple[float, float, float, float, bool | None]]  # brightness, blur, saturation, conf, flipped
    seconds: float


def sweep(
    images: Sequence[U8],
    evaluate: Evaluator,
    names: Sequence[str],
    severities: Sequence[int],
    *,
    seed: int = 0,
    labels: Sequence[int | None] | None = None,
    contexts: Sequence[Sequence[U8]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SweepResult:
    """Evaluate every image clean and under every corruption x severity (see the module docstring).

    ``contexts[i]`` are the frames before ``images[i]`` (video); empty or None for stills.
    """
    t0 = time.perf_counter()
    sevs = [check_severity(s) for s in severities]
    corruptions = [CORRUPTIONS[n] for n in names]
    labs = list(labels) if labels is not None else [None] * len(images)
    ctxs = [list(c) for c in contexts] if contexts is not None else [[] for _ in images]
    clean_obs = evaluate.windows([[*ctx, image] for ctx, image in zip(ctxs, images, strict=True)])
    clean_cell = _Cell()
    cells = {(c.name, s): _Cell() for c in corruptions for s in sevs}
    rows: list[tuple[float, float, float, float, bool | None]] = []

    def slice_row(o: Observed, flipped: bool | None) -> None:
        if o.output is not None:
            rows.append((o.stats.brightness, o.stats.blur, o.stats.saturation, o.output.confidence, flipped))

    for o, lab in zip(clean_obs, labs, strict=True):
        clean_cell.add(o, o, lab)
        slice_row(o, False)
    done = 0
    for i, (image, ctx, clean, lab) in enumerate(zip(images, ctxs, clean_obs, labs, strict=True)):
        for c in corruptions:
            windows = [[c(frame, s, (seed, i)) for frame in (*ctx, image)] for s in sevs]
            for s, o in zip(sevs, evaluate.windows(windows), strict=True):
                slice_row(o, cells[(c.name, s)].add(clean, o, lab))
            done += 1
            if progress is not None:
                progress(done)
    clean_summary = clean_cell.summary()
    for key in ("flip_rate", "conf_drop", "silent_flip_rate"):
        clean_summary.pop(key)
    clean_summary["guard_false_alarm_rate"] = clean_summary.pop("guard_detect_rate")
    out_cells = [{"corruption": n, "severity": s, **cell.summary()} for (n, s), cell in cells.items()]
    return SweepResult(clean_summary, out_cells, clean_obs, rows, time.perf_counter() - t0)


def robustness_curves(
    cells: Sequence[dict[str, Any]], clean: dict[str, Any], use_accuracy: bool
) -> dict[str, dict[str, list[Any]]]:
    """Per corruption: severities (0 = clean), performance, guard detection and confidence.

    Performance is the agreement with the clean prediction (1 - flip rate; 1 at severity 0),
    or the accuracy when labels were given.
    """
    curves: dict[str, dict[str, list[Any]]] = {}
    for cell in sorted(cells, key=lambda c: (c["corruption"], c["severity"])):
        name = cell["corruption"]
        if name not in curves:
            has_model = clean.get("mean_confidence") is not None
            base = clean.get("accuracy") if use_accuracy else (1.0 if has_model else None)
            curves[name] = {
                "severity": [0],
                "performance": [base],
                "guard_detect": [clean.get("guard_false_alarm_rate")],
                "confidence": [clean.get("mean_confidence")],
            }
        cur = curves[name]
        flip = cell["flip_rate"]
        perf = cell["accuracy"] if use_accuracy else (None if flip is None else round(1.0 - flip, 4))
        cur["severity"].append(cell["severity"])
        cur["performance"].append(perf)
        cur["guard_detect"].append(cell["guard_detect_rate"])
        cur["confidence"].append(cell["mean_confidence"])
    return {name: curves[name] for name in dict.fromkeys(c["corruption"] for c in cells)}


def find_cliffs(curves: dict[str, dict[str, list[Any]]], threshold: float) -> list[dict[str, Any]]:
    """Sharp drops: performance falls by more than ``threshold`` between consecutive measured severities."""
    cliffs: list[dict[str, Any]] = []
    for name, cur in curves.items():
        sev, perf = cur["severity"], cur["performance"]
        for k in range(1, len(sev)):
            a, b = perf[k - 1], perf[k]
            if a is not None and b is not None and a - b > threshold:
                cliffs.append({"corruption": name, "from_severity": sev[k - 1], "to_severity": sev[k],
                               "drop": round(a - b, 4), "performance_after": b})
    return cliffs
