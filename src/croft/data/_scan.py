"""Shared machinery of the layout readers: a problem collector and folder scans."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from croft.data.images import IMAGE_EXTENSIONS, list_images
from croft.errors import CroftError

EXTENSIONS_TEXT = "/".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))


class Stop(Exception):
    """Raised by a reader (in check mode) when a problem makes further checks pointless."""


class Problems:
    """Collects problems (check mode) or raises the first as :class:`CroftError` (read mode)."""

    def __init__(self, raise_first: bool) -> None:
        self.raise_first = raise_first
        self.items: list[str] = []

    def add(self, message: str) -> None:
        """Record a problem; in read mode raise it at once."""
        message = " ".join(message.split())
        if self.raise_first:
            raise CroftError(message)
        self.items.append(message)

    def fatal(self, message: str) -> Stop:
        """Record a problem that ends the scan; ``raise problems.fatal(...)``."""
        self.add(message)
        return Stop(message)


def examples(items: Sequence[str], limit: int = 3) -> str:
    """``'a', 'b', 'c' (+N more)`` for error messages."""
    shown = ", ".join(repr(x) for x in items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def subfolders(folder: Path) -> list[str]:
    """Visible sub-folder names, sorted (as torchvision's ImageFolder sorts classes)."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def loose_images(folder: Path) -> list[str]:
    """Image files directly inside ``folder`` (not in a sub-folder), sorted."""
    from croft.data.images import is_image_file

    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_file() and is_image_file(e.name))


def require_dir(path: Path, what: str, fix: str, problems: Problems) -> None:
    """Stop with a problem unless ``path`` is a folder."""
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise problems.fatal(f"{what} {path} {state}; {fix}")


def scan_class_folders(
    folder: Path, where: str, problems: Problems, *, layout_hint: str
) -> dict[str, list[str]]:
    """``{class_folder: [relpath under folder, ...]}`` for ``folder/<class>/<images...>``.

    Empty class folders and a folder without class folders are problems.
    """
    classes = subfolders(folder)
    if not classes:
        loose = loose_images(folder)
        extra = f" but {len(loose)} loose image(s)" if loose else ""
        problems.add(f"{where} {folder} has no class folders{extra}; expected {layout_hint}")
        return {}
    out: dict[str, list[str]] = {}
    for cls in classes:
        files = list_images(folder / cls)
        if not files:
            problems.add(
                f"class folder {folder / cls} has no images ({EXTENSIONS_TEXT}); add images "
                "or remove the folder"
            )
            continue
        out[cls] = [f"{cls}/{f}" for f in files]
    return out


def norm_name(name: str) -> str:
    """Case- and separator-insensitive form of a class or domain name."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def plural(n: int, word: str, many: str | None = None) -> str:
    """``'1 file'`` / ``'3 files'``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
