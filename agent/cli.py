"""The ``edge-guard`` command line.

Errors are translated here, at one boundary: a `GuardError` prints one clear line (no
traceback) and maps to an exit code — configuration problems (bad config, missing model,
mismatched profile) to 78 (EX_CONFIG, which systemd does not restart), a bad value given by a
command-line option (`UsageError`) to 2 as argparse's own errors, everything else to 1.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import logging
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

from agent import __version__, exitcodes
from agent.calibrate_cmd import calibrate_from_config
from agent.config import GuardConfig, Overrides, load_config, referenced_file_errors
from agent.daemon import FATAL_AT_START, Daemon
from agent.demo import add_arguments as add_demo_arguments
from agent.demo import run_demo
from agent.errors import BackendUnavailable, ConfigError, GuardError, ModelError, ProfileError, UsageError
from agent.fsutil import check_output
from agent.logsetup import LEVELS, configure_logging
from agent.scoring.limits import GuardLimits
from agent.scoring.policy import Guard
from agent.scoring.profile import Profile

__all__ = ["OPTIONAL_COMMANDS", "build_parser", "main"]

logger = logging.getLogger(__name__)

#: Subcommands contributed by other modules: registered when the module imports and has add_parser.
OPTIONAL_COMMANDS: tuple[str, ...] = (
    "agent.sinks.mqtt.tail",  # edge-guard tail
    "agent.service",  # edge-guard install-service
    "agent.fieldtools.bench",  # edge-guard bench
    "agent.fieldtools.stress",  # edge-guard stress
    "agent.fieldtools.report",  # edge-guard report
)


Handler = Callable[[argparse.Namespace], int]

_MAIN_EPILOG = """\
examples:
  edge-guard demo                                  synthetic camera with faults, live table
  edge-guard check-config configs/example.yaml     validate a config, list every error
  edge-guard calibrate --config cam1.yaml --frames 600 --out cam1-profile.json
  edge-guard run --config cam1.yaml                the daemon (what systemd runs)
  edge-guard report runs/cam1 --plot cam1.png      what changed since calibration (health over days)

exit codes: 0 ok, 1 runtime failure (restart helps), 2 usage, 78 configuration error
(bad config, missing model or video file, mismatched profile, an output path that cannot be written:
fix the config or the command, restarting will not help).
Any config value can be overridden from the environment: EDGE_GUARD_<SECTION>__<FIELD>,
e.g. EDGE_GUARD_POLICY__ALPHA_FLAG=0.005 (lists as JSON: EDGE_GUARD_STATS__GRID='[4, 4]').
"""


def _config_overrides(args: argparse.Namespace) -> Overrides:
    """The config values run's and calibrate's options set, each with its option (named in errors)."""
    overrides = Overrides()
    if getattr(args, "max_frames", None) is not None:
        overrides.set("source.max_frames", args.max_frames, "--max-frames")
    if getattr(args, "source", None) is not None:
        overrides.set("source.uri", args.source, "--source")
    if args.command == "calibrate" and args.frames is not None:
        overrides.set("calibration.frames", args.frames, "--frames")
    return overrides


def _load(args: argparse.Namespace) -> GuardConfig:
    cfg = load_config(args.config, _config_overrides(args))
    configure_logging(args.log_level or cfg.logging.level, cfg.camera_id)
    return cfg


# -- check-config ------------------------------------------------------------------------------------
def config_summary(cfg: GuardConfig) -> str:
    """One line saying what a config will do."""
    model = "disabled" if not cfg.model.enabled else (str(cfg.model.path) if cfg.model.path else "reference model")
    profile = (
        str(cfg.policy.profile)
        if cfg.policy.profile
        else f"calibrate at start-up on {cfg.calibration.frames} frames"
    )
    sink = f"mqtt {cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt is not None else f"files in {cfg.file_sink.dir}"
    return (
        f"camera {cfg.camera_id} (site {cfg.site}, node {cfg.node}); source {cfg.source.uri}; "
        f"model {model}; stats {cfg.stats.backend} grid {cfg.stats.grid[0]}x{cfg.stats.grid[1]}; "
        f"profile {profile}; alpha flag {cfg.policy.alpha_flag:g} block {cfg.policy.alpha_block:g}; {sink}"
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(f"INVALID: {exc}", file=sys.stdout)
        return exitcodes.CONFIG
    profile: list[Profile] = []
    nothing_decided = cfg.start_up_calibration_error()  # run refuses it at start
    problems = [nothing_decided] if nothing_decided is not None else []
    problems += referenced_file_errors(cfg) or model_and_profile_errors(cfg, profile)
    if problems:
        print(f"INVALID: {len(problems)} config error(s) in {args.file}:")
        for line in problems:
            print(f"  - {line}")
        return exitcodes.CONFIG
    print(f"OK: {config_summary(cfg)}")
    if profile:  # what this policy flags with that profile (the policy may differ from calibration's)
        try:
            guard = Guard(profile[0], cfg.policy)
        except ConfigError as exc:  # policy.disabled_reasons leaves no test of the profile
            print(f"INVALID: {exc}")
            return exitcodes.CONFIG
        print(GuardLimits.of(guard).table())
    return exitcodes.OK


def model_and_profile_errors(cfg: GuardConfig, loaded: list[Profile] | None = None) -> list[str]:
    """What ``run`` would refuse at start about the model and the profile: the model is opened
    with ONNX Runtime on the CPU (an ONNX file, its input size and outputs as declared, the labels);
    the profile is loaded and matched with that model (its file's sha256) and the tile grid, and
    appended to ``loaded`` when it matches.
    TensorRT engines are not built here, and a ``runtime: tensorrt`` model (which may use plugin
    ops ONNX Runtime lacks) or an install without onnxruntime is only matched by its sha256."""
    from agent.model.factory import effective_model_config, load_model  # noqa: PLC0415
    from agent.model.onnx_runner import file_sha256  # noqa: PLC0415
    from agent.pipeline import load_profile  # noqa: PLC0415

    sha: str | None = None
    try:
        if cfg.model.enabled and cfg.model.runtime == "onnxruntime":
            runner = load_model(cfg.model.model_copy(update={"providers": ["cpu"]}))
            sha = runner.info.sha256 if runner is not None else None  # the runner hashed the file
    except BackendUnavailable as exc:
        logger.warning("check-config: the model was not opened (%s); only its sha256 is matched", exc)
    except (ModelError, OSError) as exc:
        return [f"model: {exc}"]
    if cfg.model.enabled and sha is None:  # not opened here: hash the file itself
        try:
            path = effective_model_config(cfg.model).config.path
            sha = file_sha256(path) if path is not None else None
        except (ModelError, OSError) as exc:
            return [f"model: {exc}"]
    if cfg.policy.profile is None:
        return []
    try:
        profile = load_profile(cfg.policy.profile, sha, cfg.stats.grid)
    except ProfileError as exc:
        return [f"policy.profile: {exc}"]
    if loaded is not None:
        loaded.append(profile)
    return []


# -- run --------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    # The systemd watchdog kills a wedged agent with SIGABRT (WatchdogSignal= default): dump every
    # thread's Python stack to stderr first, so the journal shows where it hung.
    faulthandler.enable()
    cfg = _load(args)
    nothing_decided = cfg.start_up_calibration_error()
    if nothing_decided is not None:
        raise ConfigError(nothing_decided)
    if args.profile_out is not None:
        check_output(args.profile_out, "--profile-out", inputs=[args.config, *cfg.input_files()])
        if cfg.policy.profile is not None:
            logger.warning("--profile-out %s is ignored: policy.profile %s is set, so nothing is calibrated at "
                           "start-up (set policy.profile to null to calibrate and save)", args.profile_out,
                           cfg.policy.profile)
    daemon = Daemon(cfg, config_path=args.config, overrides=_config_overrides(args), profile_out=args.profile_out)
    return daemon.run()


# -- calibrate --------------------------------------------------------------------------------------
def cmd_calibrate(args: argparse.Namespace) -> int:
    cfg = _load(args)
    out = args.out or cfg.policy.profile or Path("profile.json")
    # The profile may replace policy.profile's file (that is the default); never another input.
    check_output(out, "--out", inputs=[args.config, *(f for f in cfg.input_files() if f != cfg.policy.profile)])
    result = calibrate_from_config(cfg, out, progress=not args.no_progress)
    print(result.summary())
    return exitcodes.OK


# -- demo -------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    configure_logging(args.log_level or "WARNING", "demo")
    return run_demo(args)


# -- parser -----------------------------------------------------------------------------------------
def _sub(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, func: Handler, help_: str, epilog: str
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name, help=help_, description=help_[0].upper() + help_[1:] + ".",
        epilog=textwrap.dedent(epilog), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The full parser, including optional subcommands whose modules are installed."""
    parser = argparse.ArgumentParser(
        prog="edge-guard",
        description="On-device guard for camera vision models: checks every frame (statistics, model "
        "output) against a calibrated baseline and decides PASS / FLAG / BLOCK with reasons.",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edge-guard {__version__}")
    parser.add_argument("--log-level", choices=LEVELS, default=None,
                        help="log level on stderr (default: the config's logging.level; WARNING for demo)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _sub(sub, "check-config", cmd_check_config, "validate a config file and list every error",
             """\
             examples:
               edge-guard check-config /etc/edge-guard/cam1.yaml
               EDGE_GUARD_POLICY__ALPHA_FLAG=0.005 edge-guard check-config cam1.yaml

             Prints "OK: <summary>" (exit 0) or every error with its field path (exit 78); a value
             from an EDGE_GUARD_* variable is named with it. A source.max_frames that ends the source
             before start-up calibration does (no policy.profile) is an error, as in run.
             Files the config names (model.path, model.labels, policy.profile) must exist; then the
             model is opened on the CPU (an ONNX file whose input size, outputs and labels match the
             config) and the profile is loaded and matched with that model and the tile grid, as run
             does at start. TensorRT engines are not built, the source is not opened.
             """)
    p.add_argument("file", type=Path, help="YAML config file")

    p = _sub(sub, "run", cmd_run, "run the guard daemon for one camera",
             """\
             examples:
               edge-guard run --config /etc/edge-guard/cam1.yaml
               edge-guard run --config cam1.yaml --max-frames 500     stop after 500 frames

             SIGINT/SIGTERM: stop reading, drain, flush outputs, exit 0.
             SIGHUP: re-read the config; policy alphas, health.interval_s and logging.level apply
             live, other changes are logged as needing a restart; an invalid file is rejected.
             Without policy.profile it calibrates on the first calibration.frames frames first.
             """)
    p.add_argument("--config", type=Path, required=True, help="YAML config file")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames (source.max_frames)")
    p.add_argument("--source", default=None, help="override source.uri")
    p.add_argument("--profile-out", type=Path, default=None,
                   help="save the start-up profile here (when calibrating at start-up)")

    p = _sub(sub, "calibrate", cmd_calibrate, "build a baseline profile from clean frames",
             """\
             examples:
               edge-guard calibrate --config cam1.yaml --frames 600 --out cam1-profile.json
               edge-guard calibrate --config cam1.yaml --source clean-recording.mp4

             Point it at footage of the camera in normal conditions (no faults), minutes of its
             usual variety (light, traffic), not seconds. Then set policy.profile to the written
             file. The profile records the model's sha256, the frame size and the tile grid; using
             it with another model or camera is an error.

             The summary says how many independent scene states the frames held, and what each
             test will flag on its own in the statistics' units ("dark: mean luma below 106",
             beside the calibration's 118 .. 124): if the camera's day goes beyond a limit,
             calibrate on footage that shows it. check-config prints the same table later.
             """)
    p.add_argument("--config", type=Path, required=True, help="YAML config file")
    p.add_argument("--frames", type=int, default=None, help="frames to use (default calibration.frames)")
    p.add_argument("--out", type=Path, default=None, help="profile file (default policy.profile or profile.json)")
    p.add_argument("--source", default=None, help="override source.uri")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    p = _sub(sub, "demo", cmd_demo, "watch edge-guard guard a synthetic camera (or a video)",
             """\
             examples:
               edge-guard demo                        synthetic camera, faults injected on a schedule
               edge-guard demo --source ../shared/data/videos/opencv_vtest.avi
               edge-guard demo --frames 600 --no-live

             It calibrates on the first clean frames, then guards the rest with a live table,
             and ends with each injected fault's detection rate and the clean false-alarm rate.
             """)
    add_demo_arguments(p)

    for module_name in OPTIONAL_COMMANDS:
        _register_optional(sub, module_name)
    return parser


def _register_optional(sub: argparse._SubParsersAction[argparse.ArgumentParser], module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # Not built yet, or an optional dependency is missing: the command is simply not listed.
        logger.debug("optional command module %s not available: %s", module_name, exc)
        return
    add_parser = getattr(module, "add_parser", None)
    if callable(add_parser):
        add_parser(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edge-guard`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return exitcodes.USAGE
    # Until a config names the camera and level (run, calibrate), log warnings and errors.
    configure_logging(args.log_level or "WARNING", "-")
    try:
        return int(func(args))
    except UsageError as exc:  # a command-line option's value: as argparse's own errors
        print(f"edge-guard: error: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    except FATAL_AT_START as exc:  # ConfigError, ModelError, ProfileError: restarting will not help
        print(f"edge-guard: error: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    except GuardError as exc:
        print(f"edge-guard: error: {exc}", file=sys.stderr)
        return exitcodes.FAILURE
    except KeyboardInterrupt:
        print("edge-guard: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
