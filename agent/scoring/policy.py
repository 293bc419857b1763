"""The PASS/FLAG/BLOCK policy: run every calibrated test on a frame and decide.

``Guard(profile, policy_cfg).update(frame, stats, output, latency_ms) -> Verdict``:

1. the frame's Observation (features computed once) goes through every enabled test
   (the profile's tests minus ``disabled_reasons``), giving a score and a conformal p-value
   p_k each (tests that do not apply to the frame, e.g. ``frozen`` on a file, are skipped);
2. the family-wise p-value p_family = F(min_k p_k) (family.FamilyCombiner, calibrated on
   the calibration frames' out-of-block p-values of the same enabled tests,
   conformal.out_of_block_p_values);
3. BLOCK if p_family <= alpha_block, FLAG if p_family <= alpha_flag, else PASS; the reasons
   are the tests with F(p_k) <= alpha_flag (each BLOCK when F(p_k) <= alpha_block), sorted by
   p-value, so every FLAG/BLOCK names at least one reason;
4. tamper alarms (tamper.TamperMonitor, hysteresis): a raised ``covered``/``frozen``/
   ``defocused``/``moved``/``occluded`` alarm keeps its reason (FLAG) on frames whose F(p_k) is
   up to ``policy.tamper.clear_alpha``; ``Guard.tamper_states`` tells when an alarm is raised or
   cleared; a reason that another cause accounts for (a ``covered`` frame whose calibrated view
   is intact, a ``blur`` that added light or an occluder explains, an ``occluded`` frame that is
   covered, moved or defocused) is dropped, reason and alarm, while the decision stays what it
   was (explain.py);
5. drift (drift.DriftMonitor): the frame goes into the sliding windows and the sequential
   alarm; ``Guard.drift_snapshot()`` gives the health-summary fields and ``Guard.drift_events()``
   the ``drift`` events.

A frame whose size is not the profile's (the camera was swapped, or its stream switched to
another resolution) cannot be compared with the calibration: it is BLOCKed with the reason
``resolution`` (no test runs on it; a warning is logged when the size changes, and the rolling
state restarts when the profile's size is back). A frame with another tile grid is a
configuration error (ProfileError).

A per-test level more than ``UNSTEADY_FACTOR`` times below Bonferroni's alpha_flag / K is logged
as a warning naming the tests and calibration frames that set it (``_warn_if_unsteady``).

``Verdict.p_values`` holds each applicable test's p_k plus ``family`` (p_family);
``Verdict.scores`` the raw scores. Each Reason carries p_k as ``p_value`` and F(p_k) as
``detail['p_family']``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

import numpy as np

from agent.errors import ConfigError, ProfileError
from agent.frame import Frame
from agent.logsetup import sparse
from agent.model.types import ModelOutput
from agent.scoring.base import Test
from agent.scoring.config import PolicyConfig
from agent.scoring.conformal import ConformalScorer, out_of_block_p_values
from agent.scoring.drift import DriftEvent, DriftMonitor, DriftSnapshot
from agent.scoring.explain import explained_away
from agent.scoring.family import FamilyCombiner
from agent.scoring.observation import TileMotion, observe, thumbnail_bgr
from agent.scoring.profile import Profile
from agent.scoring.tamper import TamperMonitor, TamperState
from agent.stats.types import FrameStats
from agent.verdict import Decision, Reason, Verdict

__all__ = ["FAMILY_KEY", "MISMATCH_HOLD_S", "UNSTEADY_FACTOR", "Guard"]

logger = logging.getLogger(__name__)

#: Key of the family-wise p-value in ``Verdict.p_values``.
FAMILY_KEY = "family"
#: Seconds after the latest frame of another size during which ``Guard.size_mismatch`` stays set.
MISMATCH_HOLD_S = 5.0
#: A per-test level this many times below Bonferroni's alpha_flag / K is logged as a warning: the
#: calibration frames are not alike (``Guard._warn_if_unsteady``).
UNSTEADY_FACTOR = 10.0


class Guard:
    """Scores frames against a Profile and decides PASS/FLAG/BLOCK (see the module docstring)."""

    def __init__(self, profile: Profile, policy_cfg: PolicyConfig | None = None) -> None:
        cfg = policy_cfg if policy_cfg is not None else PolicyConfig()
        self.profile = profile
        disabled = set(cfg.disabled_reasons)
        self._tests: list[Test] = [t for t in profile.build_tests() if t.reason not in disabled]
        if not self._tests:
            raise ConfigError(
                f"policy.disabled_reasons {sorted(disabled)} disables every test of profile "
                f"{profile.profile_id} ({profile.test_names()}): enable at least one"
            )
        self.calibration_p = self._out_of_block(profile, self._tests)  # (n_cal, K)
        self.family = FamilyCombiner(self.calibration_p)
        self.tamper = TamperMonitor(cfg.tamper)
        self._tamper_states: dict[str, TamperState] = {}
        self._model_cols = [k for k, t in enumerate(self._tests) if t.reason == "ood_model"]
        self.drift = DriftMonitor(profile, cfg.drift, **self._calibration_surprise())
        self._alpha_flag = cfg.alpha_flag
        self._alpha_block = cfg.alpha_block
        self.set_alphas(cfg.alpha_flag, cfg.alpha_block)
        self._size = (profile.width, profile.height)
        self._foreign_size: tuple[int, int] | None = None  # the size of the last frame, when not the profile's
        self._last_foreign: tuple[tuple[int, int], float] | None = None  # (size, monotonic time) of the latest
        self._size_changes = 0
        self._grid = tuple(profile.grid)
        self._floor = profile.calibration.glare_floor
        self._needs_image = any(t.needs_image for t in self._tests)
        rows, cols = profile.grid
        self._motion = TileMotion((rows, cols))
        self._p_family = 1.0

    @staticmethod
    def _conformal(test: Test) -> ConformalScorer:
        if test.conformal is None:
            raise ProfileError(f"test {test.name} has no calibration")
        return test.conformal

    @staticmethod
    def _out_of_block(profile: Profile, tests: list[Test]) -> np.ndarray:
        """Each calibration frame's p-value under each test against the other, distant blocks."""
        blocks = np.asarray(profile.block_ids(), dtype=np.int64)
        cols = []
        for test in tests:
            c = Guard._conformal(test)
            tp = next(t for t in profile.tests if t.name == test.name)
            raw = np.array([np.nan if v is None else v for v in tp.calibration_scores], dtype=np.float64)
            cols.append(out_of_block_p_values(
                raw, blocks, radius=profile.calibration.guard_blocks, tail_k=c.tail_k,
                resolution=c.resolution, tolerance=c.tolerance,
            ))
        return np.column_stack(cols)

    def _calibration_surprise(self) -> dict[str, list[float]]:
        """-ln p of the calibration frames (out-of-block), in time order, for the drift CUSUMs."""
        p = self.calibration_p  # (n_cal, K)
        fam = self.family.p_values(p.min(axis=1))
        out = {"surprise_stats": (-np.log(np.maximum(fam, 1e-300))).tolist()}
        if self._model_cols:
            pm = p[:, self._model_cols].min(axis=1)
            out["surprise_model"] = (-np.log(np.maximum(pm, 1e-300))).tolist()
        return out

    # --- configuration --------------------------------------------------------------------
    @property
    def alpha_flag(self) -> float:
        return self._alpha_flag

    @property
    def alpha_block(self) -> float:
        return self._alpha_block

    @property
    def tests(self) -> tuple[Test, ...]:
        """The enabled tests, in profile order."""
        return tuple(self._tests)

    def set_alphas(self, alpha_flag: float, alpha_block: float) -> None:
        """Change the family-wise FLAG/BLOCK rates at run time (e.g. from an MQTT command)."""
        for label, a in (("alpha_flag", alpha_flag), ("alpha_block", alpha_block)):
            if not (isinstance(a, int | float) and 0.0 < a < 1.0):
                raise ConfigError(f"{label} must be a number in (0, 1), but got {a!r}")
        if alpha_block > alpha_flag:
            raise ConfigError(f"alpha_block ({alpha_block}) must be <= alpha_flag ({alpha_flag})")
        self._alpha_flag, self._alpha_block = float(alpha_flag), float(alpha_block)
        floor = self.family.min_p
        if alpha_block < floor:
            logger.info(
                "alpha_block=%g is below 1/(n+1)=%.3g (n=%d calibration frames): BLOCK relies on the "
                "extrapolated tails and the Bonferroni fallback",
                alpha_block, floor, self.family.n,
            )
        self._warn_if_unsteady()

    def _warn_if_unsteady(self) -> None:
        """Warn when the family's per-test level sits far below Bonferroni's alpha_flag / K.

        Bonferroni holds for any dependence between tests, so the empirical level falls far below
        it only where more calibration frames than alpha_flag allows score extreme p-values
        against the rest of the calibration: the scene or the camera changed within it (a gust,
        dusk, a hand-held stretch), or a short calibration holds a scene state only once (people
        close to the camera in one stretch of 40 s). Every test is then that much less sensitive,
        silently; this says which test and which frames did it.
        """
        level = self.family.level(self._alpha_flag)
        bonferroni = self._alpha_flag / self.family.k
        if level * UNSTEADY_FACTOR >= bonferroni:
            return
        low = self.calibration_p < bonferroni  # (n, K)
        frames = np.flatnonzero(low.any(axis=1))
        by_test = sorted(((int(low[:, k].sum()), t.name) for k, t in enumerate(self._tests) if low[:, k].any()),
                         reverse=True)
        logger.warning(
            "guard: at alpha_flag=%g the per-test level is %.2g, %.0f times below Bonferroni's %.2g for %d "
            "tests: %d of the %d calibration frames (kept frames %d..%d) score p < %.2g against the rest of "
            "the calibration, under %s. Those frames are unlike the rest: the scene or the camera changed "
            "within the calibration, or it is too short to hold the scene's usual variety; every test is "
            "that much less sensitive: calibrate longer, on footage whose usual variety includes them, or "
            "leave the test out (policy.disabled_reasons)",
            self._alpha_flag, level, bonferroni / level, bonferroni, self.family.k, frames.size,
            self.family.n, int(frames[0]), int(frames[-1]), bonferroni,
            ", ".join(f"{name} ({count} frames)" for count, name in by_test),
        )

    # --- streaming ------------------------------------------------------------------------
    @property
    def p_family(self) -> float:
        """Family-wise p-value of the last frame."""
        return self._p_family

    @property
    def tamper_states(self) -> dict[str, TamperState]:
        """Tamper alarms after the last frame (reasons whose test applied to it)."""
        return dict(self._tamper_states)

    def drift_snapshot(self) -> DriftSnapshot:
        """Drift scores and alarms for the health summary (thread-safe)."""
        return self.drift.snapshot()

    def drift_events(self) -> list[DriftEvent]:
        """Sequential drift alarms raised/cleared since the last call (publish as ``drift`` events)."""
        return self.drift.pop_events()

    @property
    def size_mismatch(self) -> str | None:
        """Why frames are BLOCKed for their size ("frames WxH, profile WxH: recalibrate") while a frame of
        another size came within ``MISMATCH_HOLD_S`` (a flapping stream stays one steady state); else None."""
        last = self._last_foreign
        if last is None or time.monotonic() - last[1] > MISMATCH_HOLD_S:
            return None
        (w, h), _ = last
        return f"frames {w}x{h}, profile {self._size[0]}x{self._size[1]}: recalibrate"

    def _size_changed(self, frame: Frame, stats: FrameStats) -> bool:
        """True when the frame is not of the profile's size; logs each change of size."""
        size = (stats.width, stats.height)
        foreign = None if size == self._size else size
        if foreign != self._foreign_size:
            self._size_changes += 1
            # a stream flapping between sizes would log every frame: the first changes, then every 100th
            log = logger.warning if sparse(self._size_changes, first=4) else logger.debug
            if foreign is not None:
                log(
                    "camera %s: frame %d is %dx%d but profile %s is for %dx%d (camera swapped or stream "
                    "resolution changed; size change %d): frames are BLOCKed with reason 'resolution' until "
                    "the size is back or the camera is recalibrated (`edge-guard calibrate`)",
                    frame.camera_id, frame.seq, size[0], size[1], self.profile.profile_id, *self._size,
                    self._size_changes,
                )
            else:
                log("camera %s: frame %d is back to the profile's %dx%d (size change %d): guarding again",
                    frame.camera_id, frame.seq, *self._size, self._size_changes)
                self.reset()  # temporal tests and tamper alarms start afresh on the profile's view
            self._foreign_size = foreign
        if foreign is not None:
            self._last_foreign = (foreign, time.monotonic())
        return foreign is not None

    def _foreign_frame(
        self, frame: Frame, stats: FrameStats, output: ModelOutput | None,
        latency_ms: Mapping[str, float] | None, t0: float,
    ) -> Verdict:
        """BLOCK a frame of another size with the reason ``resolution`` (module docstring)."""
        reason = Reason(code="resolution", decision=Decision.BLOCK, score=1.0, detail={
            "frame": f"{stats.width}x{stats.height}", "profile": f"{self._size[0]}x{self._size[1]}",
        })
        return self._verdict(frame, stats, output, latency_ms, t0, decision=Decision.BLOCK, reasons=(reason,),
                             scores={}, p_values={})

    def reset(self) -> None:
        """Forget rolling state (call when the camera reconnects)."""
        for t in self._tests:
            t.reset()
        self.tamper.reset()
        self.drift.reset()
        self._motion.reset()

    def update(
        self,
        frame: Frame,
        stats: FrameStats,
        output: ModelOutput | None,
        latency_ms: Mapping[str, float] | None = None,
        *,
        squeeze: float | None = None,
        model_error: str | None = None,
    ) -> Verdict:
        """Score one frame and return its Verdict (adds ``latency_ms['score']``).

        ``squeeze``: the frame's feature-squeezing distance (adversarial.FeatureSqueezer),
        when the profile was calibrated with squeezing. ``model_error``: why the model's output
        for this frame is unusable (pipeline.Measured): the frame is BLOCKed with the reason
        ``model_output`` whatever else it scores (its image tests still run and are reported).
        """
        t0 = time.perf_counter()
        if stats.grid != self._grid:
            raise ProfileError(
                f"frame {frame.seq} of {frame.camera_id} has tile grid {stats.grid}, but profile "
                f"{self.profile.profile_id} is for grid {self._grid}: set stats.grid to the profile's or "
                "recalibrate with `edge-guard calibrate`"
            )
        if self._size_changed(frame, stats):
            return self._foreign_frame(frame, stats, output, latency_ms, t0)
        image = frame.image if self._needs_image else None
        small = None if image is None else thumbnail_bgr(image)
        obs = observe(stats, output, live=frame.live, floor=self._floor, image=image, squeeze=squeeze,
                      small=small, motion=self._motion.update(small))
        scores: dict[str, float] = {}
        p_values: dict[str, float] = {}
        best: dict[str, tuple[float, float, Test]] = {}  # reason -> (p, score, test)
        for test in self._tests:
            score = test.update(obs).score
            if math.isnan(score):
                continue
            p = test.p_value
            scores[test.name] = score
            p_values[test.name] = p
            prev = best.get(test.reason)
            if prev is None or p < prev[0]:
                best[test.reason] = (p, score, test)
        p_min = min((v[0] for v in best.values()), default=1.0)
        p_family = self.family.p_value(p_min)
        self._p_family = p_family
        p_values[FAMILY_KEY] = p_family
        fam = {code: self.family.p_value(v[0]) for code, v in best.items()}
        dropped = explained_away(fam, self._alpha_flag, self.tamper.cfg.clear_alpha)
        # a dropped reason's evidence stays on the frame: its BLOCK (if it had one) is the frame's
        floor = Decision.BLOCK if any(fam[code] <= self._alpha_block for code in dropped) else Decision.PASS
        for code in dropped:
            fam[code] = 1.0  # another cause accounts for it (explain.py): no reason, no alarm
        self._tamper_states = self.tamper.update(frame.seq, fam, self._alpha_flag)
        reasons: list[Reason] = []
        for code, (p, score, test) in sorted(best.items(), key=lambda kv: kv[1][0]):
            pf = fam[code]
            held = pf > self._alpha_flag and self.tamper.keeps(code, pf)
            if pf > self._alpha_flag and not held:
                continue
            decision = Decision.BLOCK if pf <= self._alpha_block else Decision.FLAG
            detail: dict[str, float | int | str] = {"p_family": pf, "test": test.name, **test.detail}
            state = self._tamper_states.get(code)
            if state is not None:
                detail["tamper"] = "raised" if state.raised else "pending"
                if state.since_seq is not None:
                    detail["since_seq"] = state.since_seq
            reasons.append(Reason(code=code, decision=decision, score=score, p_value=p, detail=detail))
        if model_error is not None:
            reasons.insert(0, Reason(code="model_output", decision=Decision.BLOCK, score=1.0,
                                     detail={"error": model_error}))
        decision = max(max((r.decision for r in reasons), default=Decision.PASS), floor)
        surprise = {"stats": -math.log(max(p_family, 1e-300))}
        model_p = [p_values[t.name] for t in self._tests if t.reason == "ood_model" and t.name in p_values]
        if model_p:
            surprise["model"] = -math.log(max(min(model_p), 1e-300))
        self.drift.update(obs, surprise, frame.seq, frame.capture_ts, frame.camera_id)
        return self._verdict(frame, stats, output, latency_ms, t0, decision=decision, reasons=tuple(reasons),
                             scores=scores, p_values=p_values)

    @staticmethod
    def _verdict(
        frame: Frame, stats: FrameStats, output: ModelOutput | None, latency_ms: Mapping[str, float] | None,
        t0: float, *, decision: Decision, reasons: tuple[Reason, ...], scores: dict[str, float],
        p_values: dict[str, float],
    ) -> Verdict:
        """The frame's Verdict, with the scoring time since ``t0`` added as ``latency_ms['score']``."""
        latency = dict(latency_ms or {})
        latency["score"] = (time.perf_counter() - t0) * 1000.0
        return Verdict(camera_id=frame.camera_id, seq=frame.seq, capture_ts=frame.capture_ts, decision=decision,
                       reasons=reasons, scores=scores, p_values=p_values, stats=stats, output=output,
                       latency_ms=latency, fault=frame.fault)
