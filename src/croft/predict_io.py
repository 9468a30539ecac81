"""Write predictions (:class:`croft.predict.Prediction`) to a file: CSV or JSON Lines.

The format follows the suffix: ``.csv`` (a header row, then one row per image; pandas reads
``confidence`` and ``energy`` as numbers, ``is_ood`` as ``True``/``False``/empty) or
``.jsonl`` (one JSON object per line, ``is_ood`` and ``threshold`` ``null`` when the head
has no threshold). Columns: source, class_name, class_index, confidence, energy, is_ood,
threshold.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from croft.errors import CroftError
from croft.fileio import atomic_write_text

COLUMNS = ("source", "class_name", "class_index", "confidence", "energy", "is_ood", "threshold")
FORMATS = (".csv", ".jsonl")


def predictions_text(preds: Sequence[Any], fmt: str) -> str:
    """The file contents for ``fmt`` (``csv`` or ``jsonl``)."""
    rows = [p.to_dict() for p in preds]
    if fmt == "jsonl":
        return "".join(
            json.dumps({k: r[k] for k in COLUMNS}, ensure_ascii=False) + "\n" for r in rows
        )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r[k] is None else r[k]) for k in COLUMNS})
    return buf.getvalue()


def write_predictions(preds: Sequence[Any], path: str | os.PathLike[str]) -> Path:
    """Write ``preds`` to ``path`` (``.csv`` or ``.jsonl``), atomically; returns the path."""
    out = Path(path)
    if out.suffix.lower() not in FORMATS:
        raise CroftError(
            f"{out}: unknown prediction file type {out.suffix or '(none)'!r}; "
            "name it .csv or .jsonl"
        )
    if out.is_dir():
        raise CroftError(f"{out} is a directory; pass a file name ending in .csv or .jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, predictions_text(preds, out.suffix.lower()[1:]))
