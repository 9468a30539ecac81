"""A task (one held-out domain and seed, as feature sets) and the ONE way to cut its
feature sets out of extractions: :class:`Pool` (rows by image path) and :func:`pick`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from croft.errors import CroftError
from croft.features.files import FeatureSet


@dataclass
class Task:
    """The data of one held-out domain and seed."""

    test_domain: str
    seed: int
    train: FeatureSet
    val: FeatureSet | None
    test: FeatureSet
    ood_sets: dict[str, FeatureSet]
    bank: FeatureSet | None = None  # KNN bank; default: the training features (view 0)
    # Setup-I additions (empty / None: Setup-II behaviour)
    shifted: dict[str, FeatureSet] = field(default_factory=dict)  # accuracy only
    shifted_classes: dict[str, list[int]] = field(default_factory=dict)  # allowed predictions
    detection_id: FeatureSet | None = None  # ID positives for detection; default: ``test``
    meta: dict[str, Any] = field(default_factory=dict)  # merged into each record


@dataclass
class Pool:
    """Extracted features addressed by image path (one or more extractions)."""

    features: torch.Tensor  # (N, D) or (N, V, D)
    rows: dict[str, int]
    like: FeatureSet  # templates, logit scale, provenance
    local: torch.Tensor | None = None  # (N, P, D) or (N, V, P, D) local features, if kept


def pool(fs: FeatureSet, index: Any) -> Pool:
    """The rows of an extraction of ``index`` (undecodable images are absent)."""
    from croft.features import kept_indices

    rows = {index.records[int(i)].path: row for row, i in enumerate(kept_indices(fs).tolist())}
    return Pool(fs.features, rows, fs, fs.local_features)


def by_path(records: Any) -> list[Any]:
    """One record per image path, in path order (deterministic: the extraction index of a
    union of tasks, where one image may be a train image of one task and a test image of
    another; labels and domains are taken from each task's own records by :func:`pick`)."""
    ordered = sorted(records, key=lambda r: (r.path, r.split, r.domain, r.label))
    first: dict[str, Any] = {}
    for r in ordered:
        first.setdefault(r.path, r)
    return list(first.values())


def merge(*pools: Pool) -> Pool:
    """One pool from several extractions (distinct paths)."""
    rows: dict[str, int] = {}
    offset = 0
    for p in pools:
        rows.update({k: v + offset for k, v in p.rows.items()})
        offset += p.features.shape[0]
    locs = [p.local for p in pools]
    local = torch.cat(locs) if all(x is not None for x in locs) else None  # type: ignore[arg-type]
    return Pool(torch.cat([p.features for p in pools]), rows, pools[0].like, local)


def pick(
    source: Pool,
    records: Sequence[Any],
    *,
    class_names: list[str],
    text: torch.Tensor | None,
    name: str,
    domain_names: list[str] | None = None,
    ood: bool = False,
) -> FeatureSet:
    """The rows of ``records`` as a feature set (labels from the records).

    Domains index ``domain_names`` when given (a record of another domain is an error),
    else the order in which they first appear. ``ood``: labels -1, no domains. Images
    that could not be decoded are left out; none left is an error.
    """
    present = [r for r in records if r.path in source.rows]
    if records and not present:
        raise CroftError(f"<{name}>: none of its {len(records)} images could be decoded")
    idx = torch.tensor([source.rows[r.path] for r in present], dtype=torch.long)
    names = list(dict.fromkeys(r.domain for r in present)) if domain_names is None else domain_names
    unknown = sorted({r.domain for r in present} - set(names))
    if unknown and not ood:
        raise CroftError(f"<{name}>: image domain(s) {unknown} are not among {names}")
    like = source.like
    return FeatureSet(
        features=source.features[idx],
        labels=torch.full((len(present),), -1) if ood else torch.tensor([r.label for r in present]),
        domains=None
        if ood
        else torch.tensor([names.index(r.domain) for r in present], dtype=torch.long),
        class_names=list(class_names),
        domain_names=[] if ood else list(names),
        text_features=text,
        templates=list(like.templates),
        logit_scale=like.logit_scale,
        extra={**like.extra, "subset": name},
        source=f"<{name}>",
        local_features=None if source.local is None else source.local[idx],
    )
