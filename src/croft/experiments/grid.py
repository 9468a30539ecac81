"""Method rows and their grids: one :class:`MethodRun` per grid point.

``{label: croft, method: croft, options: {lambda1: 5}, grid: {lambda2: [10, 100]}}``
expands to ``croft[lambda2=10]`` and ``croft[lambda2=100]`` (grid keys sorted, the
Cartesian product in list order). ``croft report`` picks one point per (held-out domain,
seed) on source-validation accuracy.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from croft.errors import CroftError
from croft.experiments.config import MethodGrid


@dataclass(frozen=True)
class MethodRun:
    """A table row: a label, a registered method and its options."""

    label: str
    method: str
    options: Mapping[str, Any] = field(default_factory=dict)


def expand_methods(methods: Sequence[MethodGrid]) -> list[MethodRun]:
    """Every grid point of every row, in row order."""
    runs = []
    for m in methods:
        if not m.grid:
            runs.append(MethodRun(m.label, m.method, dict(m.options)))
            continue
        keys = sorted(m.grid)
        for values in itertools.product(*(m.grid[k] for k in keys)):
            point = dict(zip(keys, values, strict=True))
            tag = ",".join(f"{k}={v}" for k, v in point.items())
            if "/" in tag or "\\" in tag:
                raise CroftError(f"method {m.label}: grid value in {tag!r} holds a path separator")
            runs.append(MethodRun(f"{m.label}[{tag}]", m.method, {**m.options, **point}))
    return runs


def method_config(run: MethodRun, seed: int | None = None) -> Any:
    """The method's config dataclass for this run (``seed`` set when the config has one)."""
    from croft.methods import METHODS, make_config

    spec = METHODS.get(run.method)
    options = dict(run.options)
    if seed is not None and "seed" in spec.config_cls.__dataclass_fields__:
        options = {"seed": seed, **options}
    for key, value in options.items():  # loss weights are never negative
        if key.startswith("lambda") and isinstance(value, (int, float)) and value < 0:
            raise CroftError(f"method {run.label}: {key} must be >= 0, got {value}")
    try:
        return make_config(spec.config_cls, options)
    except CroftError as exc:
        raise CroftError(f"method {run.label}: {exc}") from None


def resolved_options(run: MethodRun, seed: int) -> dict[str, Any]:
    """The full resolved method config of one run, as a JSON-ready dict."""
    return dataclasses.asdict(method_config(run, seed))
