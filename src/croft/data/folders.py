"""Plain folder layouts: ``domainbed`` (``root/<domain>/<class>/<image>``) and ``folder``
(``root/<class>/<image>``). Classes and domains are sorted by name, as torchvision's
``ImageFolder`` sorts them."""

from __future__ import annotations

from pathlib import Path

from croft.data._scan import (
    EXTENSIONS_TEXT,
    Problems,
    examples,
    loose_images,
    require_dir,
    scan_class_folders,
    subfolders,
)
from croft.data.images import list_images
from croft.data.index import DatasetIndex, Record

_DOMAINBED_HINT = "root/<domain>/<class>/<image> (for root/<class>/<image> use layout 'folder')"


def read_domainbed(root: Path, problems: Problems, *, split: str = "all") -> DatasetIndex:
    """``root/<domain>/<class>/<image>``; classes and domains sorted by name."""
    require_dir(root, "dataset root", "pass the folder that holds one folder per domain", problems)
    domains = subfolders(root)
    if not domains:
        raise problems.fatal(
            f"dataset root {root} has no domain folders; expected {_DOMAINBED_HINT}"
        )
    per_domain = {
        d: scan_class_folders(root / d, "domain folder", problems, layout_hint=_DOMAINBED_HINT)
        for d in domains
    }
    classes = sorted({c for found in per_domain.values() for c in found})
    label = {c: i for i, c in enumerate(classes)}
    records = [
        Record(f"{d}/{rel}", label[c], c, d, split)
        for d in domains
        for c, rels in per_domain[d].items()
        for rel in rels
    ]
    kept_domains = [d for d in domains if per_domain[d]]
    return DatasetIndex(root, records, classes, kept_domains, name=root.resolve().name)


def read_folder(
    root: Path,
    problems: Problems,
    *,
    ood: bool = False,
    domain: str | None = None,
    split: str = "all",
) -> DatasetIndex:
    """``root/<class>/<image>``; with ``ood=True`` labels are -1 and loose images are allowed."""
    require_dir(root, "image folder", "pass the folder that holds one folder per class", problems)
    classes = subfolders(root)
    loose = loose_images(root)
    if loose and not ood:
        problems.add(
            f"{len(loose)} image(s) lie directly in {root} (e.g. {examples(loose, 2)}); "
            "expected root/<class>/<image>: move them into class folders, or pass ood=True "
            "for an unlabelled OOD set"
        )
    if not classes and not (ood and loose):
        raise problems.fatal(
            f"image folder {root} has no class folders; expected root/<class>/<image>"
        )
    found: dict[str, list[str]] = {}
    for cls in classes:
        files = list_images(root / cls)
        if files:
            found[cls] = [f"{cls}/{f}" for f in files]
        else:
            problems.add(
                f"class folder {root / cls} has no images ({EXTENSIONS_TEXT}); add images "
                "or remove the folder"
            )
    dom = domain or root.resolve().name
    if ood:
        records = [Record(p, -1, c, dom, split) for c, rels in found.items() for p in rels]
        records += [Record(p, -1, "", dom, split) for p in loose]
        records.sort(key=lambda r: r.path)
        return DatasetIndex(root, records, [], [dom], name=dom)
    names = sorted(found)
    records = [Record(p, i, c, dom, split) for i, c in enumerate(names) for p in found[c]]
    return DatasetIndex(root, records, names, [dom], name=dom)
