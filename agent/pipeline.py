"""The per-frame stages, without threads: measure (stats + model), then calibrate or guard.

`Measurer` runs the statistics backend and the model on a batch of frames and times each stage.
`Scorer` is the phase machine after it: while a start-up profile is being built it feeds
`Calibrator`; once the profile exists it runs the `Guard` and yields verdicts. The daemon's
worker thread, ``edge-guard calibrate`` and the demo all use these two classes, so the three
paths cannot drift apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agent.errors import FrameError, ModelOutputError
from agent.frame import Frame
from agent.logsetup import sparse
from agent.model.types import ModelOutput, ModelRunner
from agent.scoring.adversarial import FeatureSqueezer
from agent.scoring.calibrate import Calibrator
from agent.scoring.config import CalibrationConfig, PolicyConfig
from agent.scoring.drift import DriftEvent, DriftSnapshot
from agent.scoring.limits import GuardLimits
from agent.scoring.policy import Guard
from agent.scoring.profile import Profile
from agent.stats.types import FrameStats, StatsBackend
from agent.verdict import Verdict

__all__ = ["Measured", "Measurer", "ModelResult", "ProfileIds", "Scorer", "infer_isolating", "load_profile"]

logger = logging.getLogger(__name__)
#: A stream that keeps changing resolution during calibration is warned about at most this often.
SIZE_CHANGE_LOG_S: float = 60.0
#: Frame sizes calibrated side by side at most (a stream flapping between resolutions, a folder of mixed sizes).
MAX_CALIBRATION_SIZES: int = 4


@dataclass(frozen=True, slots=True)
class Measured:
    """A frame with its statistics, model output and stage latencies (ms).

    ``model_error``: why the model's output for this frame cannot be used (`ModelOutputError`:
    NaN or infinity, ...); ``output`` and ``squeeze`` are then None, and the guard BLOCKs the
    frame with the reason ``model_output``.
    """

    frame: Frame
    stats: FrameStats
    output: ModelOutput | None
    latency_ms: dict[str, float]
    squeeze: float | None = None  # feature-squeezing distance (agent.scoring.adversarial), when enabled
    model_error: str | None = None


#: One frame's model output and feature-squeezing distance (None: not squeezed, or no usable output).
ModelResult = tuple[ModelOutput | None, float | None]


def infer_isolating(
    run: Callable[[Sequence[int]], list[ModelResult]], n: int
) -> tuple[list[ModelResult], list[str | None]]:
    """``run`` on frames ``0..n-1`` of a batch, and why any frame's output is unusable (else None).

    One call for the batch; when the model's output for the batch is unusable (`ModelOutputError`:
    a decoder refuses the whole batch), each frame is run alone, so only the frames whose own
    output is unusable lose it: ``(None, None)`` and the error's message. A NaN that one dark or
    saturated frame gives (an fp16 engine overflowing, say) then costs that frame, not the camera.
    Any other error propagates.
    """
    try:
        return run(range(n)), [None] * n
    except ModelOutputError as exc:
        if n == 1:
            return [(None, None)], [str(exc)]
    results: list[ModelResult] = []
    errors: list[str | None] = []
    for i in range(n):
        try:
            results += run([i])
            errors.append(None)
        except ModelOutputError as exc:
            results.append((None, None))
            errors.append(str(exc))
    return results, errors


@dataclass(frozen=True, slots=True)
class ProfileIds:
    """What a profile must match: the model, the frame size and the tile grid."""

    model_sha256: str | None
    frame_size_wh: tuple[int, int]
    grid: tuple[int, int]
    config_hash: str
    model_input_wh: tuple[int, int] | None = None


class Measurer:
    """Statistics and model output for a batch of frames, with per-stage timing."""

    def __init__(self, stats: StatsBackend, model: ModelRunner | None, squeezer: FeatureSqueezer | None = None) -> None:
        self.stats = stats
        self.model = model
        self.squeezer = squeezer  # runs the model on the frames and their squeezed copies in one call

    def measure(self, frames: list[Frame]) -> tuple[list[Measured], list[tuple[Frame, FrameError]]]:
        """Measure ``frames``; frames the stats stage rejects come back in the second list."""
        ok: list[tuple[Frame, FrameStats, float]] = []
        bad: list[tuple[Frame, FrameError]] = []
        for frame in frames:
            t0 = time.perf_counter()
            try:
                st = self.stats.compute(frame.image, key=frame.camera_id)
            except FrameError as exc:
                bad.append((frame, exc))
                continue
            ok.append((frame, st, (time.perf_counter() - t0) * 1e3))
        results: list[ModelResult] = [(None, None)] * len(ok)
        errors: list[str | None] = [None] * len(ok)
        model_ms = 0.0
        if self.model is not None and ok:
            t0 = time.perf_counter()
            images = [f.image for f, _, _ in ok]
            results, errors = infer_isolating(lambda idx: self._infer([images[i] for i in idx]), len(ok))
            # One batched call: each frame is charged its share of the batch's time.
            model_ms = (time.perf_counter() - t0) * 1e3 / len(ok)
        measured = [
            Measured(frame, st, out, {"stats": st_ms, "model": model_ms}, sq, err)
            for (frame, st, st_ms), (out, sq), err in zip(ok, results, errors, strict=True)
        ]
        return measured, bad

    def _infer(self, images: list[npt.NDArray[np.uint8]]) -> list[ModelResult]:
        assert self.model is not None
        if self.squeezer is not None:
            res = self.squeezer.infer(images)
            return list(zip(res.outputs, res.scores, strict=True))
        return [(out, None) for out in self.model.infer(images)]


def load_profile(path: Path, model_sha256: str | None, grid: tuple[int, int],
                 frame_size_wh: tuple[int, int] | None = None) -> Profile:
    """Load a profile file and check it fits this model and grid, and the frame size when known.

    The frame size is often unknown at start-up (the source has not decoded a frame yet); the
    `Scorer` then checks it on the first frame.
    """
    profile = Profile.load(path)
    w, h = frame_size_wh if frame_size_wh is not None else (None, None)
    profile.check_compatible(model_sha256, w, h, grid)
    return profile


class Scorer:
    """Calibrating -> guarding. Thread-safe: `set_alphas`/`swap_profile` come from other threads.

    With ``profile=None`` the first ``calibration.skip`` measured frames are ignored, the next
    ``calibration.frames`` build a profile (no verdicts meanwhile), then guarding starts.
    ``on_profile`` is called with each profile that gets built (e.g. to save it).

    A profile is for one frame size. When the size changes during calibration (a stream that
    reconnected at another resolution, one that flaps between two, a folder of mixed sizes),
    each size is calibrated on its own frames, side by side (at most ``MAX_CALIBRATION_SIZES``;
    a new size beyond that replaces the one with the fewest frames), and the first size to
    reach ``calibration.frames`` becomes the profile's: frames of the other sizes are then
    BLOCKed with the reason ``resolution`` (Guard) instead of keeping calibration from ending.
    """

    def __init__(
        self,
        profile: Profile | None,
        policy: PolicyConfig,
        calibration: CalibrationConfig,
        grid: tuple[int, int],
        make_ids: Callable[[Frame], ProfileIds],
        *,
        on_profile: Callable[[Profile], None] | None = None,
        camera_id: str | None = None,
    ) -> None:
        self._policy = policy
        self._cal_cfg = calibration
        self._grid = grid
        self._make_ids = make_ids
        self._on_profile = on_profile
        self._camera_id = camera_id
        self._lock = threading.Lock()
        self._guard: Guard | None = None
        self._calibrators: dict[tuple[int, int], Calibrator] = {}  # one per frame size (class docstring)
        self._cal_size: tuple[int, int] | None = None  # the size of the last calibration frame
        self.calibrated = 0
        self._model_errors = 0  # frames whose model output was unusable (Measured.model_error), for the log
        #: Such frames in a row up to the last one (any thread reads it: the daemon's camera status).
        self.model_error_run = 0
        self.profile: Profile | None = None
        self._size_changes = self._size_changes_logged = 0  # frame size changes during calibration
        self._size_change_logged_at: float | None = None  # monotonic time of the last size-change warning
        if profile is not None:
            self._install(profile)

    @property
    def phase(self) -> str:
        """``calibrating`` or ``guarding``."""
        return "guarding" if self._guard is not None else "calibrating"

    @property
    def calibration_target(self) -> int:
        return self._cal_cfg.frames

    @property
    def calibration_size_changes(self) -> int:
        """Times the frame size changed during start-up calibration."""
        return self._size_changes

    def update(self, m: Measured) -> Verdict | None:
        """Consume one measured frame; a Verdict when guarding, None while calibrating."""
        with self._lock:
            self.model_error_run = 0 if m.model_error is None else self.model_error_run + 1
            if m.model_error is not None:
                self._model_errors += 1
                if sparse(self._model_errors):
                    logger.warning("frame %d: the model's output is unusable (%d so far): %s; %s", m.frame.seq,
                                   self._model_errors, m.model_error,
                                   "left out of calibration" if self._guard is None
                                   else "BLOCKed with the reason model_output")
            if self._guard is None:
                if m.model_error is None:  # a frame the model gave no usable output for calibrates nothing
                    self._calibrate(m)
                return None
            # The guard checks the frame size against the profile (BLOCK, reason 'resolution', when it differs).
            t0 = time.perf_counter()
            verdict = self._guard.update(m.frame, m.stats, m.output, m.latency_ms, squeeze=m.squeeze,
                                         model_error=m.model_error)
            m.latency_ms["score"] = (time.perf_counter() - t0) * 1e3
            return verdict

    @property
    def size_mismatch(self) -> str | None:
        """Set while guarded frames are not of the profile's size (Guard.size_mismatch; any thread)."""
        guard = self._guard
        return None if guard is None else guard.size_mismatch

    def drift_snapshot(self) -> DriftSnapshot | None:
        """Drift scores and alarms for the health summary (None while calibrating; any thread)."""
        guard = self._guard
        return None if guard is None else guard.drift_snapshot()

    def drift_events(self) -> list[DriftEvent]:
        """Sequential drift alarms raised/cleared since the last call, to publish as ``drift`` events."""
        guard = self._guard
        return [] if guard is None else guard.drift_events()

    def limits(self) -> GuardLimits | None:
        """What each test flags on its own under the current profile and alphas (limits.py; None
        while calibrating)."""
        guard = self._guard
        return None if guard is None else GuardLimits.of(guard)

    def set_alphas(self, alpha_flag: float, alpha_block: float) -> None:
        """Change the policy's FLAG/BLOCK rates (also applies to a profile built later)."""
        with self._lock:
            self._policy = self._policy.model_copy(update={"alpha_flag": alpha_flag, "alpha_block": alpha_block})
            if self._guard is not None:
                self._guard.set_alphas(alpha_flag, alpha_block)

    def swap_profile(self, profile: Profile) -> None:
        """Guard with ``profile`` from the next frame on (already checked by the caller)."""
        with self._lock:
            self._install(profile)

    def _install(self, profile: Profile) -> None:
        self.profile = profile
        self._guard = Guard(profile, self._policy)
        self._calibrators.clear()

    def _calibrator_for(self, m: Measured) -> Calibrator:
        """The calibrator of the frame's size (class docstring), logging changes of size."""
        size = (m.stats.width, m.stats.height)
        previous, self._cal_size = self._cal_size, size
        if previous is not None and size != previous:
            self._size_changes += 1
            now = time.monotonic()
            if self._size_change_logged_at is None or now - self._size_change_logged_at >= SIZE_CHANGE_LOG_S:
                more = self._size_changes - 1 - self._size_changes_logged
                sizes = ", ".join(f"{w}x{h}: {c.n}" for (w, h), c in self._calibrators.items())
                logger.warning(
                    "camera %s: frame %d is %dx%d, the frame before %dx%d: the stream changed resolution "
                    "during calibration; each size is calibrated on its own frames (so far %s), the first "
                    "to reach %d frames becomes the profile's and frames of other sizes are then BLOCKed "
                    "(reason 'resolution')%s",
                    m.frame.camera_id, m.frame.seq, *size, *previous, sizes, self._cal_cfg.frames,
                    f" ({more} more size changes since the last message: frames of one camera keep one size; "
                    "a folder source must not mix image sizes)" if more else "",
                )
                self._size_change_logged_at, self._size_changes_logged = now, self._size_changes
        cal = self._calibrators.get(size)
        if cal is None:
            if len(self._calibrators) >= MAX_CALIBRATION_SIZES:
                fewest = min(self._calibrators, key=lambda s: self._calibrators[s].n)
                logger.warning("camera %s: more than %d frame sizes during calibration: the %dx%d calibration "
                               "(%d frames) makes room for %dx%d", m.frame.camera_id, MAX_CALIBRATION_SIZES,
                               *fewest, self._calibrators[fewest].n, *size)
                del self._calibrators[fewest]
            cal = self._calibrators[size] = Calibrator(self._cal_cfg, self._grid, camera_id=self._camera_id)
        return cal

    def _calibrate(self, m: Measured) -> None:
        cal = self._calibrator_for(m)
        cal.update(m.stats, m.output, image=m.frame.image, squeeze=m.squeeze, live=m.frame.live)
        self.calibrated = max(max(0, c.n - self._cal_cfg.skip) for c in self._calibrators.values())
        if not cal.done:
            return
        ids = self._make_ids(m.frame)
        profile = cal.build(
            model_sha256=ids.model_sha256,
            model_input_wh=ids.model_input_wh,
            config_hash=ids.config_hash,
            alpha_flag=self._policy.alpha_flag,
            alpha_block=self._policy.alpha_block,
        )
        logger.info("calibrated on %d frames: profile %s; guarding from now on", self.calibrated, profile.profile_id)
        self._install(profile)
        if self._on_profile is not None:
            self._on_profile(profile)
