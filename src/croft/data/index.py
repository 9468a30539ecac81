"""The dataset index: one record per image (relative path, label, class, domain, split).

An index is what every reader returns and what feature extraction consumes. Paths are
relative to ``DatasetIndex.root`` with POSIX separators, so :meth:`DatasetIndex.hash`
(the dataset manifest hash that feature files record) does not depend on where the
dataset lives on disk.

Saved form (``DatasetIndex.save``), JSON::

    {"schema": "croft.index/1", "name": ..., "root": <root, relative to the JSON file's
     folder where possible>, "class_names": [...], "domain_names": [...],
     "records": [[path, label, class_name, domain, split], ...], "hash": ..., "meta": {...}}
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from croft.errors import CroftError
from croft.fileio import atomic_write_text, canonical_hash, read_json

SCHEMA = "croft.index/1"


@dataclass(frozen=True)
class Record:
    """One image.

    ``path`` is relative to the index root (POSIX separators); ``label`` indexes
    ``class_names`` (``-1`` = unknown class, i.e. open-set OOD); ``split`` is
    ``"train"``, ``"val"``, ``"test"`` or another tag such as ``"all"``.
    """

    path: str
    label: int
    class_name: str
    domain: str
    split: str

    def as_row(self) -> list[Any]:
        """The record as a JSON row ``[path, label, class_name, domain, split]``."""
        return [self.path, self.label, self.class_name, self.domain, self.split]


def _as_set(value: str | int | Iterable[Any] | None) -> set[Any] | None:
    if value is None:
        return None
    if isinstance(value, (str, int)):
        return {value}
    return set(value)


def _check_relpath(path: str, where: str) -> None:
    if not path or "\\" in path or path.startswith("/") or path[1:3] == ":/":
        raise CroftError(
            f"{where}: record path {path!r} must be relative with '/' separators; "
            "store paths relative to the index root"
        )
    if "/../" in f"/{path}/":
        raise CroftError(f"{where}: record path {path!r} leaves the index root ('..')")


@dataclass
class DatasetIndex:
    """Images of one dataset (or a selection of it) with their labels and domains."""

    root: Path
    records: list[Record]
    class_names: list[str]
    domain_names: list[str]
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.records = list(self.records)
        self.class_names = list(self.class_names)
        self.domain_names = list(self.domain_names)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`CroftError` if a record disagrees with the class or domain lists."""
        where = f"dataset index {self.name or str(self.root)!r}"
        if len(set(self.domain_names)) != len(self.domain_names):
            raise CroftError(f"{where}: domain_names has duplicates: {self.domain_names}")
        num_classes = len(self.class_names)
        domains = set(self.domain_names)
        for rec in self.records:
            if not isinstance(rec.label, int) or not -1 <= rec.label < num_classes:
                raise CroftError(
                    f"{where}: record {rec.path!r} has label {rec.label!r}, outside "
                    f"[-1, {num_classes - 1}]; class_names must list every class"
                )
            if rec.label >= 0 and self.class_names[rec.label] != rec.class_name:
                raise CroftError(
                    f"{where}: record {rec.path!r} is labelled {rec.label} "
                    f"({self.class_names[rec.label]!r}) but names class {rec.class_name!r}"
                )
            if rec.domain not in domains:
                raise CroftError(
                    f"{where}: record {rec.path!r} has domain {rec.domain!r}, not in "
                    f"domain_names {self.domain_names}"
                )
            _check_relpath(rec.path, where)

    # --------------------------------------------------------------- accessors
    def __len__(self) -> int:
        return len(self.records)

    def labels(self) -> list[int]:
        """Label of each record (``-1`` = unknown class)."""
        return [r.label for r in self.records]

    def domain_ids(self) -> list[int]:
        """Index into ``domain_names`` of each record."""
        pos = {d: i for i, d in enumerate(self.domain_names)}
        return [pos[r.domain] for r in self.records]

    def abspaths(self) -> list[Path]:
        """Absolute path of each record's image."""
        return [self.root / r.path for r in self.records]

    def counts(self, by: str) -> dict[Any, int]:
        """Number of records per ``"split"``, ``"domain"``, ``"label"`` or ``"class_name"``."""
        if by not in ("split", "domain", "label", "class_name"):
            raise CroftError(f"counts(by={by!r}): use 'split', 'domain', 'label' or 'class_name'")
        return dict(Counter(getattr(r, by) for r in self.records))

    def with_records(self, records: Iterable[Record], **changes: Any) -> DatasetIndex:
        """A copy with other records (same root, classes and domains unless changed)."""
        fields: dict[str, Any] = {
            "root": self.root,
            "records": list(records),
            "class_names": self.class_names,
            "domain_names": self.domain_names,
            "name": self.name,
            "meta": dict(self.meta),
        }
        fields.update(changes)
        return DatasetIndex(**fields)

    def filter(
        self,
        *,
        split: str | Iterable[str] | None = None,
        domains: str | Iterable[str] | None = None,
        labels: int | Iterable[int] | None = None,
    ) -> DatasetIndex:
        """Records matching every given criterion; class and domain lists are kept.

        ``domains`` are domain names; an unknown name raises :class:`CroftError`.
        """
        splits, doms, labs = _as_set(split), _as_set(domains), _as_set(labels)
        if doms is not None:
            unknown = sorted(doms - set(self.domain_names))
            if unknown:
                raise CroftError(
                    f"filter: unknown domain(s) {unknown} in dataset index "
                    f"{self.name or str(self.root)!r}; known: {self.domain_names}"
                )
        kept = [
            r
            for r in self.records
            if (splits is None or r.split in splits)
            and (doms is None or r.domain in doms)
            and (labs is None or r.label in labs)
        ]
        return self.with_records(kept)

    # -------------------------------------------------------------- provenance
    def hash(self) -> str:
        """sha256 of canonical JSON of (class_names, domain_names, records).

        Paths are relative, so the hash does not depend on where the dataset lives;
        ``name``, ``root`` and ``meta`` do not enter it.
        """
        payload = {
            "class_names": self.class_names,
            "domain_names": self.domain_names,
            "records": [r.as_row() for r in self.records],
        }
        return canonical_hash(payload)

    def file_identity(self, *, contents: bool = False) -> str:
        """sha256 over every record's file identity, in record order.

        Default (fast path, one ``stat`` per file: about 2.5 us per image): ``(size,
        mtime_ns, ctime_ns)``. Any write, repair or replacement of a file changes its
        ``ctime``, which user-space tools cannot set back (``cp -p``, ``tar``, ``rsync -a``
        restore ``mtime`` only), so a changed image never keeps its identity; moving or
        touching a file changes it too (extracted again: safe, never stale). With
        ``contents=True`` the sha256 of each file's bytes instead (about 16 us per small
        image; reads every image on every call, also on cache hits; identities then
        survive copies to another machine). A missing file counts as missing; only regular
        files are read (a FIFO or device named ``*.png`` would block or never end) and only
        up to the ``image_file_bytes`` limit, so the loader reports those files instead.
        """
        import hashlib

        digest = hashlib.sha256(b"contents" if contents else b"stat")
        for path in self.abspaths():
            try:
                if contents:
                    item = _content_sha256(path)
                else:
                    st = path.stat()
                    item = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
            except OSError:
                item = "missing"
            digest.update(f"{item}\n".encode())
        return digest.hexdigest()

    # --------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index as JSON (atomically); the root is stored relative to the file."""
        path = Path(path)
        parent = path.parent.resolve()
        root = self.root.resolve()
        try:
            root_text = Path(os.path.relpath(root, parent)).as_posix()
        except ValueError:  # another drive on Windows
            root_text = root.as_posix()
        doc = {
            "schema": SCHEMA,
            "name": self.name,
            "root": root_text,
            "class_names": self.class_names,
            "domain_names": self.domain_names,
            "hash": self.hash(),
            "meta": self.meta,
            "records": [r.as_row() for r in self.records],
        }
        return atomic_write_text(path, json.dumps(doc, ensure_ascii=False) + "\n")

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None
    ) -> DatasetIndex:
        """Read an index saved by :meth:`save`; ``root`` overrides the stored root."""
        path = Path(path)
        doc = read_json(path, "dataset index")
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise CroftError(
                f"{path} is not a croft dataset index (expected schema {SCHEMA!r}); "
                "write it with DatasetIndex.save"
            )
        try:
            records = [
                Record(str(p), int(lab), str(c), str(d), str(s))
                for p, lab, c, d, s in doc["records"]
            ]
            stored_root = Path(doc["root"])
            index = cls(
                root=Path(root) if root is not None else (path.parent / stored_root),
                records=records,
                class_names=[str(c) for c in doc["class_names"]],
                domain_names=[str(d) for d in doc["domain_names"]],
                name=str(doc.get("name", "")),
                meta=dict(doc.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CroftError):
                raise
            raise CroftError(
                f"dataset index {path} is malformed ({type(exc).__name__}: {exc}); "
                "regenerate it with DatasetIndex.save"
            ) from None
        if root is None:
            index.root = Path(os.path.normpath(index.root))
        expected = doc.get("hash")
        if expected and expected != index.hash():
            raise CroftError(
                f"dataset index {path}: content does not match its stored hash (edited by "
                "hand?); regenerate it instead of editing"
            )
        return index


def _content_sha256(path: Path) -> str:
    """sha256 of a regular file's bytes; ``not-a-file`` / ``too-large:<bytes>`` otherwise
    (opened non-blocking and checked after opening, so a FIFO swapped in never blocks)."""
    import hashlib
    import stat

    from croft.limits import limit_value

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            return "not-a-file"
        if st.st_size > limit_value("image_file_bytes"):
            return f"too-large:{st.st_size}"
        h = hashlib.sha256()
        while chunk := fh.read(1 << 20):
            h.update(chunk)
        return h.hexdigest()
