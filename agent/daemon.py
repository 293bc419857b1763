"""The daemon: wires source -> stats -> model -> score -> policy -> sinks and supervises it.

Start-up reads top to bottom (`Daemon.start`): init_source, init_stats, init_model (warm-up),
init_profile, init_sinks, start_workers. The reader and worker threads are in `agent.workers`;
the **supervisor** is the caller of `Daemon.run` (normally the main thread). It publishes a
health summary every ``health.interval_s``, sends the systemd STATUS line and watchdog pings
(`agent.watchdog` rule), publishes camera status changes (online / degraded / offline), applies
SIGHUP reloads, and watches liveness: each thread puts its exception (or None) on an error
queue in ``finally``, so a dying thread is noticed at once, logged with its traceback, and the
daemon exits 1 for systemd to restart it.

READY=1 is sent once the model is warm and the first frame went through the whole pipeline
(when calibrating at start-up, the first calibration frame counts: the pipeline is then
demonstrably working, and calibration progress shows in STATUS=).

Stop (SIGINT/SIGTERM or `Daemon.stop`): the reader stops, the worker drains the queue, a final
health summary is published, sinks are closed (flushed), exit 0. A file that ends (or
``source.max_frames``) ends the run the same way. A profile that does not fit the model or the
grid raises `ProfileError` out of `run` (exit 78 from the CLI); frames of another size than the
profile's (a swapped camera) are BLOCKed with the reason `resolution` and the daemon keeps running;
during start-up calibration each size is calibrated on its own frames and the first to finish is
the profile's (pipeline.Scorer).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import GuardConfig, Overrides, config_hash, load_config
from agent.control import Progress
from agent.errors import ConfigError, GuardError, ModelError, ProfileError
from agent.frame import Frame
from agent.gpu_measure import build_measurer
from agent.healthagg import HealthAggregator
from agent.logsetup import set_level
from agent.model.factory import effective_preprocess, load_model, warm_up
from agent.model.types import ModelRunner
from agent.pipeline import Measurer, ProfileIds, Scorer, load_profile
from agent.reload import plan_reload
from agent.reporting import Reporter
from agent.scoring.adversarial import make_squeezer
from agent.scoring.drift import DriftSnapshot
from agent.scoring.profile import Profile
from agent.sdnotify import Notifier, watchdog_interval_s
from agent.signals import install_handlers
from agent.sinks.base import CameraState, Sink
from agent.sinks.file import FileSink
from agent.sources.base import Source
from agent.sources.factory import open_source
from agent.stats.factory import create_backend
from agent.stats.types import StatsBackend
from agent.watchdog import RETRYING_STATES, ProgressWatchdog, WatchdogPinger
from agent.workers import ErrorQueue, Workers

__all__ = ["FATAL_AT_START", "Daemon"]

logger = logging.getLogger(__name__)

#: Errors that mean "the configuration is wrong": never retried (exit 78).
FATAL_AT_START: tuple[type[GuardError], ...] = (ConfigError, ProfileError, ModelError)
#: This many frame size changes during start-up calibration mark the camera degraded.
CALIBRATION_SIZE_CHANGES_DEGRADED: int = 3
#: This many frames in a row with an unusable model output (reason model_output) mark the camera
#: degraded (about a second of video): the guard BLOCKs them all, the operator should know why.
MODEL_ERROR_RUN_DEGRADED: int = 25
MODEL_OUTPUT_DEGRADED = "model output unusable (NaN, ...) on every recent frame: BLOCKed with reason model_output"

_TICK_S = 0.25
_STATUS_EVERY_S = 5.0


class Daemon:
    """One camera's guard pipeline. `run` blocks until stopped and returns the exit code.

    ``extra_sinks`` receive everything the configured sink receives (the demo's live table uses
    one). ``on_tick`` is called from the supervisor loop about four times a second.
    """

    def __init__(
        self,
        cfg: GuardConfig,
        *,
        config_path: Path | None = None,
        overrides: Mapping[str, Any] | Overrides | None = None,
        notifier: Notifier | None = None,
        extra_sinks: Sequence[Sink] = (),
        on_tick: Callable[[Daemon], None] | None = None,
        profile_out: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self._overrides = overrides
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self._extra_sinks = list(extra_sinks)
        self._on_tick = on_tick
        self._profile_out = profile_out
        self.camera_id = cfg.camera_id
        self.config_hash = config_hash(cfg)
        self.agg = HealthAggregator(cfg.camera_id)
        self.source: Source | None = None
        self.stats: StatsBackend | None = None
        self.model: ModelRunner | None = None
        self.scorer: Scorer | None = None
        self.sinks: list[Sink] = []
        self.reporter = Reporter(cfg.camera_id, self.agg, self.sinks, drift=self._drift_snapshot)
        self.workers: Workers | None = None
        self._measurer: Measurer | None = None
        self._errors: ErrorQueue = queue.Queue()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._ready_sent = False
        self._health_interval = cfg.health.interval_s
        self._next_health = 0.0
        self._start_mono = time.monotonic()
        self._watchdog = WatchdogPinger(
            self.notifier, ProgressWatchdog(cfg.pipeline.stall_after_s), watchdog_interval_s()
        )

    # -- start-up, top to bottom -----------------------------------------------------------------
    def start(self) -> None:
        """Open everything and start the threads; GuardError subclasses say what is wrong."""
        self.notifier.status("starting")
        self.init_source()
        self.init_stats()
        self.init_model()
        self.init_profile()
        self.init_sinks()
        self.start_workers()

    def init_source(self) -> None:
        self.source = open_source(self.cfg.source, self.camera_id)
        logger.info("source %s opened (state %s)", self.cfg.source.uri, self.source.state)

    def init_stats(self) -> None:
        self.stats = create_backend(self.cfg.stats)
        logger.info("statistics backend: %s, grid %s", self.stats.name, list(self.stats.grid))

    def init_model(self) -> None:
        # Loading and the first inference can both take long (ONNX Runtime's TensorRT provider may
        # build its engine when the session is created, a native runner on the first run): keep
        # systemd's start timeout extended through both, and only report READY after them.
        self.notifier.status("loading model")
        with self.notifier.extending(120.0):
            # CUDA stats: the runner shares its launcher (context, stream) -> zero-copy measuring
            self.model = load_model(self.cfg.model, launcher=getattr(self.stats, "launcher", None))
            if self.model is not None:
                self.notifier.status("warming up model")
                warm_up(self.model)
        if self.model is None:
            logger.info("model disabled: statistics-only guard")
        else:
            logger.info("model %s (sha256 %s…) on %s, warmed up",
                        self.model.info.path, self.model.info.sha256[:12], self.model.info.provider)
        assert self.stats is not None
        # Only when calibration.squeeze is on (off by default: two extra model passes per frame);
        # make_squeezer still says None (with a warning) for a detector.
        squeeze_cfg = self.cfg.calibration.squeeze
        squeezer = None
        if squeeze_cfg.enabled and self.model is not None:
            squeezer = make_squeezer(self.model, effective_preprocess(self.cfg.model), squeeze_cfg)
        if squeezer is not None:
            logger.info("feature squeezing on (%s): extra model passes per frame", squeeze_cfg.squeezers)
        self._measurer = build_measurer(self.stats, self.model, squeezer, self.cfg.stats, self.cfg.model)

    def init_profile(self) -> None:
        assert self.stats is not None
        profile: Profile | None = None
        path = self.cfg.policy.profile
        if path is not None:
            # the frame size is checked on the first frame (the source does not know it yet)
            profile = load_profile(path, self._model_sha(), self.stats.grid)
            logger.info("profile %s loaded from %s", profile.profile_id, path)
        else:
            logger.info("no policy.profile: calibrating on the first %d frames (after skipping %d), then guarding",
                        self.cfg.calibration.frames, self.cfg.calibration.skip)
        self.scorer = Scorer(profile, self.cfg.policy, self.cfg.calibration, self.stats.grid,
                             self._profile_ids, on_profile=self._saved_profile, camera_id=self.camera_id)
        self._log_limits()

    def init_sinks(self) -> None:
        if self.cfg.mqtt is None:
            self.sinks.append(FileSink(self.cfg.file_sink, self.camera_id, ids=self.ids))
            logger.info("writing verdicts and health to %s", self.cfg.file_sink.dir)
        else:
            from agent.sinks.mqtt.factory import create_mqtt_sink  # noqa: PLC0415 (paho only when used)

            self.sinks.append(create_mqtt_sink(self.cfg, target=self, ids=self.ids, backends=self.backends()))
        self.sinks.extend(self._extra_sinks)

    def start_workers(self) -> None:
        assert self.source is not None and self._measurer is not None and self.scorer is not None
        paced = self.cfg.source.realtime or (self.source.live and not self.cfg.source.uri.startswith("synthetic:"))
        self.workers = Workers(self.source, self._measurer, self.scorer, self.sinks, self.agg,
                               errors=self._errors, queue_size=self.cfg.pipeline.queue_size,
                               batch_size=self.cfg.model.batch_size, paced=paced)
        self._start_mono = time.monotonic()
        self.reporter.restart_clock()
        self.workers.start()

    # -- public controls ---------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        """Start (if needed), supervise until stopped or the source ends; return the exit code."""
        restore = install_handlers(self.stop, self.request_reload) if install_signals else None
        try:
            if self.workers is None:
                try:
                    self.start()
                except BaseException:
                    self._close_outputs(None, "")  # release what was opened before the failure
                    raise
            return self._supervise()
        finally:
            if restore is not None:
                restore()

    def stop(self) -> None:
        """Ask for a clean stop (thread- and signal-safe)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Ask for a config reload at the next supervisor tick (SIGHUP)."""
        self._reload.set()

    def progress(self) -> Progress:
        """A snapshot of what the pipeline did so far (see `agent.control.Progress`)."""
        t = self.agg.totals()
        w = self.workers
        return Progress(
            frames_in=t.frames_in, frames_processed=t.frames_processed, frames_dropped=t.frames_dropped,
            frames_corrupt=t.frames_corrupt, frames_calibrated=t.frames_calibrated,
            last_progress_mono=w.last_progress if w else None, worker_busy_since_mono=w.busy_since if w else None,
            source_state=self._source_state(), phase=self.phase, decisions=dict(t.decisions),
            reasons=dict(t.reasons), queue_len=len(w.queue) if w else 0, ready=self._ready_sent,
            finished=w.queue.finished if w else False,
        )

    @property
    def phase(self) -> str:
        return self.scorer.phase if self.scorer is not None else "starting"

    def ids(self) -> dict[str, str | None]:
        """Model, profile and config identities (added to every published record)."""
        profile = self.scorer.profile if self.scorer is not None else None
        return {"model_sha256": self._model_sha(), "profile_id": profile.profile_id if profile else None,
                "config_hash": self.config_hash}

    def backends(self) -> dict[str, str]:
        """What computes what: ``{"stats": "cpu", "model": "onnxruntime:CPUExecutionProvider"}``."""
        return {"stats": self.stats.name if self.stats else "none",
                "model": f"{self.cfg.model.runtime}:{self.model.info.provider}" if self.model else "none"}

    # -- CommandTarget (agent.sinks.mqtt.commands) ---------------------------------------------------------
    def snapshot(self) -> Frame | None:
        """The latest frame read from the camera."""
        return self.workers.latest if self.workers is not None else None

    def set_alphas(self, alpha_flag: float, alpha_block: float) -> None:
        """Change FLAG/BLOCK rates live; ConfigError when out of (0, 1) or block > flag."""
        if not (0 < alpha_block <= alpha_flag < 1):
            raise ConfigError(
                f"alphas must satisfy 0 < alpha_block <= alpha_flag < 1, but got "
                f"alpha_flag={alpha_flag}, alpha_block={alpha_block}"
            )
        if self.scorer is None:
            raise ConfigError("the pipeline is not started yet")
        self.scorer.set_alphas(alpha_flag, alpha_block)
        self.cfg.policy = self.cfg.policy.model_copy(update={"alpha_flag": alpha_flag, "alpha_block": alpha_block})
        logger.info("alphas set: flag=%g block=%g", alpha_flag, alpha_block)
        self._log_limits()

    def reload_profile(self) -> str:
        """Re-read policy.profile and guard with it; returns the new profile id.

        ProfileError (and the old profile keeps guarding) when it is missing, corrupt or made for
        another model, grid or frame size.
        """
        path = self.cfg.policy.profile
        if path is None:
            raise ProfileError("no policy.profile is configured (this instance calibrated at start-up)")
        if self.scorer is None or self.stats is None:
            raise ProfileError("the pipeline is not started yet")
        frame = self.snapshot()
        size = frame.size_wh if frame is not None else None
        profile = load_profile(path, self._model_sha(), self.stats.grid, size)
        self.scorer.swap_profile(profile)
        logger.info("profile %s reloaded from %s", profile.profile_id, path)
        self._log_limits()
        return profile.profile_id

    def limits(self) -> dict[str, Any]:
        """What each test flags on its own (``cmd/limits``; limits.GuardLimits); ValueError while calibrating."""
        limits = None if self.scorer is None else self.scorer.limits()
        if limits is None:
            done = 0 if self.scorer is None else self.scorer.calibrated
            raise ValueError(f"the guard is still calibrating ({done} of {self.cfg.calibration.frames} frames): "
                             "no limits yet")
        return limits.as_dict()

    def ping(self) -> dict[str, Any]:
        """Liveness and identity for ``cmd/ping``."""
        p = self.progress()
        return {"version": __version__, "uptime_s": round(time.monotonic() - self._start_mono, 3),
                "frames_processed": p.frames_processed, "frames_dropped": p.frames_dropped,
                "phase": p.phase, "source_state": p.source_state, **self.ids()}

    # -- supervisor --------------------------------------------------------------------------------
    def _supervise(self) -> int:
        self._next_health = time.monotonic() + self._health_interval
        next_status = time.monotonic()
        done: set[str] = set()
        fatal: BaseException | None = None
        reason = "stopped"
        while True:
            try:
                name, exc = self._errors.get(timeout=_TICK_S)
            except queue.Empty:
                pass
            else:
                done.add(name)
                if exc is not None:
                    fatal = exc
                    reason = f"{name} failed: {exc}"
                    break
            if self._stop.is_set():
                logger.info("stop requested: draining %d queued frame(s)", self.progress().queue_len)
                break
            if done >= {"reader", "worker"}:
                reason = "source ended"
                break
            try:
                if self._reload.is_set():
                    self._reload.clear()
                    self._apply_reload()
                now = time.monotonic()
                self._tick_health_and_status(now)
                if now >= self._next_health:
                    self._next_health = now + self._health_interval
                    self._publish_health()
                if now >= next_status:
                    next_status = now + _STATUS_EVERY_S
                    self.notifier.status(self._status_line())
                if self._on_tick is not None:
                    self._on_tick(self)
            except Exception as exc:  # a bug in a sink or hook: same treatment as a dead thread
                fatal, reason = exc, f"supervisor failed: {exc}"
                break
        return self._shutdown(fatal, reason, done)

    def _tick_health_and_status(self, now: float) -> None:
        state = self._source_state()
        w = self.workers
        assert w is not None
        decision = self._watchdog.tick(now, w.last_progress, state, w.busy_since)
        if not self._ready_sent and w.first_done.is_set():
            self._ready_sent = True
            self.notifier.ready(self._status_line())
            logger.info("ready: the first frame went through the pipeline (%s)", self.phase)
        # A camera known to be down is degraded at once, not after stall_after_s of silence (the
        # watchdog still counts recent frames as progress; "connecting" is a normal start).
        if decision.reason == "source_retrying" or state in RETRYING_STATES - {"connecting"}:
            self.reporter.set_camera_state("degraded", f"source {state}")
        elif not decision.ping:
            self.reporter.set_camera_state("degraded", "pipeline stalled")
        elif w.first_done.is_set():
            scorer = self.scorer
            mismatch = scorer.size_mismatch if scorer is not None else None
            changes = scorer.calibration_size_changes if scorer is not None and scorer.phase == "calibrating" else 0
            if mismatch is not None:  # a swapped camera: every frame is BLOCKed with reason 'resolution'
                self.reporter.set_camera_state("degraded", mismatch)
            elif scorer is not None and scorer.model_error_run >= MODEL_ERROR_RUN_DEGRADED:
                self.reporter.set_camera_state("degraded", MODEL_OUTPUT_DEGRADED)
            elif changes >= CALIBRATION_SIZE_CHANGES_DEGRADED:  # the stream keeps changing size: it may never end
                self.reporter.set_camera_state(
                    "degraded", f"frame size keeps changing: {changes} size changes during start-up calibration")
            else:
                self.reporter.set_camera_state("online", self.phase)

    def _publish_health(self) -> None:
        self.reporter.publish_health(self.source, self.backends(), self.ids, self.phase)

    def _status_line(self) -> str:
        scorer = self.scorer
        if scorer is None:
            return "starting"
        return self.reporter.status_line(self.phase, scorer.calibrated, scorer.calibration_target)

    def _apply_reload(self) -> None:
        if self.config_path is None:
            logger.warning("SIGHUP ignored: no config file to re-read (running on built-in defaults)")
            return
        self.notifier.reloading("reloading config")
        try:
            new = load_config(self.config_path, self._overrides)
        except ConfigError as exc:
            logger.error("reload rejected, keeping the running config: %s", exc)
            self.agg.error("reload_rejected")  # in the next health summary: visible to the fleet, not just here
            self.notifier.ready(self._status_line())
            return
        plan = plan_reload(self.cfg, new)
        live = plan.live
        if "policy.alpha_flag" in live:
            self.set_alphas(float(live["policy.alpha_flag"]), float(live["policy.alpha_block"]))
        if "health.interval_s" in live:
            self._health_interval = float(live["health.interval_s"])
            self._next_health = min(self._next_health, time.monotonic() + self._health_interval)
            self.cfg.health = new.health
        if "logging.level" in live:
            set_level(str(live["logging.level"]))
            self.cfg.logging = new.logging
        self.config_hash = config_hash(self.cfg)
        if plan.empty:
            logger.info("config reloaded: no changes")
        elif live:
            logger.info("config reloaded: applied %s", ", ".join(f"{k}={v}" for k, v in live.items()))
        if plan.restart:
            logger.warning("config reloaded: restart needed to apply %s", ", ".join(plan.restart))
        self.notifier.ready(self._status_line())

    def _shutdown(self, fatal: BaseException | None, reason: str, done: set[str]) -> int:
        self.notifier.stopping("stopping: " + reason)
        assert self.workers is not None
        self.workers.stop_reading()
        if fatal is None and not self.workers.drain(self.cfg.pipeline.stall_after_s):
            self.agg.error("drain_timeout")
        # late thread errors (e.g. the worker failed while draining)
        while fatal is None:
            try:
                name, exc = self._errors.get_nowait()
            except queue.Empty:
                break
            done.add(name)
            if exc is not None:
                fatal, reason = exc, f"{name} failed: {exc}"
        code = 0
        if fatal is not None:
            code = 1
            self.agg.error("thread_crash")
            if not isinstance(fatal, ProfileError):
                logger.error("%s; exiting with status 1 so the service restarts", reason, exc_info=fatal)
        self._close_outputs("offline", "stopped" if fatal is None and reason == "stopped" else reason)
        self.notifier.close()
        if isinstance(fatal, ProfileError):
            raise fatal  # a profile that does not fit: a configuration problem (exit 78)
        t = self.agg.totals()
        scorer = self.scorer
        if scorer is not None and scorer.phase == "calibrating" and t.frames_processed and reason == "stopped":
            logger.info("stopped during start-up calibration (%d of %d frames): no profile was built",
                        scorer.calibrated, scorer.calibration_target)
        elif scorer is not None and scorer.phase == "calibrating" and t.frames_processed:
            changes = scorer.calibration_size_changes
            logger.warning(
                "exiting (%s) during start-up calibration: %d of the %d calibration frames seen%s, so no profile "
                "was built and no frame got a decision; feed a longer clip (or source.loop), lower "
                "calibration.frames, or set policy.profile to a profile from `edge-guard calibrate`",
                reason, scorer.calibrated, scorer.calibration_target,
                f" for the leading frame size ({changes} size changes: each size is calibrated on its own frames)"
                if changes else "",
            )
        logger.info("exiting (%s): %d frames in, %d processed, %d dropped", reason,
                    t.frames_in, t.frames_processed, t.frames_dropped)
        return code

    def _close_outputs(self, state: CameraState | None, reason: str) -> None:
        """Final health and status (``state`` None: start-up failed, nothing to report), then
        close every sink (flush) and the source."""
        try:
            if state is not None:
                for final in (self._publish_health, lambda: self.reporter.set_camera_state(state, reason)):
                    try:
                        final()
                    except Exception:  # still publish the rest and close (flush) every sink below
                        logger.exception("publishing the final health/status failed")
                        self.agg.error("final_publish")
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception:  # one failing sink must not keep the others from flushing
                    logger.exception("closing sink %s failed", type(sink).__name__)
            if self.source is not None:
                self.source.close()

    # -- helpers -----------------------------------------------------------------------------------
    def _source_state(self) -> str:
        return str(getattr(self.source, "state", "unknown")) if self.source is not None else "unknown"

    def _drift_snapshot(self) -> DriftSnapshot | None:
        return self.scorer.drift_snapshot() if self.scorer is not None else None

    def _model_sha(self) -> str | None:
        return self.model.info.sha256 if self.model is not None else None

    def _profile_ids(self, frame: Frame) -> ProfileIds:
        assert self.stats is not None
        input_wh = self.model.info.input_size_wh if self.model is not None else None
        return ProfileIds(self._model_sha(), frame.size_wh, self.stats.grid, self.config_hash, input_wh)

    def _saved_profile(self, profile: Profile) -> None:
        if self._profile_out is not None:
            try:
                profile.save(self._profile_out)
            except ProfileError as exc:  # only a copy (cmd_run checked the path at start): keep guarding
                logger.error("--profile-out: %s; guarding goes on with the profile in memory (`edge-guard "
                             "calibrate --out` writes one)", exc)
                self.agg.error("profile_save")
            else:
                logger.info("start-up profile %s saved to %s", profile.profile_id, self._profile_out)
        self._log_limits()

    def _log_limits(self) -> None:
        """Log what the guard now flags, in the statistics' units (at start, after start-up
        calibration, a profile reload or new alphas): the journal keeps what the service tolerates."""
        limits = None if self.scorer is None else self.scorer.limits()
        if limits is not None:  # None: still calibrating
            logger.info("guarding with profile %s:\n%s", limits.profile_id, limits.table())
