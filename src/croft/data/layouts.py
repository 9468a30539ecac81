"""Layout readers: turn a dataset folder into a :class:`~croft.data.index.DatasetIndex`.

``read_layout(root, layout, **options)`` raises the first problem as one
:class:`~croft.errors.CroftError` line; ``check_layout`` returns every problem found
(empty list = fine); ``inspect_layout`` returns both the (possibly partial) index and the
problems. An unknown layout or option is a usage error and always raises.

The layouts and their folder trees are described in :mod:`croft.data`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from croft.data._scan import Problems, Stop
from croft.data.coop import read_coop
from croft.data.folders import read_domainbed, read_folder
from croft.data.imagenet import read_imagenet
from croft.data.images import BadImageError, load_image
from croft.data.index import DatasetIndex
from croft.data.oodbench import read_oodbench
from croft.errors import CroftError

Reader = Callable[..., "DatasetIndex | None"]

READERS: dict[str, Reader] = {
    "domainbed": read_domainbed,
    "oodbench": read_oodbench,
    "coop": read_coop,
    "imagenet": read_imagenet,
    "folder": read_folder,
}
LAYOUT_NAMES: tuple[str, ...] = tuple(READERS)


def layout_options(layout: str) -> list[str]:
    """Option names a layout accepts (besides ``verify_images``)."""
    reader = _reader(layout)
    params = list(inspect.signature(reader).parameters.values())[2:]
    return [p.name for p in params] + ["verify_images"]


def _reader(layout: str) -> Reader:
    if layout not in READERS:
        raise CroftError(f"unknown dataset layout {layout!r}; use one of {', '.join(LAYOUT_NAMES)}")
    return READERS[layout]


def _verify(index: DatasetIndex, problems: Problems, limit: int = 20) -> None:
    bad: list[str] = []
    for rec in index.records:
        try:
            load_image(index.root / rec.path)
        except BadImageError as exc:
            bad.append(str(exc))
    for msg in bad[:limit]:
        problems.add(msg)
    if len(bad) > limit:
        problems.add(f"{len(bad) - limit} more unreadable image(s) under {index.root}")


def inspect_layout(
    root: str | os.PathLike[str], layout: str, *, raise_first: bool = False, **options: Any
) -> tuple[DatasetIndex | None, list[str]]:
    """Read ``root`` as ``layout``: ``(index or None, problems)``.

    With ``verify_images=True`` every image is decoded with :func:`load_image`.
    """
    reader = _reader(layout)
    known = layout_options(layout)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise CroftError(
            f"option(s) {', '.join(unknown)} do not apply to layout {layout!r}; "
            f"its options: {', '.join(known)}"
        )
    verify = bool(options.pop("verify_images", False))
    problems = Problems(raise_first)
    try:
        index = reader(Path(root), problems, **options)
        if verify and index is not None:
            _verify(index, problems)
    except Stop:
        index = None
    return index, problems.items


def read_layout(root: str | os.PathLike[str], layout: str, **options: Any) -> DatasetIndex:
    """Read a dataset folder; the first problem raises :class:`CroftError`."""
    index, _ = inspect_layout(root, layout, raise_first=True, **options)
    assert index is not None  # read mode raises instead of returning None
    return index


def check_layout(root: str | os.PathLike[str], layout: str, **options: Any) -> list[str]:
    """Every problem found in a dataset folder, one line each (empty list = fine)."""
    return inspect_layout(root, layout, **options)[1]
