"""Setup-II tasks: leave one domain out, few shots per class over the source domains.

Per (held-out domain, seed): few-shot train / source validation / held-out test.
Features: ONE train-view extraction of the union of training images (``views``
augmented views), ONE eval-view extraction of everything else, one per OOD set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from croft.errors import CroftError
from croft.experiments.config import DataSpec, LodoConfig
from croft.experiments.extraction import extract_ood, store_options
from croft.experiments.task import Task, by_path, pick, pool


@dataclass
class TaskRecords:
    """The records of one (held-out domain, seed) task."""

    test_domain: str
    seed: int
    train: list[Any]
    val: list[Any]
    test: list[Any]
    bank: list[Any] = field(default_factory=list)  # KNN bank; empty: the training images


def _split_source(records: list[Any], val_fraction: float) -> tuple[list[Any], list[Any]]:
    """Deterministic stratified train/val split per (domain, class), independent of seeds."""
    groups: dict[tuple[str, int], list[Any]] = {}
    for r in records:
        groups.setdefault((r.domain, r.label), []).append(r)
    train, val = [], []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda r: r.path)
        random.Random(f"{key[0]}/{key[1]}").shuffle(members)
        k = int(round(len(members) * val_fraction)) if len(members) > 1 else 0
        val += members[:k]
        train += members[k:]
    return train, val


def _domain_indices(cfg: LodoConfig) -> tuple[Any, list[str], dict[str, Any]]:
    """The full index, the held-out domains and (oodbench) one index per held-out domain."""
    from croft.data import read_layout

    d = cfg.data
    per_domain: dict[str, Any] = {}
    if d.layout == "oodbench":
        full = read_layout(d.root, "oodbench", test_domain=_first_domain(d), **d.options)
    else:
        full = read_layout(d.root, d.layout, **d.options)
    domains = cfg.held_out or list(full.domain_names)
    missing = [x for x in domains if x not in full.domain_names]
    if missing:
        raise CroftError(
            f"{d.root}: held-out domain(s) {missing} not found; domains: {full.domain_names}"
        )
    if d.layout == "oodbench":
        for dom in domains:
            per_domain[dom] = read_layout(d.root, "oodbench", test_domain=dom, **d.options)
    return full, domains, per_domain


def build_tasks(cfg: LodoConfig) -> tuple[Any, list[TaskRecords]]:
    """The full index and the records of every (held-out domain, seed) task."""
    from croft.data import few_shot, few_shot_authors_balance

    full, domains, per_domain = _domain_indices(cfg)
    conv = cfg.evaluation_conventions()
    tasks = []
    for dom in domains:
        if dom in per_domain:
            idx = per_domain[dom]
            source = idx.filter(split="train")
            val_idx = idx.filter(split="val")
            test = [r for r in idx.records if r.split == "test"]
            val = val_idx.records
        else:
            tr, val = _split_source([r for r in full.records if r.domain != dom], cfg.val_fraction)
            source, val_idx = full.with_records(tr), full.with_records(val)
            test = [r for r in full.records if r.domain == dom]
        if not test:
            raise CroftError(f"{cfg.data.root}: the held-out domain {dom!r} has no test images")
        for seed in cfg.seeds:
            if cfg.sampling == "authors":
                shot = few_shot_authors_balance(source, cfg.shots, seed)
            else:
                shot = few_shot(source, cfg.shots, seed, balance_domains=cfg.sampling == "balanced")
            v = val
            if cfg.val_per_class > 0:
                v = few_shot(val_idx, cfg.val_per_class, seed).records
            bank = []
            if conv.knn_bank == "source":  # the authors': <= N per class of the source train
                bank = list(few_shot(source, conv.knn_bank_per_class, seed).records)
            tasks.append(TaskRecords(dom, seed, list(shot.records), list(v), list(test), bank))
    return full, tasks


def _first_domain(d: DataSpec) -> str:
    """Any domain with a split file (oodbench): read from the folder names."""
    from croft.data.oodbench import find_split_file

    images = Path(d.root) / "images"
    if not images.is_dir():
        raise CroftError(f"{d.root}: no images/ folder (layout oodbench); see croft data check")
    for sub in sorted(p.name for p in images.iterdir() if p.is_dir()):
        if find_split_file(Path(d.root), sub) is not None:
            return sub
    raise CroftError(
        f"{d.root}: no test_on_<domain>.json split file; create them with 'croft data splits ROOT'"
    )


def pairs(records: tuple[Any, list[TaskRecords]]) -> list[tuple[str, int]]:
    """``(held-out domain, seed)`` of every task of :func:`build_tasks`'s result."""
    return [(t.test_domain, t.seed) for t in records[1]]


def lodo_tasks(
    cfg: LodoConfig, records: tuple[Any, list[TaskRecords]], backbone: Any, show: bool
) -> tuple[Any, int, dict[str, Any]]:
    """``(task iterator, number of tasks, result info)``; features are extracted here."""
    from croft.features import ViewSpec, extract_features, extract_text_features

    full, task_records = records
    common = store_options(cfg, show)
    train_union = by_path(r for t in task_records for r in t.train)
    eval_union = by_path(r for t in task_records for r in (*t.train, *t.val, *t.test, *t.bank))
    train_index = full.with_records(train_union)
    eval_index = full.with_records(eval_union)
    views = cfg.train_view()
    train_fs = extract_features(backbone, train_index, view=views, **common)
    eval_fs = extract_features(backbone, eval_index, view=ViewSpec.eval_view(), **common)
    text = extract_text_features(backbone, list(full.class_names), cfg.templates)
    train_pool = pool(train_fs, train_index)
    eval_pool = pool(eval_fs, eval_index)
    ood_sets = extract_ood(cfg, backbone, common, full, text)
    names, domains = list(full.class_names), list(full.domain_names)

    def select(src: Any, records: list[Any], name: str) -> Any:
        return pick(src, records, class_names=names, text=text, name=name, domain_names=domains)

    def tasks():  # noqa: ANN202
        for t in task_records:
            yield Task(
                test_domain=t.test_domain,
                seed=t.seed,
                train=select(train_pool, t.train, "train"),
                val=select(eval_pool, t.val, "val") if t.val else None,
                test=select(eval_pool, t.test, "test"),
                ood_sets=ood_sets,
                bank=select(eval_pool, t.bank or t.train, "bank"),
            )

    return tasks(), len(task_records), {"ood": list(ood_sets)}
