"""CoOp datasets with fixed ``split_zhou_*.json`` files (Setup-II open-set OOD sets).

Trees (``root`` may be ``$DATA`` or the dataset folder itself)::

    $DATA/dtd/images/<class>/<image>                    + dtd/split_zhou_DescribableTextures.json
    $DATA/food-101/images/<class>/<image>               + food-101/split_zhou_Food101.json
    $DATA/caltech-101/101_ObjectCategories/<class>/<image>
                                                        + caltech-101/split_zhou_Caltech101.json

The split file is Dassl's ``{"train"|"val"|"test": [[relpath, label, classname], ...]}``
with ``relpath`` relative to the image folder. Every entry (train + val + test) is
indexed with its split. CoOp renames four Caltech folders (``airplanes``, ``Faces``,
``Leopards``, ``Motorbikes`` -> ``airplane``, ``face``, ``leopard``, ``motorbike``); the
folder/class-name check knows these renames.

Options: ``dataset`` (``dtd`` | ``food101`` | ``caltech101``), ``exclude_overlap_with``
(``pacs`` | ``vlcs``, Caltech only: the paper's class filters below, then labels are
renumbered in the original order), ``max_per_class`` (the paper caps at 100, seeded by
``seed``), ``ood`` (labels -1, no class list), ``strict_names``.

The paper's filters (docs/deviations.md#x4, docs/protocols.md#setup2-ood) keep 92 of CoOp's
100 Caltech classes for PACS and 84 for VLCS. ``airplane``, ``leopard`` and ``motorbike``
are dropped only because the authors' keep-list spells them
``airplanes``/``Leopards``/``Motorbikes``; we keep that.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from croft.data._dassl import Row, parse_split_file, report_mismatched, report_missing
from croft.data._scan import Problems, examples, norm_name, require_dir
from croft.data.fewshot import few_shot
from croft.data.index import DatasetIndex, Record
from croft.errors import CroftError

#: Caltech-101 classes (CoOp names) the paper drops for PACS_Caltech101: 100 - 8 = 92 kept.
CALTECH101_DROPPED_FOR_PACS: tuple[str, ...] = (
    "airplane",
    "dalmatian",
    "electric_guitar",
    "elephant",
    "face",
    "leopard",
    "motorbike",
    "snoopy",
)

#: Caltech-101 classes (CoOp names) the paper drops for VLCS_Caltech101: 100 - 16 = 84 kept.
CALTECH101_DROPPED_FOR_VLCS: tuple[str, ...] = (
    "airplane",
    "car_side",
    "chair",
    "dalmatian",
    "emu",
    "face",
    "flamingo",
    "flamingo_head",
    "ibis",
    "leopard",
    "motorbike",
    "pigeon",
    "snoopy",
    "wheelchair",
    "wild_cat",
    "windsor_chair",
)

CALTECH101_DROPPED: dict[str, tuple[str, ...]] = {
    "pacs": CALTECH101_DROPPED_FOR_PACS,
    "vlcs": CALTECH101_DROPPED_FOR_VLCS,
}

#: CoOp's renames of Caltech-101 folders (lower-cased folder name -> class name).
COOP_CALTECH_RENAMES: dict[str, str] = {
    "airplanes": "airplane",
    "faces": "face",
    "leopards": "leopard",
    "motorbikes": "motorbike",
}


@dataclass(frozen=True)
class CoopDataset:
    """Where a CoOp dataset keeps its images and split file."""

    key: str
    folder: str
    images: str
    split_file: str


COOP_DATASETS: dict[str, CoopDataset] = {
    "dtd": CoopDataset("dtd", "dtd", "images", "split_zhou_DescribableTextures.json"),
    "food101": CoopDataset("food101", "food-101", "images", "split_zhou_Food101.json"),
    "caltech101": CoopDataset(
        "caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"
    ),
}
_ALIASES = {"describabletextures": "dtd", "food": "food101", "caltech": "caltech101"}


def coop_dataset(name: str) -> CoopDataset:
    """Look up ``dtd`` / ``food101`` / ``caltech101`` (also ``Food-101``, ``caltech-101``, ...)."""
    key = name.lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in COOP_DATASETS:
        raise CroftError(f"unknown CoOp dataset {name!r}; use one of {', '.join(COOP_DATASETS)}")
    return COOP_DATASETS[key]


def _canon(name: str) -> str:
    n = norm_name(name)
    return COOP_CALTECH_RENAMES.get(n, n)


def read_coop(
    root: Path,
    problems: Problems,
    *,
    dataset: str | None = None,
    exclude_overlap_with: str | None = None,
    max_per_class: int | None = None,
    seed: int = 1,
    ood: bool = False,
    strict_names: bool = True,
) -> DatasetIndex:
    """Read a CoOp dataset from its ``split_zhou_*.json``."""
    spec, overlap = _check_options(dataset, exclude_overlap_with, max_per_class)
    images, split_path = _locate(root, spec, problems)
    rows, class_names = parse_split_file(
        split_path, problems, f"restore CoOp's original {spec.split_file}"
    )
    records = _records(rows, images, spec, split_path, problems, strict_names=strict_names)
    name = spec.key
    if overlap is not None:
        records, class_names = _drop_overlap(records, class_names, overlap, split_path, problems)
        name = f"{spec.key}-no-{overlap}"

    index = DatasetIndex(images, records, class_names, [spec.key], name=name)
    if max_per_class is not None:
        index = few_shot(index, max_per_class, seed)
        index.name = f"{name}-max{max_per_class}-seed{seed}"
    if ood:
        index = index.with_records([replace(r, label=-1) for r in index.records], class_names=[])
    return index


def _check_options(
    dataset: str | None, exclude_overlap_with: str | None, max_per_class: int | None
) -> tuple[CoopDataset, str | None]:
    """The dataset and the lower-cased overlap filter (``pacs`` | ``vlcs`` | None)."""
    if dataset is None:
        raise CroftError(
            f"layout 'coop' needs dataset= (--dataset), one of {', '.join(COOP_DATASETS)}"
        )
    spec = coop_dataset(dataset)
    overlap = None
    if exclude_overlap_with is not None:
        overlap = exclude_overlap_with.lower()
        if spec.key != "caltech101":
            raise CroftError(f"exclude_overlap_with applies to caltech101 only, not {spec.key!r}")
        if overlap not in CALTECH101_DROPPED:
            raise CroftError(f"exclude_overlap_with={exclude_overlap_with!r}: use 'pacs' or 'vlcs'")
    if max_per_class is not None and (not isinstance(max_per_class, int) or max_per_class < 1):
        raise CroftError(f"max_per_class must be a positive integer, got {max_per_class!r}")
    return spec, overlap


def _locate(root: Path, spec: CoopDataset, problems: Problems) -> tuple[Path, Path]:
    """The image folder and the split file under ``root`` (``$DATA`` or the dataset folder)."""
    require_dir(root, "dataset root", f"pass $DATA or $DATA/{spec.folder}", problems)
    base = root / spec.folder if (root / spec.folder).is_dir() else root
    images = base / spec.images
    split_path = base / spec.split_file
    require_dir(
        images,
        f"{spec.key} image folder",
        f"expected {spec.folder}/{spec.images}/<class>/<image> under $DATA (see CoOp's "
        "DATASETS.md)",
        problems,
    )
    if not split_path.is_file():
        raise problems.fatal(
            f"split file {split_path} not found; put CoOp's {spec.split_file} (CoOp "
            f"DATASETS.md) next to {spec.images}/"
        )
    return images, split_path


def _records(
    rows: list[Row],
    images: Path,
    spec: CoopDataset,
    split_path: Path,
    problems: Problems,
    *,
    strict_names: bool,
) -> list[Record]:
    """The split file's rows whose image exists (and, with ``strict_names``, whose folder
    names its class); the others are reported."""
    missing: list[str] = []
    mismatched: dict[tuple[str, str], int] = defaultdict(int)
    records: list[Record] = []
    for row in rows:
        folder = PurePosixPath(row.relpath).parts[0]
        if strict_names and _canon(folder) != _canon(row.class_name):
            mismatched[(row.class_name, folder)] += 1
            continue
        if not (images / row.relpath).is_file():
            missing.append(row.relpath)
            continue
        records.append(Record(row.relpath, row.label, row.class_name, spec.key, row.split))
    report_mismatched(
        mismatched,
        split_path,
        problems,
        f"restore CoOp's {spec.split_file} or pass strict_names=False",
    )
    report_missing(
        missing, split_path, images, problems, f"restore the images or CoOp's {spec.split_file}"
    )
    return records


def _drop_overlap(
    records: list[Record],
    class_names: list[str],
    overlap: str,
    split_path: Path,
    problems: Problems,
) -> tuple[list[Record], list[str]]:
    """The paper's Caltech filter for ``overlap`` (``pacs`` | ``vlcs``): the kept records,
    relabelled in the original class order, and the kept class names."""
    drop = {_canon(c) for c in CALTECH101_DROPPED[overlap]}
    present = {_canon(c) for c in class_names}
    absent = sorted(drop - present)
    if absent:
        problems.add(
            f"split file {split_path} lacks the class(es) {examples(absent, 5)} that "
            f"the paper's {overlap} filter drops; its class names differ "
            f"from CoOp's Caltech-101 names, so the filter would not match the paper"
        )
    kept = [c for c in class_names if _canon(c) not in drop]
    new_label = {c: i for i, c in enumerate(kept)}
    records = [
        replace(r, label=new_label[r.class_name]) for r in records if r.class_name in new_label
    ]
    return records, kept
