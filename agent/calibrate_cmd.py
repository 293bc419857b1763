"""``edge-guard calibrate``: read clean frames, build a baseline profile, write it.

It runs the same `Measurer` and `Scorer` as the daemon (one thread, every frame in order, no
drops) and stops as soon as the profile is built.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from agent.config import GuardConfig, config_hash
from agent.errors import ProfileError
from agent.frame import Frame
from agent.model.factory import effective_preprocess, load_warm_model
from agent.pipeline import Measurer, ProfileIds, Scorer
from agent.scoring.adversarial import make_squeezer
from agent.scoring.base import TEST_REGISTRY
from agent.scoring.ess import EffectiveFrames
from agent.scoring.forward import ForwardCheck
from agent.scoring.limits import GuardLimits
from agent.scoring.profile import Profile
from agent.sources.factory import open_source
from agent.sources.oneshot import GiveUpReader
from agent.stats.factory import create_backend
from agent.term import ProgressBar

__all__ = ["CalibrationResult", "calibrate_from_config"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    """What `calibrate_from_config` did."""

    profile: Profile
    out: Path
    frames_read: int
    frames_used: int
    seconds: float
    source: str
    size_changes: int = 0  # times the frame size changed while calibrating (pipeline.Scorer)
    limits: GuardLimits | None = None  # what the built profile's guard flags on its own (the summary's table)

    def summary(self) -> str:
        """A few lines for the terminal."""
        fps = self.frames_read / max(self.seconds, 1e-9)
        return (
            f"profile {self.profile.profile_id} written to {self.out}\n"
            f"  {self.frames_used} calibration frames ({self.frames_read} read) from {self.source} "
            f"in {self.seconds:.1f} s ({fps:.1f} frames/s)\n"
            f"{self._sizes()}"
            f"{self._states()}"
            f"{self._limits()}"
            f"  use it with:  policy:\n                  profile: {self.out}"
        )

    def _sizes(self) -> str:
        if not self.size_changes:
            return ""
        p = self.profile
        return (
            f"  the frame size changed {self.size_changes} times while calibrating: the profile is for "
            f"{p.width}x{p.height} (the first size to reach {p.n_frames} frames), and frames of other sizes "
            "are BLOCKed with reason 'resolution' when guarded\n"
        )

    def _states(self) -> str:
        p = self.profile
        if p.effective_frames is None or p.autocorrelation_frames is None:
            return ""
        ess = EffectiveFrames(p.n_kept, p.autocorrelation_frames, p.effective_frames)
        widened = sum(t.tolerance > 0 for t in p.tests)
        # the tamper tests and warped keep their tolerance however well the calibration resolves alpha
        kept = sorted(t.name for t in p.tests if t.tolerance > 0 and TEST_REGISTRY[t.name].keeps_tolerance)
        fc = p.forward_check
        if widened == len(kept):  # only those tolerances left: the others were dropped
            mode = "exact conformal p-values " + (
                f"(no tolerances but those of {', '.join(kept)}: the smallest event each names)"
                if kept else "(no tolerances)"
            )
        elif fc is not None and not fc.passed:
            check = ForwardCheck(fc.past, fc.future, fc.flagged, fc.alpha, fc.states, fc.p_value)
            mode = (
                f"p-values widened by the physical tolerances of {widened} tests: enough scene states for "
                f"alpha_flag={fc.alpha:g}, but the scene changed along the window: {check.describe()}"
            )
        else:
            mode = (
                f"p-values widened by the physical tolerances of {widened} tests (exact once the kept frames "
                "resolve policy.alpha_flag and their last third confirms it)"
            )
        return f"  kept {ess.describe()}\n  {mode}\n"

    def _limits(self) -> str:
        return "" if self.limits is None else self.limits.table() + "\n"


def calibrate_from_config(cfg: GuardConfig, out: Path, progress: bool = True) -> CalibrationResult:
    """Build a profile from ``cfg.source`` (skip + frames frames) and save it to ``out``."""
    t_start = time.monotonic()
    stats = create_backend(cfg.stats)
    model = load_warm_model(cfg.model)
    chash = config_hash(cfg)
    sha = model.info.sha256 if model is not None else None

    def ids(frame: Frame) -> ProfileIds:
        return ProfileIds(sha, frame.size_wh, stats.grid, chash)

    # The squeezer calibrates the adversarial_squeeze test; only when calibration.squeeze is on.
    squeezer = None
    if cfg.calibration.squeeze.enabled and model is not None:
        squeezer = make_squeezer(model, effective_preprocess(cfg.model), cfg.calibration.squeeze)
    measurer = Measurer(stats, model, squeezer)
    scorer = Scorer(None, cfg.policy, cfg.calibration, stats.grid, ids, camera_id=cfg.camera_id)
    needed = cfg.calibration.skip + cfg.calibration.frames
    bar = ProgressBar(needed, "frames") if progress else None
    source = GiveUpReader(open_source(cfg.source, cfg.camera_id))
    read = 0
    try:
        while scorer.profile is None:
            frame = source.read()
            if frame is None:  # ended for good
                raise ProfileError(
                    f"the source {cfg.source.uri} ended after {read} frames, but calibration needs "
                    f"{needed} (calibration.skip {cfg.calibration.skip} + calibration.frames "
                    f"{cfg.calibration.frames}); use longer footage, set source.loop, or lower --frames"
                )
            read += 1
            measured, bad = measurer.measure([frame])
            for _frame, exc in bad:
                logger.warning("frame %d skipped: %s", _frame.seq, exc)
            for m in measured:
                scorer.update(m)
            if bar is not None:
                bar.update(read)
    finally:
        if bar is not None:
            bar.close()
        source.close()
    profile = scorer.profile
    profile.save(out)  # creates the folder; a failure is a ProfileError naming out
    return CalibrationResult(profile, out, read, scorer.calibrated, time.monotonic() - t_start, cfg.source.uri,
                             scorer.calibration_size_changes, scorer.limits())
