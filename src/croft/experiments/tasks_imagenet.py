"""Setup-I tasks (``protocol: imagenet``): per seed an ImageNet class split.

Per seed: train = ``shots`` per ID class of ImageNet train, test = ImageNet val of the ID
classes (labels 0..C-1 in draw order), open-set OOD ``imagenet_ood`` = ImageNet val of
the other classes, each ``shifted`` set restricted to the ID classes and relabelled.
Features: one train-view extraction of the union of training images, one eval-view
extraction of the train-split images needed for the bank and validation, one of the
whole ImageNet val split and one of each whole shifted set (keys independent of seeds
and shots), and one per extra ``ood`` set. ``test_domain`` is ``imagenet``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from croft.errors import CroftError
from croft.experiments.config import (
    AUTHORS_VAL_PER_CLASS,
    OPEN_SET_NAME,
    ImagenetConfig,
    ood_tags,
)
from croft.experiments.extraction import extract_ood, store_options
from croft.experiments.task import Task, merge, pick, pool


@dataclass
class Setup1Records:
    """The records of one Setup-I seed, relabelled onto its ID classes (draw order)."""

    seed: int
    id_classes: list[str]
    train: list[Any]
    val: list[Any]
    test: list[Any]
    detection_id: list[Any] | None  # None: the test set
    ood: list[Any]  # label -1
    shifted: dict[str, list[Any]]
    shifted_classes: dict[str, list[int]]  # ar_protocol 200: the only predictable classes


def _shifted_records(
    cfg: ImagenetConfig, variants: dict[str, Any], ar: set[str], id_classes: list[str], seed: int
) -> tuple[dict[str, list[Any]], dict[str, list[int]]]:
    from croft.data.imagenet import restrict_to_classes

    shifted, allowed = {}, {}
    for name, vidx in variants.items():
        recs = restrict_to_classes(vidx, id_classes).records
        if not recs:
            raise CroftError(
                f"shifted set {name}: no images of the {len(id_classes)} ID classes of seed {seed}"
            )
        shifted[name] = recs
        if cfg.ar_protocol == "200" and name in ar:
            allowed[name] = sorted({r.label for r in recs})
    return shifted, allowed


def build_setup1_tasks(cfg: ImagenetConfig) -> tuple[Any, dict[str, Any], list[Setup1Records]]:
    """ImageNet index, shifted-set indices and the records of every seed."""
    from croft.data import few_shot, read_layout
    from croft.data.imagenet import imagenet_class_split, imagenet_variant, restrict_to_classes

    d = cfg.data
    full = read_layout(d.root, "imagenet", **d.options)
    train_all, val_all = full.filter(split="train"), full.filter(split="val")
    for split, idx in (("train", train_all), ("val", val_all)):
        if not len(idx):
            raise CroftError(f"{d.root}: no ImageNet {split} images (Setup-I needs train and val)")
    variants = {s.name: read_layout(s.root, s.layout, **s.options) for s in cfg.shifted}
    ar = {
        s.name
        for s in cfg.shifted
        if s.layout == "imagenet" and imagenet_variant(s.options.get("variant")) in ("a", "r")
    }
    n_val = cfg.val_per_class or AUTHORS_VAL_PER_CLASS
    tasks = []
    for seed in cfg.seeds:
        id_classes, _ = imagenet_class_split(full.class_names, seed, cfg.id_fraction)
        train_id = restrict_to_classes(train_all, id_classes)
        shots = few_shot(train_id, cfg.shots, seed)
        val_id = restrict_to_classes(val_all, id_classes)
        authors_val = few_shot(val_id, n_val, seed).records
        if cfg.val_source == "train":  # disjoint from the few-shot set
            picked = set(shots.records)
            rest = train_id.with_records([r for r in train_id.records if r not in picked])
            val = few_shot(rest, n_val, seed).records if len(rest) else []
        else:
            val = authors_val
        others = restrict_to_classes(val_all, id_classes, others="ood")
        ood = [r for r in others.records if r.label == -1]
        if cfg.ood_draw == "authors_1000":  # label -1 is one group: N random images in all
            ood = few_shot(others.with_records(ood), cfg.ood_draw_size, seed).records
        if not ood:
            raise CroftError(f"{d.root}: no val images of held-out classes for seed {seed}")
        shifted, allowed = _shifted_records(cfg, variants, ar, id_classes, seed)
        tasks.append(
            Setup1Records(
                seed=seed,
                id_classes=id_classes,
                train=list(shots.records),
                val=list(val),
                test=list(val_id.records),
                detection_id=list(authors_val) if cfg.detection_id == "authors_val" else None,
                ood=list(ood),
                shifted=shifted,
                shifted_classes=allowed,
            )
        )
    return full, variants, tasks


def pairs(records: tuple[Any, dict[str, Any], list[Setup1Records]]) -> list[tuple[str, int]]:
    """``("imagenet", seed)`` of every task of :func:`build_setup1_tasks`'s result."""
    return [("imagenet", t.seed) for t in records[2]]


def _pools(cfg: ImagenetConfig, backbone: Any, full: Any, task_records: list, common: dict):
    """Train-view, eval-view and OOD pools of every image the seeds need."""
    from croft.features import ViewSpec, extract_features

    by_path = {r.path: r for r in full.records}

    def originals(paths: set[str]) -> Any:  # extraction needs the 1000-class labels
        return full.with_records([by_path[p] for p in sorted(paths)])

    train_index = originals({r.path for t in task_records for r in t.train})
    views = cfg.train_view()
    train_pool = pool(extract_features(backbone, train_index, view=views, **common), train_index)
    # eval view: the train-split images of the bank (and validation), and the whole val split
    val_split = full.filter(split="val")
    needed = {r.path for t in task_records for r in (*t.train, *t.val) if r.split != "val"}
    pools = [pool(extract_features(backbone, val_split, **common), val_split)]
    if needed:
        bank_index = originals(needed)
        pools.append(pool(extract_features(backbone, bank_index, **common), bank_index))
    eval_pool = merge(*pools)
    if cfg.ood_transform == "train":  # the authors' deviation: OOD through train views
        ood_index = originals({r.path for t in task_records for r in t.ood})
        ofs = extract_features(backbone, ood_index, view=ViewSpec.train_views(1, 0), **common)
        ood_pool = pool(ofs, ood_index)
        ood_pool.features = ood_pool.features[:, 0]
        if ood_pool.local is not None:
            ood_pool.local = ood_pool.local[:, 0]
    else:
        ood_pool = eval_pool
    return train_pool, eval_pool, ood_pool


def imagenet_tasks(
    cfg: ImagenetConfig,
    records: tuple[Any, dict[str, Any], list[Setup1Records]],
    backbone: Any,
    show: bool,
) -> tuple[Any, int, dict[str, Any]]:
    """``(task iterator, number of tasks, result info)``; features are extracted here."""
    from croft.features import extract_features, extract_text_features

    full, variants, task_records = records
    common = store_options(cfg, show)
    train_pool, eval_pool, ood_pool = _pools(cfg, backbone, full, task_records, common)
    shifted_pools = {
        name: pool(extract_features(backbone, idx, **common), idx) for name, idx in variants.items()
    }
    text_all = extract_text_features(backbone, list(full.class_names), cfg.templates)
    extra_ood = extract_ood(cfg, backbone, common, full, text_all)
    position = {c: i for i, c in enumerate(full.class_names)}

    def one(t: Setup1Records) -> Task:
        names = t.id_classes
        get = functools.partial(
            pick, class_names=names, text=text_all[[position[c] for c in names]]
        )
        ood_sets = {OPEN_SET_NAME: get(ood_pool, t.ood, name=OPEN_SET_NAME, ood=True)}
        ood_sets.update(extra_ood)
        det = t.detection_id
        return Task(
            test_domain="imagenet",
            seed=t.seed,
            train=get(train_pool, t.train, name="train"),
            val=get(eval_pool, t.val, name="val") if t.val else None,
            test=get(eval_pool, t.test, name="test"),
            ood_sets=ood_sets,
            bank=get(eval_pool, t.train, name="bank"),
            shifted={n: get(shifted_pools[n], r, name=n) for n, r in t.shifted.items()},
            shifted_classes=dict(t.shifted_classes),
            detection_id=get(eval_pool, det, name="detection_id") if det is not None else None,
            meta={
                "protocol": "imagenet",
                "shots": cfg.shots,
                "id_classes": list(names),
                "val_source": cfg.val_source,
                "detection_id_set": cfg.detection_id,
                "ood_draw": cfg.ood_draw,
                "ar_protocol": cfg.ar_protocol,
                "ood_sizes": {k: len(v) for k, v in ood_sets.items()},
                # the held-out classes of the same dataset: near-OOD in OpenOOD's sense
                "ood_tags": {OPEN_SET_NAME: "near", **ood_tags(cfg)},
            },
        )

    info = {"ood": [OPEN_SET_NAME, *extra_ood], "shifted": list(variants)}
    return (one(t) for t in task_records), len(task_records), info
