"""ImageNet and its covariate-shift variants, all on ImageNet's class indices.

Trees::

    root/classnames.txt                      lines "<wnid> <class name>", label = line order
    root/train/<wnid>/<image>                (or root/images/train/..., CoOp's layout)
    root/val/<wnid>/<image>                  (or root/images/val/...)

    variant="v2":     imagenetv2-matched-frequency-format-val/<0..999>/<image>
                      (folder number = line number in classnames.txt)
    variant="sketch": sketch/<wnid>/ or imagenet-sketch/images/<wnid>/ (or images/<wnid>/)
    variant="a":      imagenet-a/<wnid>/ or imagenet-adversarial/imagenet-a/<wnid>/ (200 classes)
    variant="r":      imagenet-r/<wnid>/ or imagenet-rendition/imagenet-r/<wnid>/ (200 classes)

A variant folder is looked up under ``root`` (``root`` may also be the variant folder
itself). ``classnames.txt`` is taken from ``classnames=``, else ``root/classnames.txt``,
``root/imagenet/classnames.txt`` or ``root/../imagenet/classnames.txt``. Every index keeps
all classes of ``classnames.txt`` (A/R simply have no images for 800 of them); variant
records have split ``"test"`` and domain ``imagenet_v2`` / ``imagenet_sketch`` /
``imagenet_a`` / ``imagenet_r``.

Setup-I class split: :func:`imagenet_class_split` reproduces the authors' draw of the
400 ID classes; :func:`restrict_to_classes` relabels an index onto them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from croft.data._scan import EXTENSIONS_TEXT, Problems, examples, plural, require_dir, subfolders
from croft.data.images import list_images
from croft.data.index import DatasetIndex, Record
from croft.errors import CroftError

VARIANTS: dict[str, str] = {
    "imagenet": "imagenet",
    "v2": "imagenet_v2",
    "sketch": "imagenet_sketch",
    "a": "imagenet_a",
    "r": "imagenet_r",
}
_VARIANT_ALIASES = {
    "": "imagenet",
    "s": "sketch",
    "adversarial": "a",
    "rendition": "r",
    "v2matchedfrequency": "v2",
}
_VARIANT_DIRS: dict[str, tuple[str, ...]] = {
    "v2": (
        "imagenetv2-matched-frequency-format-val",
        "imagenetv2/imagenetv2-matched-frequency-format-val",
        ".",
    ),
    "sketch": ("sketch", "imagenet-sketch/images", "imagenet-sketch/sketch", "images", "."),
    "a": ("imagenet-a", "imagenet-adversarial/imagenet-a", "."),
    "r": ("imagenet-r", "imagenet-rendition/imagenet-r", "."),
}


def imagenet_variant(name: str | None) -> str:
    """Canonical variant key: ``imagenet``, ``v2``, ``sketch``, ``a`` or ``r``."""
    key = (name or "").lower().replace("-", "").replace("_", "").replace(" ", "")
    key = key.removeprefix("imagenet")
    key = _VARIANT_ALIASES.get(key, key)
    if key not in VARIANTS:
        raise CroftError(f"unknown ImageNet variant {name!r}; use imagenet, v2, sketch, a or r")
    return key


def read_classnames(path: Path, problems: Problems) -> tuple[list[str], list[str]]:
    """``(wnids, class names)`` from ``classnames.txt`` lines ``<wnid> <name>``."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise problems.fatal(f"cannot read {path}: {exc.strerror or exc}") from None
    wnids: list[str] = []
    names: list[str] = []
    bad: list[str] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            bad.append(f"line {n}")
            continue
        wnids.append(parts[0])
        names.append(parts[1].strip())
    if bad:
        problems.add(
            f"{path}: {plural(len(bad), 'line')} without a class name ({examples(bad)}); "
            "each line must be '<wnid> <class name>'"
        )
    if not wnids:
        raise problems.fatal(f"{path} lists no classes; each line must be '<wnid> <class name>'")
    for what, items in (("wnid", wnids), ("class name", names)):
        dups = (
            sorted({x for x in items if items.count(x) > 1}) if len(set(items)) < len(items) else []
        )
        if dups:
            problems.add(
                f"{path}: duplicate {what}(s) {examples(dups)}; every line must have its own "
                f"{what} (the class split matches classes by name)"
            )
    return wnids, names


def _find_classnames(root: Path, option: str | os.PathLike[str] | None, problems: Problems) -> Path:
    if option is not None:
        path = Path(option)
        if not path.is_file():
            raise problems.fatal(f"classnames file {path} not found; pass an existing file")
        return path
    candidates = [
        root / "classnames.txt",
        root / "imagenet" / "classnames.txt",
        root.parent / "imagenet" / "classnames.txt",
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise problems.fatal(
        f"classnames.txt not found (looked in {', '.join(str(p.parent) for p in candidates)}); "
        "put CoOp's ImageNet classnames.txt ('<wnid> <class name>' per line) there or pass "
        "classnames=PATH (--classnames)"
    )


def _scan_class_dirs(
    folder: Path,
    prefix: str,
    label_of: dict[str, int],
    names: list[str],
    domain: str,
    split: str,
    problems: Problems,
    what: str,
) -> list[Record]:
    records: list[Record] = []
    unknown: list[str] = []
    for sub in subfolders(folder):
        if sub not in label_of:
            unknown.append(sub)
            continue
        files = list_images(folder / sub)
        if not files:
            problems.add(
                f"class folder {folder / sub} has no images ({EXTENSIONS_TEXT}); add images or "
                "remove the folder"
            )
            continue
        label = label_of[sub]
        records += [Record(f"{prefix}{sub}/{f}", label, names[label], domain, split) for f in files]
    if unknown:
        problems.add(
            f"{plural(len(unknown), 'folder')} in {folder} match no {what} in classnames.txt "
            f"(e.g. {examples(unknown)}); check the folder names or the classnames file"
        )
    return records


def read_imagenet(
    root: Path,
    problems: Problems,
    *,
    variant: str | None = None,
    classnames: str | os.PathLike[str] | None = None,
    splits: Sequence[str] = ("train", "val"),
) -> DatasetIndex:
    """Read ImageNet (``splits`` of it) or one variant on ImageNet's class indices."""
    key = imagenet_variant(variant)
    require_dir(root, "dataset root", "pass the ImageNet (or variant) folder", problems)
    cn_path = _find_classnames(root, classnames, problems)
    wnids, names = read_classnames(cn_path, problems)
    domain = VARIANTS[key]

    if key == "imagenet":
        if isinstance(splits, str):
            splits = (splits,)
        base = root
        if not any((root / s).is_dir() for s in splits) and (root / "images").is_dir():
            base = root / "images"
        label_of = {w: i for i, w in enumerate(wnids)}
        records: list[Record] = []
        for split in splits:
            folder = base / split
            if not folder.is_dir():
                problems.add(
                    f"ImageNet split folder {folder} not found; expected root/{split}/<wnid>/"
                    f"<image> (or root/images/{split}/...), or pass splits= without {split!r}"
                )
                continue
            records += _scan_class_dirs(
                folder, f"{split}/", label_of, names, domain, split, problems, "wnid"
            )
        if not records:
            raise problems.fatal(f"no ImageNet images found under {base}")
        return DatasetIndex(base, records, names, [domain], name=domain)

    if key == "v2":
        label_of = {str(i): i for i in range(len(wnids))}
        what = f"class number (0..{len(wnids) - 1})"
    else:
        label_of = {w: i for i, w in enumerate(wnids)}
        what = "wnid"
    tried = [root / rel if rel != "." else root for rel in _VARIANT_DIRS[key]]
    folder = next(
        (d for d in tried if d.is_dir() and any(s in label_of for s in subfolders(d))), None
    )
    if folder is None:
        raise problems.fatal(
            f"{domain} images not found under {root} (looked in "
            f"{', '.join(str(d) for d in tried)}); pass the folder that holds them"
        )
    records = _scan_class_dirs(folder, "", label_of, names, domain, "test", problems, what)
    if not records:
        raise problems.fatal(f"no {domain} images found under {folder}")
    return DatasetIndex(folder, records, names, [domain], name=domain)


def imagenet_class_split(
    class_names: Sequence[str], seed: int, id_fraction: float = 0.4
) -> tuple[list[str], list[str]]:
    """The authors' Setup-I class split: ``(id_classes, open_set_classes)``.

    Same draw as ``np.random.seed(seed); np.random.choice(class_names,
    int(len(class_names) * id_fraction), replace=False)`` (ID classes in draw order),
    but on a private ``RandomState``, leaving numpy's global RNG untouched. The open-set
    classes are the rest, in ``class_names`` order.
    """
    import numpy as np

    names = [str(c) for c in class_names]
    if len(set(names)) != len(names):
        raise CroftError(
            "imagenet_class_split: class names must be unique (they are matched by name)"
        )
    if not 0.0 < id_fraction < 1.0:
        raise CroftError(f"id_fraction must be in (0, 1), got {id_fraction}")
    k = int(len(names) * id_fraction)
    drawn = np.random.RandomState(seed).choice(np.asarray(names), k, replace=False)
    id_classes = [str(c) for c in drawn.tolist()]
    chosen = set(id_classes)
    return id_classes, [c for c in names if c not in chosen]


def restrict_to_classes(
    index: DatasetIndex,
    class_names: Sequence[str],
    *,
    others: Literal["drop", "ood"] = "drop",
) -> DatasetIndex:
    """Relabel ``index`` onto ``class_names`` (label = position), matching by class name.

    Records of other classes are dropped (``others="drop"``) or kept with label -1
    (``others="ood"``, the open-set OOD side).
    """
    if others not in ("drop", "ood"):
        raise CroftError(f"others must be 'drop' or 'ood', got {others!r}")
    wanted = [str(c) for c in class_names]
    if len(set(wanted)) != len(wanted):
        raise CroftError("restrict_to_classes: class_names has duplicates")
    unknown = sorted(set(wanted) - set(index.class_names))
    if unknown:
        raise CroftError(
            f"restrict_to_classes: {plural(len(unknown), 'class', 'classes')} not in dataset "
            f"{index.name or str(index.root)!r}: {examples(unknown)}"
        )
    new_label = {c: i for i, c in enumerate(wanted)}
    records = []
    for rec in index.records:
        if rec.class_name in new_label:
            records.append(replace(rec, label=new_label[rec.class_name]))
        elif others == "ood":
            records.append(replace(rec, label=-1))
    return index.with_records(records, class_names=wanted)
