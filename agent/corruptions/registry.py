"""The corruption registry: names, families, documented per-severity parameters, one entry point.

``CORRUPTIONS[name](image, severity, seed)`` returns a corrupted copy. Results depend only on
(image, name, severity, seed): the random generator is derived from the name and the seed, so
a sweep can be repeated exactly, a result does not depend on what ran before, and the five
severities of one image share their random draws (common random numbers).
``CORRUPTIONS_VERSION`` is bumped whenever a definition or a parameter changes, and reports
record it, so that robustness numbers from different versions are never compared silently.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agent.corruptions import camera, imagenet_c, weather
from agent.corruptions._common import U8
from agent.frame import validate_bgr

__all__ = [
    "CAMERA",
    "CORRUPTIONS",
    "CORRUPTIONS_VERSION",
    "GROUPS",
    "IMAGENET_C",
    "SEVERITIES",
    "Corruption",
    "CorruptionFn",
    "check_severity",
    "corrupt",
    "corruption_rng",
    "markdown_table",
    "resolve",
    "resolve_names",
]

#: Bump on any change of a corruption's definition or parameters (reports record it).
CORRUPTIONS_VERSION: int = 1
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

CorruptionFn = Callable[[U8, int, np.random.Generator], U8]
Seed = int | Sequence[int] | np.random.Generator


def check_severity(severity: object) -> int:
    """``severity`` as an int if it is one of SEVERITIES, else ValueError saying what is allowed."""
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or int(severity) not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, but got {severity!r}")
    return int(severity)


def corruption_rng(name: str, seed: int | Sequence[int] = 0) -> np.random.Generator:
    """The generator for (name, seed): one stream per corruption type and seed.

    The severity is deliberately not mixed in: all five severities of one (image, seed) draw
    the same random numbers (the same noise pattern, blob position, fog map, ...), so a sweep
    compares severities and nothing else, and the curves are monotone wherever the
    parameters are.
    """
    seeds = [seed] if isinstance(seed, int | np.integer) else list(seed)
    if not seeds or any(int(s) < 0 for s in seeds):
        raise ValueError(f"seed must be a non-negative integer or a non-empty sequence of them, but got {seed!r}")
    return np.random.default_rng([*(int(s) for s in seeds), zlib.crc32(name.encode())])


@dataclass(frozen=True, slots=True)
class Corruption:
    """One corruption type: a pure function plus what its five severities mean."""

    name: str
    family: str
    origin: str
    fn: CorruptionFn
    parameter: str
    levels: tuple[str, str, str, str, str]
    note: str = ""

    def __call__(self, image: U8, severity: int, seed: Seed = 0) -> U8:
        """A corrupted copy of the BGR uint8 ``image`` (same shape and dtype).

        ``seed`` is an int (or a sequence of ints, e.g. (run_seed, image_index)) from which the
        generator is derived together with the name and severity, or a Generator to use as is.
        """
        validate_bgr(image)
        sev = check_severity(severity)
        rng = seed if isinstance(seed, np.random.Generator) else corruption_rng(self.name, seed)
        out = self.fn(np.ascontiguousarray(image), sev, rng)
        if out.shape != image.shape or out.dtype != np.uint8:
            raise AssertionError(  # a bug in the corruption, not a user error
                f"corruption {self.name} returned {out.dtype} {out.shape}, expected uint8 {image.shape}"
            )
        return out


def _fmt(values: Sequence[object]) -> tuple[str, str, str, str, str]:
    def one(v: object) -> str:
        if isinstance(v, tuple):
            return "(" + ", ".join(one(e) for e in v) + ")"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    out = tuple(one(v) for v in values)
    if len(out) != 5:
        raise ValueError(f"expected 5 severity levels, got {len(out)}")
    return out[0], out[1], out[2], out[3], out[4]


def _zoom_levels() -> tuple[str, str, str, str, str]:
    return _fmt([f"{a:g}..{np.arange(a, b, s)[-1]:.2f} step {s:g}" for a, b, s in imagenet_c.ZOOM_BLUR])


_IC = "imagenet-c"
_CAM = "camera"
_ENTRIES: tuple[Corruption, ...] = (
    Corruption("gaussian_noise", "noise", _IC, imagenet_c.gaussian_noise, "sigma (0..1 scale)",
               _fmt(imagenet_c.GAUSSIAN_NOISE)),
    Corruption("shot_noise", "noise", _IC, imagenet_c.shot_noise, "photons at full scale",
               _fmt(imagenet_c.SHOT_NOISE)),
    Corruption("impulse_noise", "noise", _IC, imagenet_c.impulse_noise, "salt-and-pepper share",
               _fmt(imagenet_c.IMPULSE_NOISE)),
    Corruption("defocus_blur", "blur", _IC, imagenet_c.defocus_blur, "(disk radius px, alias sigma)",
               _fmt(imagenet_c.DEFOCUS_BLUR)),
    Corruption("glass_blur", "blur", _IC, imagenet_c.glass_blur, "(sigma, max shift px, iterations)",
               _fmt(imagenet_c.GLASS_BLUR), note="vectorised shuffling: same moves, different visiting order"),
    Corruption("motion_blur", "blur", _IC, imagenet_c.motion_blur_corruption, "(radius px, sigma), angle U(-45, 45)",
               _fmt(imagenet_c.MOTION_BLUR), note="imagecorruptions' shifted-sum blur as one filter2D kernel"),
    Corruption("zoom_blur", "blur", _IC, imagenet_c.zoom_blur, "zoom factors", _zoom_levels()),
    Corruption("snow", "weather", _IC, weather.snow,
               "(mean, std, zoom, threshold, radius, sigma, image weight)", _fmt(weather.SNOW)),
    Corruption("frost", "weather", _IC, weather.frost, "(image weight, frost weight)", _fmt(weather.FROST),
               note="procedural frost texture instead of the reference's six frost photographs"),
    Corruption("fog", "weather", _IC, weather.fog, "(strength, plasma decay)", _fmt(weather.FOG)),
    Corruption("brightness", "digital", _IC, imagenet_c.brightness, "added to HSV value (0..1)",
               _fmt(imagenet_c.BRIGHTNESS)),
    Corruption("contrast", "digital", _IC, imagenet_c.contrast, "contrast factor", _fmt(imagenet_c.CONTRAST)),
    Corruption("elastic_transform", "digital", _IC, imagenet_c.elastic_transform,
               "alpha (sigma 1% of side, shift +-0.5% of height)", _fmt(imagenet_c.ELASTIC_ALPHA)),
    Corruption("pixelate", "digital", _IC, imagenet_c.pixelate, "downscale factor", _fmt(imagenet_c.PIXELATE)),
    Corruption("jpeg_compression", "digital", _IC, imagenet_c.jpeg_compression, "JPEG quality",
               _fmt(imagenet_c.JPEG_QUALITY), note="OpenCV's libjpeg instead of PIL's"),
    Corruption("underexposure", "camera", _CAM, camera.underexposure, "exposure -EV (linear light)",
               _fmt(camera.UNDEREXPOSURE_EV)),
    Corruption("color_cast", "camera", _CAM, camera.color_cast, "gain 1 +- s (warm/cool/green)",
               _fmt(camera.COLOR_CAST)),
    Corruption("glare", "camera", _CAM, camera.glare, "(blob sigma/short side, peak, veil)", _fmt(camera.GLARE)),
    Corruption("occlusion", "camera", _CAM, camera.occlusion, "(rectangles, share covered)",
               _fmt(camera.OCCLUSION)),
    Corruption("haze", "camera", _CAM, camera.haze, "transmission t", _fmt(camera.HAZE)),
    Corruption("jpeg_camera", "camera", _CAM, camera.jpeg_camera, "JPEG quality", _fmt(camera.JPEG_CAMERA)),
)

#: Every corruption by name.
CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in _ENTRIES}
#: The 15 ImageNet-C types in the paper's order.
IMAGENET_C: tuple[str, ...] = tuple(c.name for c in _ENTRIES if c.origin == _IC)
#: What a mounted camera meets: the default set of ``edge-guard stress``.
CAMERA: tuple[str, ...] = (
    "gaussian_noise", "jpeg_camera", "brightness", "underexposure", "contrast", "color_cast",
    "defocus_blur", "motion_blur", "fog", "haze", "glare", "occlusion",
)
GROUPS: dict[str, tuple[str, ...]] = {"camera": CAMERA, "imagenet-c": IMAGENET_C, "all": tuple(CORRUPTIONS)}


def corrupt(image: U8, name: str, severity: int, seed: Seed = 0) -> U8:
    """``CORRUPTIONS[name](image, severity, seed)`` with a clear error for an unknown name."""
    return resolve(name)(image, severity, seed)


def resolve(name: str) -> Corruption:
    """The Corruption called ``name``; ValueError listing the known names otherwise."""
    try:
        return CORRUPTIONS[name]
    except KeyError:
        raise ValueError(f"unknown corruption {name!r}; expected one of {', '.join(CORRUPTIONS)}") from None


def resolve_names(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Expand ``"camera"``, ``"imagenet-c"``, ``"all"`` or ``"a,b,c"`` to corruption names (order kept, no repeats)."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise ValueError(f"no corruption named; give names or one of the groups {', '.join(GROUPS)}")
    names: list[str] = []
    for item in items:
        for name in GROUPS.get(item, (item,)):
            resolve(name)
            if name not in names:
                names.append(name)
    return tuple(names)


def markdown_table() -> str:
    """The corruption table of docs/field-guide.md (a test checks the doc is current)."""
    head = "| name | family | origin | parameter | 1 | 2 | 3 | 4 | 5 |\n|---|---|---|---|---|---|---|---|---|\n"
    rows = [
        f"| `{c.name}` | {c.family} | {c.origin} | {c.parameter} | " + " | ".join(c.levels) + " |"
        for c in _ENTRIES
    ]
    return head + "\n".join(rows) + "\n"
