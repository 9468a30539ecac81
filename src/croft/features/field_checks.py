"""Checks of the values a feature file carries: class names, logit scale, prompt templates.

Each check raises :class:`~croft.errors.CroftError` with one line saying what is wrong and
where. :func:`fill_template` fills a checked template by plain substitution. Used by
:class:`croft.features.files.FeatureSet` (which re-exports every name here), the text
encoder and head files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from croft.errors import CroftError
from croft.limits import check_limit

__all__ = [
    "MIN_LOGIT_SCALE",
    "check_class_names",
    "check_logit_scale",
    "check_templates",
    "fill_template",
]

MIN_LOGIT_SCALE = 1e-3  # below this every softmax is uniform and lr scaling by it explodes


def check_class_names(names: list[str], where: str) -> None:
    """A class list within ``classes`` entries and with no name twice (one line each)."""
    check_limit("classes", len(names), f"{where}: number of classes")
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dup = next(c for c in names if c in seen or seen.add(c))  # type: ignore[func-returns-value]
        raise CroftError(f"{where}: class {dup!r} is listed twice; each class name once")


def check_logit_scale(scale: Any, where: str) -> float:
    """A logit scale (``exp`` applied) in [``MIN_LOGIT_SCALE``, ``logit_scale`` limit]."""
    if (
        not isinstance(scale, (int, float))
        or isinstance(scale, bool)
        or not math.isfinite(scale)
        or scale < MIN_LOGIT_SCALE
    ):
        raise CroftError(
            f"{where} must be a positive number of at least {MIN_LOGIT_SCALE:g} (CLIP: 100), "
            f"got {scale!r:.40}"
        )
    check_limit("logit_scale", scale, where)
    return float(scale)


def check_templates(templates: Sequence[str], where: str = "") -> list[str]:
    """Templates as a list; each must hold exactly one ``{}`` and no other brace (so no
    format field, attribute or index lookup can hide in one). ``where`` prefixes the
    error (a feature file's path)."""
    if isinstance(templates, str):
        templates = [templates]
    out = list(templates)
    pre = f"{where}: " if where else ""
    if not out:
        raise CroftError(
            f"{pre}templates list is empty; pass at least one, e.g. 'a photo of a {{}}.'"
        )
    for t in out:
        rest = str(t).replace("{}", "", 1)
        if not isinstance(t, str) or "{}" not in t or "{" in rest or "}" in rest:
            raise CroftError(
                f"{pre}prompt template {str(t)[:60]!r} must hold exactly one '{{}}' for the "
                "class name and no other braces, e.g. 'a photo of a {}.'"
            )
    return out


def fill_template(template: str, name: str) -> str:
    """``template`` with its one ``{}`` replaced by ``name``: plain substitution, never
    :meth:`str.format` (a template from a file may hold ``{0.__class__...}``)."""
    check_templates([template])
    return template.replace("{}", name, 1)
