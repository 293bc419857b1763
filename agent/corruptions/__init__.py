"""Image corruptions for robustness testing: the 15 ImageNet-C types and camera-reality extras.

One library for ``edge-guard stress`` and the detection benchmark (no second copy). Every
corruption is a pure function of (BGR uint8 image, severity 1..5, seed) returning a new BGR
uint8 image of the same shape::

    from agent.corruptions import CORRUPTIONS, corrupt
    foggy = corrupt(image, "fog", severity=3, seed=0)
    for name in IMAGENET_C: ...

Definitions and per-severity parameters: ``registry.markdown_table()`` (docs/field-guide.md).
"""

from __future__ import annotations

from agent.corruptions.registry import (
    CAMERA,
    CORRUPTIONS,
    CORRUPTIONS_VERSION,
    GROUPS,
    IMAGENET_C,
    SEVERITIES,
    Corruption,
    CorruptionFn,
    check_severity,
    corrupt,
    corruption_rng,
    markdown_table,
    resolve,
    resolve_names,
)

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
