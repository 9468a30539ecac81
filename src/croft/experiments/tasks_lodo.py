"""Setup-II tasks: leave one domain out, few shots per class over the source domains.

Per (held-out domain, seed): few-shot train / source validation / held-out test.
Features: ONE train-view extraction of the union of training images (``views``
augmented views), ONE eval-view extraction of everything else, one per OOD set (and per
held-out domain for an OOD root with ``{held_out}``). ``extra_targets`` domains are never
a source nor held out; every task's head is scored on their test images (accuracy only:
``Task.shifted``, recorded as ``shifted_accuracy``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from croft.errors import CroftError
from croft.experiments.config import DataSpec, LodoConfig, ood_tags
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
    extra: dict[str, list[Any]] = field(default_factory=dict)  # extra target -> test records


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
    domains = cfg.held_out or [x for x in full.domain_names if x not in cfg.extra_targets]
    missing = [x for x in (*domains, *cfg.extra_targets) if x not in full.domain_names]
    if missing:
        raise CroftError(
            f"{d.root}: held-out domain(s) {missing} not found; domains: {full.domain_names}"
        )
    if d.layout == "oodbench":
        for dom in (*domains, *cfg.extra_targets):
            per_domain[dom] = read_layout(d.root, "oodbench", test_domain=dom, **d.options)
    return full, domains, per_domain


def _extra_records(cfg: LodoConfig, full: Any, per_domain: dict[str, Any]) -> dict[str, list]:
    """The test records of each extra target domain (oodbench: its split file's test)."""
    out = {}
    for x in cfg.extra_targets:
        if x in per_domain:
            out[x] = [r for r in per_domain[x].records if r.split == "test"]
        else:
            out[x] = [r for r in full.records if r.domain == x]
        if not out[x]:
            raise CroftError(f"{cfg.data.root}: the extra target {x!r} has no test images")
    return out


def build_tasks(cfg: LodoConfig) -> tuple[Any, list[TaskRecords]]:
    """The full index and the records of every (held-out domain, seed) task."""
    from croft.data import few_shot, few_shot_authors_balance

    full, domains, per_domain = _domain_indices(cfg)
    extra = _extra_records(cfg, full, per_domain)
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
            others = [r for r in full.records if r.domain not in (dom, *cfg.extra_targets)]
            tr, val = _split_source(others, cfg.val_fraction)
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
            recs = TaskRecords(dom, seed, list(shot.records), list(v), list(test), bank, extra)
            tasks.append(recs)
    return full, tasks


def _first_domain(d: DataSpec) -> str:
    """Any domain with a split file (oodbench): read from the folder names."""
    from croft.data.oodbench import find_split_file, image_folder

    if not Path(d.root).is_dir():
        raise CroftError(f"{d.root}: not a folder (layout oodbench); see croft data check")
    images = image_folder(Path(d.root))
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
    extra = [r for recs in (task_records[0].extra if task_records else {}).values() for r in recs]
    eval_union = by_path(
        [*(r for t in task_records for r in (*t.train, *t.val, *t.test, *t.bank)), *extra]
    )
    train_index = full.with_records(train_union)
    eval_index = full.with_records(eval_union)
    views = cfg.train_view()
    train_fs = extract_features(backbone, train_index, view=views, **common)
    eval_fs = extract_features(backbone, eval_index, view=ViewSpec.eval_view(), **common)
    text = extract_text_features(backbone, list(full.class_names), cfg.templates)
    train_pool = pool(train_fs, train_index)
    eval_pool = pool(eval_fs, eval_index)
    fixed = extract_ood(cfg, backbone, common, full, text)
    folds = sorted({t.test_domain for t in task_records})
    per_fold = {
        dom: extract_ood(cfg, backbone, common, full, text, held_out=dom)
        for dom in (folds if any(o.per_fold for o in cfg.ood) else [])
    }
    names, domains = list(full.class_names), list(full.domain_names)

    def ood_sets(dom: str) -> dict[str, Any]:  # in the config's order
        both = {**fixed, **per_fold.get(dom, {})}
        return {o.name: both[o.name] for o in cfg.ood}

    def select(src: Any, records: list[Any], name: str) -> Any:
        return pick(src, records, class_names=names, text=text, name=name, domain_names=domains)

    tags = ood_tags(cfg)
    meta: dict[str, Any] = {"ood_tags": tags} if tags else {}
    if cfg.world_seed is not None:  # a study over several worlds: pairs are per world
        meta["world_seed"] = cfg.world_seed

    def tasks():  # noqa: ANN202
        for t in task_records:
            yield Task(
                test_domain=t.test_domain,
                seed=t.seed,
                train=select(train_pool, t.train, "train"),
                val=select(eval_pool, t.val, "val") if t.val else None,
                test=select(eval_pool, t.test, "test"),
                ood_sets=ood_sets(t.test_domain),
                bank=select(eval_pool, t.bank or t.train, "bank"),
                shifted={x: select(eval_pool, recs, x) for x, recs in t.extra.items()},
                meta=dict(meta),
            )

    return tasks(), len(task_records), {"ood": [o.name for o in cfg.ood]}
