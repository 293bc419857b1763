"""Base class for every config section (unknown keys are errors, fields are described), and the
YAML reader every config-like file goes through (a key given twice is an error)."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel", "load_yaml"]


class StrictModel(BaseModel):
    """A config section: unknown keys rejected, values validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice: PyYAML keeps the last one silently, so a
    pasted second ``camera_id:`` or ``policy:`` section would quietly win."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor': flattened by construct_mapping
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = key in first
        except TypeError:  # an unhashable key: SafeConstructor reports it below
            continue
        if seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"key {key!r} given twice (first on line {first[key] + 1}); keep one", key_node.start_mark,
            )
        first[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that raises a ``yaml.YAMLError`` (with the line) for a duplicate key."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
