"""Typed build: YAML-shaped dicts into dataclasses, every value checked against its field's
annotation with a one-line error naming the key (ints widened to floats, finite floats
only, nested dataclasses and lists built recursively). Used by the experiment configs
(:mod:`croft.experiments.config`) and every protocol's config class.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from croft.errors import CroftError

__all__ = ["build", "convert"]


def build(cls: type, data: Any, where: str) -> Any:
    """``cls(**data)`` with every value checked against its annotation (one-line errors)."""
    if not isinstance(data, dict):
        raise CroftError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CroftError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = convert(value, hints[key], f"{where}: {key}")
    missing = [
        k
        for k, f in fields.items()
        if k not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise CroftError(f"{where}: the key {missing[0]!r} is required")
    return cls(**kwargs)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}s"
    if origin is dict:
        return "a mapping"
    names = {int: "integer", float: "number", str: "string", bool: "boolean"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked (and ints widened to floats) against a type annotation."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise CroftError(f"{where} must be {_type_name(hint)}, got {value!r}")
        (inner,) = typing.get_args(hint)
        return [convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise CroftError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    ok = (
        (hint is bool and isinstance(value, bool))
        or (hint is int and isinstance(value, int) and not isinstance(value, bool))
        or (hint is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (hint is str and isinstance(value, str))
    )
    if hint is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # e.g. ar_protocol: 200
    if not ok:
        raise CroftError(
            f"{where} must be {'an' if hint is int else 'a'} {_type_name(hint)}, got {value!r}"
        )
    if hint is float and not math.isfinite(value):
        raise CroftError(f"{where} must be a finite number, got {value!r}")
    return float(value) if hint is float else value
