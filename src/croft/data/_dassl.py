"""Dassl / CoOp split files.

Format: ``{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from croft.data._scan import Problems, examples, plural
from croft.errors import CroftError
from croft.fileio import read_json

SPLIT_KEYS = ("train", "val", "test")


class Row(NamedTuple):
    """One split-file entry."""

    split: str
    relpath: str
    label: int
    class_name: str


def bad_relpath(rel: str) -> bool:
    """True unless ``rel`` is a relative POSIX path with at least a folder and a file."""
    p = PurePosixPath(rel)
    return not rel or "\\" in rel or p.is_absolute() or ".." in p.parts or len(p.parts) < 2


def parse_split_file(path: Path, problems: Problems, fix: str) -> tuple[list[Row], list[str]]:
    """Rows and class names (label order) of a split file.

    Structural errors stop the scan; malformed entries and label/name conflicts are
    reported, and the conflicting rows dropped (check mode).
    """
    try:
        doc = read_json(path, "split file")
    except CroftError as exc:
        raise problems.fatal(f"{exc}; {fix}") from None
    if not isinstance(doc, dict) or any(not isinstance(doc.get(k), list) for k in SPLIT_KEYS):
        missing = [k for k in SPLIT_KEYS if not isinstance(doc, dict) or k not in doc]
        raise problems.fatal(
            f"split file {path} must be a JSON object with lists 'train', 'val' and 'test' "
            f"(Dassl format){'; missing ' + ', '.join(missing) if missing else ''}; {fix}"
        )
    rows: list[Row] = []
    malformed: list[str] = []
    for split in SPLIT_KEYS:
        for item in doc[split]:
            if (
                isinstance(item, list)
                and len(item) == 3
                and isinstance(item[0], str)
                and isinstance(item[1], int)
                and not isinstance(item[1], bool)
                and item[1] >= 0
                and isinstance(item[2], str)
                and not bad_relpath(item[0])
            ):
                rows.append(Row(split, item[0], item[1], item[2]))
            else:
                malformed.append(json.dumps(item)[:80])
    if malformed:
        problems.add(
            f"{plural(len(malformed), 'malformed entry', 'malformed entries')} in split file "
            f"{path} (e.g. {examples(malformed, 2)}); each must be [relpath with '/', "
            f"label >= 0, classname]; {fix}"
        )
    names_of: dict[int, list[str]] = defaultdict(list)
    labels_of: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row.class_name not in names_of[row.label]:
            names_of[row.label].append(row.class_name)
        if row.label not in labels_of[row.class_name]:
            labels_of[row.class_name].append(row.label)
    for label, names in sorted(names_of.items()):
        if len(names) > 1:
            problems.add(
                f"split file {path}: label {label} names several classes {names}; each label "
                f"must have one class name; {fix}"
            )
    for name, labels in sorted(labels_of.items()):
        if len(labels) > 1:
            problems.add(
                f"split file {path}: class {name!r} has several labels {sorted(labels)}; each "
                f"class must have one label; {fix}"
            )
    num_classes = max(names_of) + 1 if names_of else 0
    gaps = [i for i in range(num_classes) if i not in names_of]
    if gaps:
        problems.add(
            f"split file {path}: no entry has label(s) {gaps[:10]}; labels must run "
            f"0..{num_classes - 1} without gaps; {fix}"
        )
    if not rows:
        raise problems.fatal(f"split file {path} lists no images; {fix}")
    class_names = [names_of[i][0] if i in names_of else f"<label {i}>" for i in range(num_classes)]
    consistent = [r for r in rows if class_names[r.label] == r.class_name]
    return consistent, class_names


def report_missing(
    missing: list[str], path: Path, images: Path, problems: Problems, fix: str
) -> None:
    """One problem line for every relpath of a split file that is not a file under ``images``."""
    if missing:
        problems.add(
            f"{plural(len(missing), 'relpath')} in split file {path} "
            f"{'does' if len(missing) == 1 else 'do'} not exist under "
            f"{images} (e.g. {examples(missing)}); {fix}"
        )


def report_mismatched(
    mismatched: dict[tuple[str, str], int], path: Path, problems: Problems, fix: str
) -> None:
    """One problem line for class names that disagree with the class folder of their path."""
    if mismatched:
        pairs = ", ".join(
            f"{name!r} in folder {folder!r} ({n}x)"
            for (name, folder), n in sorted(mismatched.items())
        )
        problems.add(
            f"class names in split file {path} disagree with their folders: {pairs}; {fix}"
        )
