"""The synthetic camera: ``synthetic://<scenario>?seed=N&size=WxH&fps=F&...``.

A deterministic moving scene (``SyntheticScene``) with camera faults injected on a
schedule (``SyntheticCamera``), delivered as a live source. Scenarios:

- ``clean``: no faults, forever (or ``frames=N``).
- ``default``: the demo. ``clean_s`` seconds clean (default 16 s: calibration), then
  every fault of ``FAULT_NAMES`` in turn for ``fault_s`` seconds (default 2), each
  followed by ``gap_s`` seconds clean (default 2), then the stream ends
  (60 s of frames with the defaults).
- ``custom``: ``faults=blur:50:100,dark:120:160`` (fault:start_frame:end_frame, end
  exclusive); clean elsewhere; forever unless ``frames=N``.

Query keys: ``seed`` (default 0), ``size`` (``WxH``, default 640x360), ``fps``
(default: the config's ``fps``, else 25), ``style`` (``street`` or ``indoor``),
``frames`` (total length), ``clean_s``, ``fault_s``, ``gap_s`` (default scenario),
``faults`` (custom scenario). Frame ``i`` has ``seq == i``, ``fault`` = the injected
fault or None, and ``extra["label"]`` = the class of the object in view.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import get_args
from urllib.parse import parse_qsl, urlsplit

from agent.errors import SourceConfigError
from agent.sources.base import Capture, SourceBase
from agent.sources.config import SourceConfig
from agent.sources.synthetic_faults import SyntheticCamera
from agent.sources.synthetic_scene import SCENE_CLASSES, SceneStyle, SyntheticScene
from agent.sources.synthetic_schedule import (
    FAULT_NAMES,
    FaultSchedule,
    FaultWindow,
    default_schedule,
    parse_fault_windows,
)

__all__ = [
    "FAULT_NAMES",
    "SCENARIOS",
    "SCENE_CLASSES",
    "FaultSchedule",
    "FaultWindow",
    "SyntheticCamera",
    "SyntheticScene",
    "SyntheticSource",
    "SyntheticSpec",
    "parse_synthetic_uri",
]

logger = logging.getLogger(__name__)

SCENARIOS: tuple[str, ...] = ("clean", "default", "custom")
_KEYS = ("seed", "size", "fps", "style", "frames", "clean_s", "fault_s", "gap_s", "faults")
_DEFAULT_FPS = 25.0


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """A parsed ``synthetic://`` URI."""

    scenario: str
    seed: int
    size_wh: tuple[int, int]
    fps: float
    style: SceneStyle
    schedule: FaultSchedule


def _number(uri: str, key: str, value: str, kind: type[int] | type[float], bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    try:
        x = kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise SourceConfigError(f"{uri}: {key} must be {what}, but got {value!r}") from None
    if not lo <= x <= hi:
        raise SourceConfigError(f"{uri}: {key} must be between {lo:g} and {hi:g}, but got {value}")
    return x


def parse_synthetic_uri(uri: str, default_fps: float | None = None) -> SyntheticSpec:
    """Parse and validate a ``synthetic://`` URI; SourceConfigError names the bad part and what is accepted."""
    parts = urlsplit(uri)
    if parts.scheme != "synthetic":
        raise SourceConfigError(f"synthetic source URI must start with synthetic://, but got {uri!r}")
    scenario = (parts.netloc + parts.path).strip("/") or "default"
    if scenario not in SCENARIOS:
        raise SourceConfigError(f"{uri}: scenario must be one of {', '.join(SCENARIOS)}, but got {scenario!r}")
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _KEYS:
            raise SourceConfigError(f"{uri}: unknown query key {key!r}; accepted keys: {', '.join(_KEYS)}")
        if key in query:
            raise SourceConfigError(f"{uri}: query key {key!r} given twice")
        query[key] = value

    seed = int(_number(uri, "seed", query.get("seed", "0"), int, (0, 2**31 - 1)))
    size = query.get("size", "640x360").lower().split("x")
    if len(size) != 2:
        raise SourceConfigError(f"{uri}: size must look like WxH (e.g. 640x360), but got {query['size']!r}")
    w = int(_number(uri, "size width", size[0], int, (32, 8192)))
    h = int(_number(uri, "size height", size[1], int, (32, 8192)))
    fps = _number(uri, "fps", query["fps"], float, (0.1, 1000)) if "fps" in query else (default_fps or _DEFAULT_FPS)
    style = query.get("style", "street")
    if style not in get_args(SceneStyle):
        raise SourceConfigError(f"{uri}: style must be one of {', '.join(get_args(SceneStyle))}, but got {style!r}")
    frames = int(_number(uri, "frames", query["frames"], int, (1, 2**62))) if "frames" in query else None

    timing = {k: _number(uri, k, query[k], float, (0.04, 3600)) for k in ("clean_s", "fault_s", "gap_s") if k in query}
    if scenario != "default" and timing:
        raise SourceConfigError(f"{uri}: {', '.join(timing)} only apply to the default scenario, not {scenario!r}")
    if scenario != "custom" and "faults" in query:
        raise SourceConfigError(f"{uri}: faults= needs the custom scenario (synthetic://custom?faults=...)")

    if scenario == "clean":
        schedule = FaultSchedule([], frames)
    elif scenario == "custom":
        if "faults" not in query:
            raise SourceConfigError(f"{uri}: the custom scenario needs faults=fault:start:end,... (e.g. blur:50:100)")
        schedule = FaultSchedule(parse_fault_windows(query["faults"]), frames)
    else:
        base = default_schedule(
            max(1, round(timing.get("clean_s", 16.0) * fps)),
            max(1, round(timing.get("fault_s", 2.0) * fps)),
            max(1, round(timing.get("gap_s", 2.0) * fps)),
        )
        schedule = FaultSchedule(base.windows, frames if frames is not None else base.total_frames)
    return SyntheticSpec(scenario, seed, (w, h), float(fps), style, schedule)  # type: ignore[arg-type]


class SyntheticSource(SourceBase):
    """A live source rendering ``SyntheticCamera`` frames (as fast as possible unless ``realtime``)."""

    def __init__(self, cfg: SourceConfig, camera_id: str) -> None:
        spec = parse_synthetic_uri(cfg.uri, cfg.fps)
        super().__init__(
            cfg.uri, camera_id, live=True, nominal_fps=spec.fps, realtime=cfg.realtime, max_frames=cfg.max_frames
        )
        self.spec = spec
        self.camera = SyntheticCamera(SyntheticScene(spec.seed, spec.size_wh, style=spec.style), spec.schedule)
        self._index = 0
        self._loop = cfg.loop
        self.passes = 0
        """Completed passes over a looping scenario."""
        logger.info(
            "synthetic camera %s: scenario %s, seed %d, %dx%d at %g fps, %s frames%s, %d fault windows",
            camera_id, spec.scenario, spec.seed, *spec.size_wh, spec.fps,
            spec.schedule.total_frames or "unlimited", " (looped)" if cfg.loop else "", len(spec.schedule),
        )

    @property
    def schedule(self) -> FaultSchedule:
        """The injected faults (frame windows) and the total length of the stream."""
        return self.spec.schedule

    def _next(self) -> Capture | None:
        total = self.spec.schedule.total_frames
        if self._stop.is_set():
            return None
        if total is not None and self._index >= total:
            if not self._loop:
                return None
            self.passes += 1  # the scenario again from its first frame, faults and all
            self._index = 0
        image, label, fault = self.camera.render(self._index)
        self._index += 1
        return Capture(image, fault, {"label": label})

    def _release(self) -> None:
        pass
