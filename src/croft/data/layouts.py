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
from croft.registry import Registry

Reader = Callable[..., "DatasetIndex | None"]

LAYOUTS: Registry[Reader] = Registry("dataset layout")
"""Layout readers by name: ``reader(root, problems, **options) -> DatasetIndex | None``.
A plug-in layout registers with ``LAYOUTS.register("name", "summary")(reader)``."""

for _name, _reader_fn, _summary in (
    ("domainbed", read_domainbed, "DOMAIN/CLASS/image folders (PACS, VLCS, ...)"),
    (
        "oodbench",
        read_oodbench,
        "[images/]DOMAIN/CLASS/ + test_on_DOMAIN.json splits (PACS, VLCS as the paper reads them)",
    ),
    ("coop", read_coop, "CoOp/Dassl datasets with split JSON files"),
    ("imagenet", read_imagenet, "ImageNet and its variants (-V2, -Sketch, -A, -R)"),
    ("folder", read_folder, "CLASS/image folders, one domain"),
):
    LAYOUTS.register(_name, _summary)(_reader_fn)
LAYOUT_NAMES: tuple[str, ...] = ("domainbed", "oodbench", "coop", "imagenet", "folder")


def layout_options(layout: str) -> list[str]:
    """Option names a layout accepts (besides ``verify_images``)."""
    reader = _reader(layout)
    params = list(inspect.signature(reader).parameters.values())[2:]
    return [p.name for p in params] + ["verify_images"]


def _reader(layout: str) -> Reader:
    return LAYOUTS.get(layout)


def _empty_files(index: DatasetIndex, problems: Problems, limit: int = 20) -> None:
    """Without decoding: every missing or zero-byte image is a problem (one ``stat`` each)."""
    bad: list[str] = []
    for rec in index.records:
        path = index.root / rec.path
        try:
            if path.stat().st_size == 0:
                bad.append(f"image {path} is empty (0 bytes); replace or delete it")
        except OSError as exc:
            bad.append(f"image {path} cannot be read ({exc.strerror or exc})")
    for msg in bad[:limit]:
        problems.add(msg)
    if len(bad) > limit:
        problems.add(f"{len(bad) - limit} more empty or unreadable image(s) under {index.root}")


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
        elif index is not None and not raise_first:
            _empty_files(index, problems)
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


def guess_layout(root: str | os.PathLike[str]) -> str:
    """The layout a folder looks like, from its top level only: ``test_on_*.json`` beside
    ``images/`` or domain folders (oodbench), a ``split_zhou_*.json`` in it or one folder down
    (coop), folders of folders (domainbed), folders of files (folder); else a one-line error."""
    from pathlib import Path

    from croft.errors import CroftError

    top = Path(root)
    if not top.is_dir():
        raise CroftError(f"{top} is not a folder; pass the dataset's root folder")
    if (top / "images").is_dir() and any(top.glob("test_on_*.json")):
        return "oodbench"
    if any(top.glob("split_zhou_*.json")) or any(top.glob("*/split_zhou_*.json")):
        return "coop"
    subs = [d for d in sorted(top.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if subs and all(any(x.is_dir() for x in d.iterdir()) for d in subs):
        return "oodbench" if any(top.glob("test_on_*.json")) else "domainbed"
    if subs and all(any(x.is_file() for x in d.iterdir()) for d in subs):
        return "folder"
    raise CroftError(
        f"{top}: cannot tell its layout from the top level; give --layout "
        f"({', '.join(LAYOUT_NAMES)})"
    )
