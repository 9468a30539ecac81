"""Small file helpers shared by the data layer (atomic JSON writes, JSON reads)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from croft.errors import CroftError


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A reader never sees a half-written file; an interrupted write leaves the old file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file; a missing or malformed file raises one :class:`CroftError` line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CroftError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise CroftError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CroftError(
            f"{what} {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "restore or regenerate the file"
        ) from None
