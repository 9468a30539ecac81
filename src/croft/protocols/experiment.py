"""Experiments as YAML: ``croft run CONFIG [--set key=value …]``.

One file says everything a run needs; unknown keys are errors. Example (Setup-II)::

    name: setup2_pacs
    backbone: openclip:ViT-B-16:/weights/ViT-B-16.pt
    device: cpu                # or cuda
    data: {root: /data/PACS, layout: oodbench}
    held_out: [art_painting, cartoon, photo, sketch]   # leave-one-domain-out
    templates: ["a photo of a {}."]
    ood:
      - {name: dtd, root: /data, layout: coop, options: {dataset: dtd, max_per_class: 100}}
    shots: 16
    sampling: balanced         # per class, spread over source domains; "authors" = bug B8
    views: 8
    seeds: [1, 2, 3]
    scores: [energy, knn]
    methods:
      - {label: zeroshot, method: zeroshot}
      - {label: croft, method: croft, options: {lambda1: 15, lambda2: [1000, 100, 10]}}

A list in ``options`` is a grid: every point is run and stored as ``label[key=value]``;
``croft report`` picks one point per (held-out domain, seed) on source-validation
accuracy (never on test; an oracle rule exists only behind a flag and is labelled).

Flow: dataset index → per (held-out domain, seed) few-shot train / source val / held-out
test → ONE extraction of the union of training images with ``views`` augmented views,
ONE eval-view extraction of everything else, one per OOD set (all through the keyed,
resumable feature store) → :func:`croft.protocols.lodo.run_grid` → run directories.

Setup-I (``protocol: imagenet``, CROFT_SPEC §4.1)::

    protocol: imagenet
    data: {root: /data/imagenet, layout: imagenet}       # train/<wnid>, val/<wnid>
    shifted:                                              # accuracy on the ID classes
      - {name: imagenet_v2, root: /data/imagenetv2, layout: imagenet, options: {variant: v2}}
    id_fraction: 0.4           # 400 ID classes drawn per seed (the authors' draw)
    val_source: train          # few per ID class from ImageNet train; "authors": ImageNet val (B9)
    detection_id: test         # ID positives for detection; "authors_val": 4/class of val (B9)
    ood_draw: all              # val images of the held-out classes; "authors_1000" (B10)
    ar_protocol: faithful      # 400-way on A/R (B11); "200": only classes present in A/R

Per seed: train = ``shots`` per ID class of ImageNet train, test = ImageNet val of the ID
classes (labels 0..C-1 in draw order), open-set OOD ``imagenet_ood`` = ImageNet val of the
other classes, each ``shifted`` set restricted to the ID classes and relabelled. Features:
one train-view extraction of the union of training images, one eval-view extraction of
the train-split images needed for the bank and validation, one of the whole ImageNet val
split and one of each whole shifted set (keys independent of seeds and shots, so the
three shot counts share them), and one per extra ``ood`` set. ``test_domain`` is
``imagenet``; one output directory per shot count (a rerun with other data settings into
the same directory is refused).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.protocols.lodo import MethodRun, Task

PROTOCOLS = ("lodo", "imagenet")
OPEN_SET_NAME = "imagenet_ood"  # Setup-I: the held-out ImageNet classes
AUTHORS_VAL_PER_CLASS = 4  # Setup-I validation size per ID class (CROFT_SPEC §4.1)


@dataclass
class DataSpec:
    """A dataset folder and its layout (see :mod:`croft.data`)."""

    root: str
    layout: str
    options: dict[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass
class MethodGrid:
    """A method row; list-valued options form a grid."""

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """Everything a ``croft run`` needs. Defaults: the authors' Setup-II protocol."""

    name: str
    backbone: str
    data: DataSpec
    ood: list[DataSpec] = field(default_factory=list)
    methods: list[MethodGrid] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)  # empty: every domain in turn
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    shots: int = 16
    sampling: str = "balanced"  # balanced | per_class | authors (bug B8)
    val_fraction: float = 0.2  # when the layout has no train/val split
    val_per_class: int = 0  # 0: all source-validation images
    views: int = 8
    view_seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    ood_transform: str = "eval"  # eval | train (the authors' bug B1)
    scores: list[str] = field(default_factory=lambda: ["energy", "knn"])
    knn_k: int = 1
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 64
    workers: int = 0
    cache: str = ""  # empty: the default feature cache
    progress: bool = True
    protocol: str = "lodo"  # lodo (Setup-II) | imagenet (Setup-I: ImageNet class split)
    # Setup-I only (protocol: imagenet); val_per_class 0 means 4 there
    shifted: list[DataSpec] = field(default_factory=list)  # covariate-shifted test sets
    id_fraction: float = 0.4
    val_source: str = "train"  # train | authors (4/class of ImageNet val, bug B9)
    detection_id: str = "test"  # test | authors_val (the 4/class val draw, bug B9)
    ood_draw: str = "all"  # all | authors_1000 (ood_draw_size random images, bug B10)
    ood_draw_size: int = 1000
    ar_protocol: str = "faithful"  # faithful (400-way, B11) | 200 (A/R: only classes present)

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise CroftError(f"protocol {self.protocol!r}: use lodo (Setup-II) or imagenet")
        if self.protocol == "imagenet":
            self._check_setup1()
        elif self.shifted:
            raise CroftError("shifted: applies to protocol imagenet only (Setup-I)")
        if self.sampling not in ("balanced", "per_class", "authors"):
            raise CroftError(f"sampling {self.sampling!r}: use balanced, per_class or authors")
        if self.ood_transform not in ("eval", "train"):
            raise CroftError(f"ood_transform {self.ood_transform!r}: use eval or train")
        if self.shots < 1 or self.views < 1 or not self.seeds:
            raise CroftError("shots and views must be >= 1 and seeds non-empty")
        if not self.methods:
            raise CroftError("the experiment lists no methods (methods: [...])")
        labels = [m.label for m in self.methods]
        if len(set(labels)) != len(labels):
            raise CroftError(f"method labels must be unique, got {labels}")

    def _check_setup1(self) -> None:
        choices = {
            "val_source": ("train", "authors"),
            "detection_id": ("test", "authors_val"),
            "ood_draw": ("all", "authors_1000"),
            "ar_protocol": ("faithful", "200"),
        }
        for key, allowed in choices.items():
            value = str(getattr(self, key))
            setattr(self, key, value)
            if value not in allowed:
                raise CroftError(f"{key} {value!r}: use {' or '.join(allowed)}")
        if self.data.layout != "imagenet":
            raise CroftError(
                f"protocol imagenet needs data.layout imagenet, got {self.data.layout!r}"
            )
        variant = str(self.data.options.get("variant") or "imagenet")
        if variant.lower() not in ("imagenet", ""):
            raise CroftError("protocol imagenet: data is ImageNet itself; put variants in shifted")
        if self.held_out:
            raise CroftError("held_out applies to protocol lodo only; remove it")
        if self.sampling == "authors":
            raise CroftError("sampling authors (bug B8) applies to protocol lodo only")
        if not 0.0 < self.id_fraction < 1.0:
            raise CroftError(f"id_fraction must be in (0, 1), got {self.id_fraction}")
        if self.ood_draw_size < 1 or self.val_per_class < 0:
            raise CroftError("ood_draw_size must be >= 1 and val_per_class >= 0")
        names = [s.name for s in self.shifted]
        if len(set(names)) != len(names):
            raise CroftError(f"shifted set names must be unique, got {names}")
        if OPEN_SET_NAME in [o.name for o in self.ood]:
            raise CroftError(f"ood name {OPEN_SET_NAME!r} is taken by the held-out classes")


# ------------------------------------------------------------------------------ loading
def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise CroftError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise CroftError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(names)}")
    kwargs = dict(data)
    if cls is ExperimentConfig:
        for key in ("name", "backbone", "data"):
            if key not in kwargs:
                raise CroftError(f"{where}: the key {key!r} is required")
        kwargs["data"] = _build(DataSpec, kwargs["data"], f"{where}: data")
        kwargs["ood"] = [
            _build(DataSpec, o, f"{where}: ood[{i}]") for i, o in enumerate(kwargs.get("ood", []))
        ]
        kwargs["methods"] = [
            _build(MethodGrid, m, f"{where}: methods[{i}]")
            for i, m in enumerate(kwargs.get("methods", []))
        ]
        for i, o in enumerate(kwargs["ood"]):
            o.name = o.name or Path(o.root).name or f"ood{i}"
        kwargs["shifted"] = [
            _build(DataSpec, o, f"{where}: shifted[{i}]")
            for i, o in enumerate(kwargs.get("shifted", []))
        ]
        for i, o in enumerate(kwargs["shifted"]):
            o.name = o.name or _variant_name(o) or Path(o.root).name or f"shifted{i}"
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise CroftError(f"{where}: {exc}") from None


def _variant_name(spec: DataSpec) -> str:
    """``imagenet_v2`` etc. for an ImageNet-variant spec, else empty."""
    from croft.data.imagenet import VARIANTS, imagenet_variant

    if spec.layout != "imagenet" or not spec.options.get("variant"):
        return ""
    return VARIANTS[imagenet_variant(str(spec.options["variant"]))]


def apply_override(doc: dict[str, Any], item: str) -> None:
    """``a.b=value`` sets ``doc["a"]["b"]`` (value parsed as YAML: numbers, lists, ...)."""
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise CroftError(f"--set {item!r}: expected KEY=VALUE, e.g. --set shots=4")
    value = yaml.safe_load(raw) if raw.strip() else ""
    parts = key.strip().split(".")
    node: Any = doc
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def load_experiment(
    path: str | os.PathLike[str], overrides: Sequence[str] = ()
) -> ExperimentConfig:
    """Read a YAML experiment, apply ``key=value`` overrides, validate."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise CroftError(f"experiment file {str(p)!r} does not exist")
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise CroftError(f"{p}: not valid YAML ({first})") from None
    base = p.parent
    for item in overrides:
        apply_override(doc, item)
    cfg = _build(ExperimentConfig, doc, str(p))
    for spec in [
        cfg.data,
        *cfg.ood,
        *cfg.shifted,
    ]:  # relative data roots are relative to the YAML file
        if not os.path.isabs(spec.root) and not spec.root.startswith("~"):
            spec.root = str((base / spec.root).resolve())
        spec.root = os.path.expanduser(spec.root)
    cfg.backbone = _resolve_backbone_path(cfg.backbone, base)
    cfg.check()
    return cfg


def _resolve_backbone_path(spec: str, base: Path) -> str:
    """Make a relative weight path in a backbone spec relative to the YAML file's folder."""
    kind, sep, rest = spec.partition(":")
    if not sep:
        return spec
    if kind == "openclip":
        arch, sep2, path = rest.partition(":")
        if sep2 and path and not os.path.isabs(os.path.expanduser(path)):
            return f"{kind}:{arch}:{(base / path).resolve()}"
        return spec
    if kind in ("openai", "hf"):
        head, sep2, tail = rest.rpartition(":") if kind == "openai" else ("", "", rest)
        path = tail if tail else rest
        if path and not os.path.isabs(os.path.expanduser(path)) and (base / path).exists():
            resolved = str((base / path).resolve())
            return f"{kind}:{head}:{resolved}" if sep2 and head else f"{kind}:{resolved}"
    return spec


def expand_methods(methods: Sequence[MethodGrid]) -> list[MethodRun]:
    """Grid expansion: ``lambda2: [1, 10]`` gives ``croft[lambda2=1]``, ``croft[lambda2=10]``."""
    runs = []
    for m in methods:
        grid = {k: v for k, v in m.options.items() if isinstance(v, list)}
        fixed = {k: v for k, v in m.options.items() if not isinstance(v, list)}
        if not grid:
            runs.append(MethodRun(m.label, m.method, fixed))
            continue
        keys = sorted(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, values, strict=True))
            tag = ",".join(f"{k}={v}" for k, v in point.items())
            runs.append(MethodRun(f"{m.label}[{tag}]", m.method, {**fixed, **point}))
    return runs


def check_experiment(cfg: ExperimentConfig) -> list[str]:
    """Every problem with the config's data (``croft data check`` on each dataset)."""
    from croft.data import check_layout
    from croft.methods import METHODS, make_config

    problems = []
    for m in expand_methods(cfg.methods):
        try:
            make_config(METHODS.get(m.method).config_cls, dict(m.options))
        except CroftError as exc:
            problems.append(f"method {m.label}: {exc}")
    specs = [("data", cfg.data)] + [(f"ood {o.name}", o) for o in cfg.ood]
    specs += [(f"shifted {o.name}", o) for o in cfg.shifted]
    for what, spec in specs:
        try:
            found = check_layout(spec.root, spec.layout, **spec.options)
        except CroftError as exc:
            found = [str(exc)]
        problems += [f"{what} ({spec.root}, layout {spec.layout}): {p}" for p in found]
    return problems


# ------------------------------------------------------------------------------ tasks
@dataclass
class TaskRecords:
    """The records of one (held-out domain, seed) task."""

    test_domain: str
    seed: int
    train: list[Any]
    val: list[Any]
    test: list[Any]


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


def build_tasks(cfg: ExperimentConfig) -> tuple[Any, list[TaskRecords]]:
    """The full index and the records of every (held-out domain, seed) task."""
    from croft.data import few_shot, few_shot_authors_balance, read_layout

    d = cfg.data
    options = dict(d.options)
    if d.layout == "oodbench":
        full = None
        per_domain = {}
        from croft.data.oodbench import find_split_file  # noqa: F401 (documents the layout)

        first = read_layout(d.root, "oodbench", test_domain=_first_domain(d), **options)
        domains = cfg.held_out or first.domain_names
        for dom in domains:
            per_domain[dom] = read_layout(d.root, "oodbench", test_domain=dom, **options)
        full = first
    else:
        full = read_layout(d.root, d.layout, **options)
        domains = cfg.held_out or full.domain_names
        per_domain = {}
    missing = [x for x in domains if x not in full.domain_names]
    if missing:
        raise CroftError(
            f"{d.root}: held-out domain(s) {missing} not found; domains: {full.domain_names}"
        )
    tasks = []
    for dom in domains:
        if dom in per_domain:
            idx = per_domain[dom]
            source = idx.filter(split="train")
            val_idx = idx.filter(split="val")
            test = [r for r in idx.records if r.split == "test"]
            val = val_idx.records
        else:
            src_records = [r for r in full.records if r.domain != dom]
            tr, val = _split_source(src_records, cfg.val_fraction)
            source = full.with_records(tr)
            val_idx = full.with_records(val)
            test = [r for r in full.records if r.domain == dom]
        if not test:
            raise CroftError(f"{d.root}: the held-out domain {dom!r} has no test images")
        for seed in cfg.seeds:
            if cfg.sampling == "authors":
                shot = few_shot_authors_balance(source, cfg.shots, seed)
            else:
                shot = few_shot(source, cfg.shots, seed, balance_domains=cfg.sampling == "balanced")
            v = val
            if cfg.val_per_class > 0:
                v = few_shot(val_idx, cfg.val_per_class, seed).records
            tasks.append(TaskRecords(dom, seed, list(shot.records), list(v), list(test)))
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


# ------------------------------------------------------------------------------ features
def _rows(fs: FeatureSet, index: Any) -> dict[Any, int]:
    """Record -> row of an extracted set (undecodable images are absent)."""
    from croft.features import kept_indices

    return {index.records[int(i)]: row for row, i in enumerate(kept_indices(fs).tolist())}


def _select(
    fs: FeatureSet,
    rows: dict[Any, int],
    records: Sequence[Any],
    full: Any,
    text: torch.Tensor,
    name: str,
    ood: bool = False,
) -> FeatureSet:
    present = [r for r in records if r in rows]
    idx = torch.tensor([rows[r] for r in present], dtype=torch.long)
    dom_names = list(full.domain_names)
    doms = [dom_names.index(r.domain) if r.domain in dom_names else 0 for r in present]
    return FeatureSet(
        features=fs.features[idx],
        labels=torch.full((len(present),), -1) if ood else torch.tensor([r.label for r in present]),
        domains=None if ood else torch.tensor(doms, dtype=torch.long),
        class_names=list(full.class_names),
        domain_names=[] if ood else dom_names,
        text_features=text,
        templates=list(fs.templates),
        logit_scale=fs.logit_scale,
        extra={**fs.extra, "subset": name},
        source=f"<{name}>",
    )


def _extract_ood(
    cfg: ExperimentConfig, backbone: Any, common: dict[str, Any], full: Any, text: torch.Tensor
) -> dict[str, FeatureSet]:
    """One extraction per extra OOD dataset (``cfg.ood``), labels -1."""
    from croft.data import read_layout
    from croft.features import ViewSpec, extract_features

    ood_sets: dict[str, FeatureSet] = {}
    for spec in cfg.ood:
        ood_index = read_layout(spec.root, spec.layout, **spec.options)
        oview = ViewSpec.eval_view() if cfg.ood_transform == "eval" else ViewSpec.train_views(1, 0)
        ofs = extract_features(backbone, ood_index, view=oview, **common)
        if ofs.features.dim() == 3:
            ofs.features = ofs.features[:, 0]
        ood_sets[spec.name] = _select(
            ofs, _rows(ofs, ood_index), ood_index.records, full, text, spec.name, ood=True
        )
        ood_sets[spec.name].class_names = list(full.class_names)
    return ood_sets


def _run_tasks(
    cfg: ExperimentConfig,
    tasks: Any,
    n_tasks: int,
    methods: list[MethodRun],
    out: Path,
    show: bool,
) -> list[dict[str, Any]]:
    """:func:`croft.protocols.lodo.run_grid` with a progress bar."""
    from croft.protocols.lodo import run_grid

    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_tasks * len(methods), desc="runs", unit="run")
    records = run_grid(
        tasks,
        methods,
        out,
        scores=cfg.scores,
        score_params={"knn": {"k": cfg.knn_k}} if "knn" in cfg.scores else None,
        on_result=(lambda r: bar.update(1)) if bar else None,
        device=cfg.device,
    )
    if bar is not None:
        bar.close()
    return records


def _common(cfg: ExperimentConfig, show: bool) -> dict[str, Any]:
    return {
        "cache_dir": cfg.cache or None,
        "batch_size": cfg.batch_size,
        "workers": cfg.workers,
        "progress": show,
    }


def run_experiment(
    cfg: ExperimentConfig, out_dir: str | os.PathLike[str], *, progress: bool | None = None
) -> dict[str, Any]:
    """Extract (cached), fit and evaluate every method on every task; write run dirs."""
    if cfg.protocol == "imagenet":
        return run_setup1(cfg, out_dir, progress=progress)
    from croft.backbones import load_backbone
    from croft.features import ViewSpec, extract_features, extract_text_features

    show = cfg.progress if progress is None else progress
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = dataclasses.asdict(cfg)
    (out / "config.resolved.json").write_text(json.dumps(resolved, indent=2, sort_keys=True))
    methods = expand_methods(cfg.methods)
    full, task_records = build_tasks(cfg)
    backbone = load_backbone(cfg.backbone, device=cfg.device, precision=cfg.precision)
    common = _common(cfg, show)
    train_union = sorted({r for t in task_records for r in t.train}, key=lambda r: r.path)
    eval_union = sorted(
        {r for t in task_records for r in (*t.train, *t.val, *t.test)}, key=lambda r: r.path
    )
    train_index = full.with_records(train_union)
    eval_index = full.with_records(eval_union)
    views = ViewSpec.train_views(cfg.views, cfg.view_seed)
    train_fs = extract_features(backbone, train_index, view=views, **common)
    eval_fs = extract_features(backbone, eval_index, view=ViewSpec.eval_view(), **common)
    text = extract_text_features(backbone, list(full.class_names), cfg.templates)
    train_rows, eval_rows = _rows(train_fs, train_index), _rows(eval_fs, eval_index)
    ood_sets = _extract_ood(cfg, backbone, common, full, text)

    def tasks():  # noqa: ANN202
        for t in task_records:
            train = _select(train_fs, train_rows, t.train, full, text, "train")
            yield Task(
                test_domain=t.test_domain,
                seed=t.seed,
                train=train,
                val=_select(eval_fs, eval_rows, t.val, full, text, "val") if t.val else None,
                test=_select(eval_fs, eval_rows, t.test, full, text, "test"),
                ood_sets=ood_sets,
                bank=_select(eval_fs, eval_rows, t.train, full, text, "bank"),
            )

    records = _run_tasks(cfg, tasks(), len(task_records), methods, out, show)
    return {"records": records, "out_dir": str(out), "ood": list(ood_sets)}


# ------------------------------------------------------------------------------ Setup-I
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


def build_setup1_tasks(
    cfg: ExperimentConfig,
) -> tuple[Any, dict[str, Any], list[Setup1Records]]:
    """ImageNet index, shifted-set indices and the records of every seed (CROFT_SPEC §4.1)."""
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
        shifted, allowed = {}, {}
        for name, vidx in variants.items():
            recs = restrict_to_classes(vidx, id_classes).records
            if not recs:
                raise CroftError(
                    f"shifted set {name}: no images of the {len(id_classes)} ID classes of "
                    f"seed {seed}"
                )
            shifted[name] = recs
            if cfg.ar_protocol == "200" and name in ar:
                allowed[name] = sorted({r.label for r in recs})
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


@dataclass
class _Pool:
    """Extracted features addressed by record path (one dataset root)."""

    features: torch.Tensor  # (N, D) or (N, V, D)
    rows: dict[str, int]
    like: FeatureSet  # templates, logit scale, provenance


def _pool(fs: FeatureSet, index: Any) -> _Pool:
    from croft.features import kept_indices

    rows = {index.records[int(i)].path: row for row, i in enumerate(kept_indices(fs).tolist())}
    return _Pool(fs.features, rows, fs)


def _merge(*pools: _Pool) -> _Pool:
    """One pool from several extractions of the same root (distinct paths)."""
    rows: dict[str, int] = {}
    offset = 0
    for p in pools:
        rows.update({k: v + offset for k, v in p.rows.items()})
        offset += p.features.shape[0]
    return _Pool(torch.cat([p.features for p in pools]), rows, pools[0].like)


def _pick(
    pool: _Pool,
    records: Sequence[Any],
    class_names: list[str],
    text: torch.Tensor,
    name: str,
    ood: bool = False,
) -> FeatureSet:
    """The rows of ``records`` (relabelled) as a feature set; undecodable images left out."""
    present = [r for r in records if r.path in pool.rows]
    if not present:
        raise CroftError(f"<{name}>: none of its {len(records)} images could be decoded")
    idx = torch.tensor([pool.rows[r.path] for r in present], dtype=torch.long)
    domains = list(dict.fromkeys(r.domain for r in present))
    return FeatureSet(
        features=pool.features[idx],
        labels=torch.full((len(present),), -1) if ood else torch.tensor([r.label for r in present]),
        domains=None if ood else torch.tensor([domains.index(r.domain) for r in present]),
        class_names=list(class_names),
        domain_names=[] if ood else domains,
        text_features=text,
        templates=list(pool.like.templates),
        logit_scale=pool.like.logit_scale,
        extra={**pool.like.extra, "subset": name},
        source=f"<{name}>",
    )


_SETUP1_KEYS = (
    "backbone",
    "data",
    "templates",
    "shots",
    "sampling",
    "views",
    "view_seed",
    "val_per_class",
    "id_fraction",
    "val_source",
    "detection_id",
    "ood_draw",
    "ood_draw_size",
    "ar_protocol",
    "ood_transform",
    "shifted",
    "ood",
    "scores",
    "knn_k",
    "precision",
)


def _guard_out_dir(out: Path, resolved: dict[str, Any]) -> None:
    """Refuse to resume Setup-I runs made with other data settings (e.g. another shot count)."""
    path = out / "config.resolved.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return
    if old.get("protocol") != "imagenet":
        return
    diff = [k for k in _SETUP1_KEYS if k in old and old[k] != resolved[k]]
    if diff:
        k = diff[0]
        raise CroftError(
            f"{out} holds Setup-I runs made with another {', '.join(diff)} ({k}: "
            f"{old[k]!r} there, {resolved[k]!r} now); finished runs would be reused. "
            "Pass another --out (e.g. one directory per shot count) or delete it"
        )


def run_setup1(
    cfg: ExperimentConfig, out_dir: str | os.PathLike[str], *, progress: bool | None = None
) -> dict[str, Any]:
    """Setup-I (``protocol: imagenet``): per seed an ImageNet class split, then fit/evaluate."""
    from croft.backbones import load_backbone
    from croft.features import ViewSpec, extract_features, extract_text_features

    show = cfg.progress if progress is None else progress
    out = Path(out_dir)
    resolved = dataclasses.asdict(cfg)
    _guard_out_dir(out, resolved)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.resolved.json").write_text(json.dumps(resolved, indent=2, sort_keys=True))
    methods = expand_methods(cfg.methods)
    full, variants, task_records = build_setup1_tasks(cfg)
    backbone = load_backbone(cfg.backbone, device=cfg.device, precision=cfg.precision)
    common = _common(cfg, show)
    by_path = {r.path: r for r in full.records}

    def originals(paths: set[str]) -> Any:  # extraction needs the 1000-class labels
        return full.with_records([by_path[p] for p in sorted(paths)])

    train_index = originals({r.path for t in task_records for r in t.train})
    views = ViewSpec.train_views(cfg.views, cfg.view_seed)
    train_pool = _pool(extract_features(backbone, train_index, view=views, **common), train_index)
    # eval view: the train-split images of the bank (and validation), and the whole val split
    val_split = full.filter(split="val")
    needed = {r.path for t in task_records for r in (*t.train, *t.val) if r.split != "val"}
    pools = [_pool(extract_features(backbone, val_split, **common), val_split)]
    if needed:
        bank_index = originals(needed)
        pools.append(_pool(extract_features(backbone, bank_index, **common), bank_index))
    eval_pool = _merge(*pools)
    if cfg.ood_transform == "train":  # the authors' bug B1
        ood_index = originals({r.path for t in task_records for r in t.ood})
        ofs = extract_features(backbone, ood_index, view=ViewSpec.train_views(1, 0), **common)
        ood_pool = _pool(ofs, ood_index)
        ood_pool.features = ood_pool.features[:, 0]
    else:
        ood_pool = eval_pool
    shifted_pools = {
        name: _pool(extract_features(backbone, idx, **common), idx)
        for name, idx in variants.items()
    }
    text_all = extract_text_features(backbone, list(full.class_names), cfg.templates)
    extra_ood = _extract_ood(cfg, backbone, common, full, text_all)
    position = {c: i for i, c in enumerate(full.class_names)}

    def tasks():  # noqa: ANN202
        for t in task_records:
            names = t.id_classes
            text = text_all[[position[c] for c in names]]

            pick = functools.partial(_pick, class_names=names, text=text)
            ood_sets = {OPEN_SET_NAME: pick(ood_pool, t.ood, name=OPEN_SET_NAME, ood=True)}
            ood_sets.update(extra_ood)
            yield Task(
                test_domain="imagenet",
                seed=t.seed,
                train=pick(train_pool, t.train, name="train"),
                val=pick(eval_pool, t.val, name="val") if t.val else None,
                test=pick(eval_pool, t.test, name="test"),
                ood_sets=ood_sets,
                bank=pick(eval_pool, t.train, name="bank"),
                shifted={n: pick(shifted_pools[n], r, name=n) for n, r in t.shifted.items()},
                shifted_classes=dict(t.shifted_classes),
                detection_id=(
                    pick(eval_pool, t.detection_id, name="detection_id")
                    if t.detection_id is not None
                    else None
                ),
                meta={
                    "protocol": "imagenet",
                    "shots": cfg.shots,
                    "id_classes": list(names),
                    "val_source": cfg.val_source,
                    "detection_id_set": cfg.detection_id,
                    "ood_draw": cfg.ood_draw,
                    "ar_protocol": cfg.ar_protocol,
                    "ood_sizes": {k: len(v) for k, v in ood_sets.items()},
                },
            )

    records = _run_tasks(cfg, tasks(), len(task_records), methods, out, show)
    return {
        "records": records,
        "out_dir": str(out),
        "ood": [OPEN_SET_NAME, *extra_ood],
        "shifted": list(variants),
    }
