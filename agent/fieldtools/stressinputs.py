"""Inputs of ``edge-guard stress``: still images or video frames, labels, and the guard's profile.

* ``--images DIR``: every image file of DIR (sorted), centre-cropped and resized to one
  working size (the profile's size, else ``--size``), because the guard compares frames of
  one resolution. The first ``--max-images`` are swept.
* ``--source VIDEO``: without a profile the first ``calibration.skip + calibration.frames``
  frames calibrate (as ``edge-guard calibrate`` would), and the sweep takes every
  ``--every``-th frame after them (held out); with a profile it samples from the start.
  Each swept frame keeps its ``CONTEXT_FRAMES`` predecessors, so the guard's temporal tests
  see a short clip (see agent.fieldtools.robustness).

Without ``policy.profile`` the profile is built here: on the calibration frames of the
video, or on all clean images of the folder (then the swept images are part of the
calibration set, i.e. in-sample, which the report says).
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from agent.config import GuardConfig, config_hash
from agent.errors import ConfigError, ProfileError, SourceConfigError
from agent.fieldtools.robustness import Evaluator, fit_to_size
from agent.frame import Frame
from agent.model.types import ModelRunner
from agent.pipeline import load_profile
from agent.scoring.calibrate import MIN_KEPT, Calibrator
from agent.scoring.profile import Profile
from agent.sources.factory import open_source
from agent.sources.folder import IMAGE_SUFFIXES
from agent.sources.oneshot import GiveUpReader
from agent.stats.types import StatsBackend

__all__ = ["CONTEXT_FRAMES", "StressInputs", "build_profile", "load_inputs", "parse_labels", "parse_size"]

logger = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
#: Frames before each swept video frame that the guard also sees (the ``patch`` test looks at 3).
CONTEXT_FRAMES: int = 2


@dataclass
class StressInputs:
    """The images to sweep, their names, and the clean frames to calibrate on (None: use a profile file)."""

    kind: str
    path: str
    images: list[U8]
    names: list[str]
    size_wh: tuple[int, int]
    calibration: list[U8] | None
    calibration_note: str
    contexts: list[list[U8]] = field(default_factory=list)


def parse_size(text: str) -> tuple[int, int]:
    """``640x480`` -> (640, 480)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or not (16 <= int(m.group(1)) <= 8192 and 16 <= int(m.group(2)) <= 8192):
        raise ConfigError(f"--size must be WIDTHxHEIGHT with each in 16..8192, e.g. 640x480, but got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _read_folder(folder: Path) -> tuple[list[U8], list[str]]:
    if not folder.is_dir():
        raise SourceConfigError(f"--images {folder}: not a directory")
    images: list[U8] = []
    names: list[str] = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            logger.warning("skipping %s: not a decodable image", p)
            continue
        images.append(np.asarray(img, dtype=np.uint8))
        names.append(p.name)
    if not images:
        raise SourceConfigError(f"--images {folder}: no decodable images ({', '.join(IMAGE_SUFFIXES)})")
    return images, names


def load_inputs(
    cfg: GuardConfig,
    *,
    images_dir: Path | None,
    video: str | None,
    max_images: int,
    size_wh: tuple[int, int] | None,
    every: int,
    has_profile: bool,
) -> StressInputs:
    """Read the sweep's inputs (see the module docstring)."""
    if images_dir is not None:
        raw, names = _read_folder(images_dir)
        size = size_wh or (640, 480)
        fitted = [fit_to_size(im, size) for im in raw]
        stills = None if has_profile else fitted[: cfg.calibration.frames]
        note = "" if has_profile else (
            f"calibrated on {len(stills or [])} clean images of {images_dir} "
            "(in-sample: the swept images are among them)"
        )
        return StressInputs("images", str(images_dir), fitted[:max_images], names[:max_images], size, stills, note)
    assert video is not None
    src_cfg = cfg.source.model_copy(update={"uri": video, "realtime": False, "loop": False, "max_frames": None})
    source = GiveUpReader(open_source(src_cfg, cfg.camera_id))
    n_cal = 0 if has_profile else cfg.calibration.skip + cfg.calibration.frames
    cal: list[U8] = []
    picked: list[U8] = []
    picked_names: list[str] = []
    contexts: list[list[U8]] = []
    recent: deque[U8] = deque(maxlen=CONTEXT_FRAMES)
    read = 0
    try:
        while len(picked) < max_images:
            frame: Frame | None = source.read()
            if frame is None:
                break
            if read < n_cal:
                cal.append(frame.image)
            elif (read - n_cal) % every == 0:
                picked.append(frame.image)
                picked_names.append(f"frame {frame.seq}")
                contexts.append(list(recent))
            recent.append(frame.image)
            read += 1
    finally:
        source.close()
    if not picked:
        raise SourceConfigError(
            f"--source {video}: no frames left to sweep after {n_cal} calibration frames ({read} read); "
            "use longer footage, lower calibration.frames or set policy.profile"
        )
    h, w = picked[0].shape[:2]
    note = "" if has_profile else f"calibrated on the first {len(cal)} frames of {video}; swept frames are held out"
    return StressInputs("video", video, picked, picked_names, (w, h), None if has_profile else cal, note, contexts)


def build_profile(
    cfg: GuardConfig,
    inputs: StressInputs,
    stats: StatsBackend,
    model: ModelRunner | None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Profile, str]:
    """The guard's profile: ``policy.profile`` checked against this run, else calibrated on the inputs."""
    sha = model.info.sha256 if model is not None else None
    if inputs.calibration is None:
        assert cfg.policy.profile is not None
        w, h = inputs.size_wh
        profile = load_profile(Path(cfg.policy.profile), sha, stats.grid, (w, h))
        return profile, f"profile file {cfg.policy.profile}"
    frames = inputs.calibration
    if len(frames) - cfg.calibration.skip < MIN_KEPT:
        raise ProfileError(
            f"stress needs a profile: set policy.profile, or give at least {MIN_KEPT} clean "
            f"{'images' if inputs.kind == 'images' else 'frames'} to calibrate on (got {len(frames)})"
        )
    skip = cfg.calibration.skip if inputs.kind == "video" else 0
    cal_cfg = cfg.calibration.model_copy(update={"frames": len(frames) - skip, "skip": skip})
    calibrator = Calibrator(cal_cfg, stats.grid, camera_id=cfg.camera_id)
    if inputs.kind == "video":
        # consecutive frames: one statistics key, so diff_prev/motion are real, as in `calibrate`
        for i, img in enumerate(frames):
            out = model.infer([img])[0] if model is not None else None
            calibrator.update(stats.compute(img, key="stress-calibration"), out)
            if progress is not None:
                progress(i + 1)
        stats.reset("stress-calibration")
    else:
        evaluate = Evaluator(stats, model, None, camera_id=cfg.camera_id)
        for i in range(0, len(frames), 8):
            for o in evaluate(frames[i : i + 8]):
                calibrator.update(o.stats, o.output)
            if progress is not None:
                progress(min(len(frames), i + 8))
    profile = calibrator.build(
        model_sha256=sha,
        model_input_wh=model.info.input_size_wh if model is not None else None,
        config_hash=config_hash(cfg),
        alpha_flag=cfg.policy.alpha_flag,
        alpha_block=cfg.policy.alpha_block,
    )
    return profile, inputs.calibration_note


def parse_labels(path: Path, names: Sequence[str], classes: Sequence[str]) -> list[int | None]:
    """Labels per swept image from ``FILE``: lines ``image_name,label`` (comma, tab or spaces).

    A label is a class index or a class name (any comma-separated synonym of a label line,
    case-insensitive). Images without a line get None (left out of the accuracy).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read labels file {path}: {exc.strerror or exc}") from exc
    lookup: dict[str, int] = {}
    for idx, line in enumerate(classes):
        for syn in [line, *line.split(",")]:
            lookup.setdefault(syn.strip().lower(), idx)
    table: dict[str, int] = {}
    errors: list[str] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"\s*[,\t]\s*|\s+", line, maxsplit=1)
        if len(parts) != 2:
            errors.append(f"line {n}: expected 'image_name,label', got {line!r}")
            continue
        name, label = parts[0], parts[1].strip()
        if label.isdigit() and (not classes or int(label) < len(classes)):
            table[name] = int(label)
        elif label.lower() in lookup:
            table[name] = lookup[label.lower()]
        else:
            errors.append(f"line {n}: unknown class {label!r} (give an index or a name from the model's labels)")
    if errors:
        raise ConfigError(f"{len(errors)} error(s) in labels file {path}:\n" + "\n".join(f"  - {e}" for e in errors))
    return [table.get(n) for n in names]
