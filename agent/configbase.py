"""Base class for every config section (unknown keys are errors, fields are described), and the
YAML reader every config-like file goes through (a key given twice is an error)."""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

__all__ = ["StrictModel", "load_yaml"]


class StrictModel(BaseModel):
    """A config section: unknown keys rejected, values validated on assignment too, and no
    ``true``/``false`` where a number is expected (pydantic would read them as 1 and 0)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _bool_for_number(field.annotation, value):
            raise PydanticCustomError("number_type", "Input should be a number, not true/false")
        return value


def _bool_for_number(annotation: Any, value: Any) -> bool:
    """True when ``value`` holds a bool where ``annotation`` admits only numbers: an int or float field
    (also optional), or the items of a list, tuple or mapping of them."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return len(members) == 1 and _bool_for_number(members[0], value)
    if annotation in (int, float):
        return isinstance(value, bool)
    if origin in (list, tuple, set, frozenset) and isinstance(value, list | tuple):
        items = {a for a in get_args(annotation) if a is not Ellipsis}
        return len(items) == 1 and any(_bool_for_number(next(iter(items)), v) for v in value)
    if origin is dict and isinstance(value, dict):
        return any(_bool_for_number(get_args(annotation)[1], v) for v in value.values())
    return False


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
