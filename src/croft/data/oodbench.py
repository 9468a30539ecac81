"""PACS / VLCS as the paper's code reads them (OoD-Bench images + Dassl split files).

Tree::

    root/
      images/<domain>/<class>/<image>       e.g. images/art_painting/dog/pic_001.jpg
      test_on_<domain>.json                 one per held-out domain (name lower-cased)

or the same without ``images/`` (``root/<domain>/<class>/<image>``, a DomainBed tree with
its split files beside the domain folders): the image folder is ``root/images`` when it
exists, else ``root`` (:func:`image_folder`). ``test_on_<d>.json`` is Dassl's split format
``{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}`` with
``relpath`` relative to the image folder: ``test`` = the held-out domain ``d``, ``train`` /
``val`` = the other domains. The domain of a record is the first component of its
``relpath``, matched to the folders under ``images/`` **case-insensitively** (the authors'
lower-case substring test misses upper-case VLCS folders, bug B12).

The authors' json files are not public; :func:`generate_lodo_splits` rebuilds them:
every image of the source domains goes to ``train`` or ``val`` (``val_fraction`` of each
(domain, class) group, rounded half up, at least one image left for ``train``), the
held-out domain goes to ``test``. The train/val assignment of an image depends only on
``(seed, domain, class)``, so it is the same in every ``test_on_*.json``.

Ids such as B8 or D7 name behaviours of the authors' code; docs/deviations.md defines them.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from pathlib import Path, PurePosixPath

from croft.data._dassl import SPLIT_KEYS, parse_split_file, report_mismatched, report_missing
from croft.data._scan import Problems, Stop, norm_name, plural, require_dir, subfolders
from croft.data.folders import read_domainbed
from croft.data.index import DatasetIndex, Record
from croft.errors import CroftError
from croft.fileio import atomic_write_text

_SPLITS_FIX = "create it with `croft data splits ROOT` (croft.data.generate_lodo_splits)"
_REGEN_FIX = "regenerate the split files with `croft data splits ROOT --overwrite`"


def image_folder(root: Path) -> Path:
    """The folder holding ``<domain>/<class>/<image>``: ``root/images`` if it is a folder,
    else ``root`` itself (a DomainBed-shaped tree)."""
    images = root / "images"
    return images if images.is_dir() else root


def split_file_name(domain: str) -> str:
    """File name of the split that holds out ``domain``: ``test_on_<domain lower>.json``."""
    return f"test_on_{domain.lower()}.json"


def find_split_file(root: Path, domain: str) -> Path | None:
    """The ``test_on_<domain>.json`` in ``root``, matched case-insensitively."""
    exact = root / split_file_name(domain)
    if exact.is_file():
        return exact
    want = split_file_name(domain)
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if entry.name.lower() == want and entry.is_file():
                return entry
    return None


def _domain_folders(images: Path, problems: Problems) -> dict[str, str]:
    folders = subfolders(images)
    if not folders:
        raise problems.fatal(
            f"image folder {images} has no domain folders; expected "
            "root/[images/]<domain>/<class>/<image>"
        )
    dmap: dict[str, str] = {}
    for d in folders:
        if d.lower() in dmap:
            problems.add(
                f"domain folders {dmap[d.lower()]!r} and {d!r} in {images} differ only in case; "
                "merge or rename one of them"
            )
            continue
        dmap[d.lower()] = d
    return dmap


def _read_split_file(
    root: Path,
    images: Path,
    domain: str,
    dmap: dict[str, str],
    problems: Problems,
    strict_names: bool,
) -> DatasetIndex:
    path = find_split_file(root, domain)
    if path is None:
        raise problems.fatal(
            f"split file {root / split_file_name(domain)} not found (held-out domain "
            f"{domain!r}); {_SPLITS_FIX}"
        )
    rows, class_names = parse_split_file(path, problems, _REGEN_FIX)
    unknown_dom: set[str] = set()
    n_unknown = 0
    missing: list[str] = []
    mismatched: dict[tuple[str, str], int] = defaultdict(int)
    wrong_side: dict[str, int] = defaultdict(int)
    records: list[Record] = []
    for row in rows:
        first, folder = PurePosixPath(row.relpath).parts[:2]
        dom = dmap.get(first.lower())
        if dom is None:
            unknown_dom.add(first)
            n_unknown += 1
            continue
        if (row.split == "test") != (dom == domain):
            wrong_side[row.split] += 1
        if strict_names and norm_name(folder) != norm_name(row.class_name):
            mismatched[(row.class_name, folder)] += 1
            continue
        if not (images / row.relpath).is_file():
            missing.append(row.relpath)
            continue
        records.append(Record(row.relpath, row.label, row.class_name, dom, row.split))
    if unknown_dom:
        problems.add(
            f"{plural(n_unknown, 'entry', 'entries')} in split file {path} point into unknown "
            f"domain folder(s) {sorted(unknown_dom)}; domains under {images}: "
            f"{sorted(dmap.values())}; {_REGEN_FIX}"
        )
    report_mismatched(
        mismatched,
        path,
        problems,
        "rename the folders or the classes, regenerate the file, or pass strict_names=False",
    )
    report_missing(missing, path, images, problems, f"fix the paths or {_REGEN_FIX}")
    if wrong_side:
        detail = ", ".join(f"{n} in {s!r}" for s, n in sorted(wrong_side.items()))
        problems.add(
            f"split file {path} should test on domain {domain!r} only and train/validate on "
            f"the other domains, but entries are on the wrong side ({detail}); is the file "
            f"misnamed? {_REGEN_FIX}"
        )
    return DatasetIndex(
        images,
        records,
        class_names,
        sorted(dmap.values()),
        name=f"{root.resolve().name}/test_on_{domain}",
    )


def read_oodbench(
    root: Path,
    problems: Problems,
    *,
    test_domain: str | None = None,
    strict_names: bool = True,
) -> DatasetIndex | None:
    """Read ``root/test_on_<test_domain>.json``; without ``test_domain`` (check mode only)
    check every split file and index the image folders."""
    require_dir(
        root,
        "dataset root",
        "pass the folder that holds [images/]<domain>/<class>/ and test_on_<domain>.json",
        problems,
    )
    images = image_folder(root)
    dmap = _domain_folders(images, problems)
    if test_domain is not None:
        dom = dmap.get(test_domain.lower())
        if dom is None:
            raise problems.fatal(
                f"test domain {test_domain!r} not found under {images}; pass one of "
                f"{sorted(dmap.values())}"
            )
        return _read_split_file(root, images, dom, dmap, problems, strict_names)
    if problems.raise_first:
        raise CroftError(
            f"layout 'oodbench' needs test_domain= (the held-out domain), one of "
            f"{sorted(dmap.values())}"
        )
    seen: dict[str, list[str]] = {}
    for dom in sorted(dmap.values()):
        try:
            seen[dom] = _read_split_file(
                root, images, dom, dmap, problems, strict_names
            ).class_names
        except Stop:
            continue
    distinct = {tuple(v) for v in seen.values()}
    if len(distinct) > 1:
        problems.add(
            f"split files in {root} disagree on the class list: "
            + "; ".join(f"test_on_{d.lower()}: {v}" for d, v in seen.items())
            + "; regenerate them with `croft data splits ROOT --overwrite`"
        )
    return read_domainbed(images, problems)


def _val_count(n: int, val_fraction: float) -> int:
    return min(int(n * val_fraction + 0.5), max(n - 1, 0))


def generate_lodo_splits(
    root: str | os.PathLike[str],
    val_fraction: float = 0.2,
    seed: int = 1,
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write the missing ``test_on_<domain>.json`` files of ``root``; return those written.

    Stratified per (domain, class), seeded, relative paths, atomic writes. Existing files
    are kept unless ``overwrite=True``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise CroftError(f"val_fraction must be in [0, 1), got {val_fraction}")
    root = Path(root)
    problems = Problems(raise_first=True)
    require_dir(
        root, "dataset root", "pass the folder that holds [images/]<domain>/<class>/", problems
    )
    images = image_folder(root)
    _domain_folders(images, problems)
    index = read_domainbed(images, problems)
    if len(index.domain_names) < 2:
        raise CroftError(
            f"{images} holds {len(index.domain_names)} domain folder(s); leave-one-domain-out "
            "needs at least two"
        )
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for rec in index.records:
        groups[(rec.domain, rec.class_name)].append(rec)
    val_paths: set[str] = set()
    for (dom, cls), recs in groups.items():
        paths = sorted(r.path for r in recs)
        random.Random(f"croft-lodo:{seed}:{dom}:{cls}").shuffle(paths)
        val_paths.update(paths[: _val_count(len(paths), val_fraction)])

    written: list[Path] = []
    for held_out in index.domain_names:
        target = find_split_file(root, held_out)
        if target is not None and not overwrite:
            continue
        target = target or root / split_file_name(held_out)
        doc: dict[str, list[list[object]]] = {k: [] for k in SPLIT_KEYS}
        for rec in sorted(index.records, key=lambda r: r.path):
            key = "train"
            if rec.domain == held_out:
                key = "test"
            elif rec.path in val_paths:
                key = "val"
            doc[key].append([rec.path, rec.label, rec.class_name])
        atomic_write_text(target, json.dumps(doc, indent=1) + "\n")
        written.append(target)
    return written
