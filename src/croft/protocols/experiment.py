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
"""

from __future__ import annotations

import dataclasses
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

    def check(self) -> None:
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
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise CroftError(f"{where}: {exc}") from None


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
    for spec in [cfg.data, *cfg.ood]:  # relative data roots are relative to the YAML file
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


def run_experiment(
    cfg: ExperimentConfig, out_dir: str | os.PathLike[str], *, progress: bool | None = None
) -> dict[str, Any]:
    """Extract (cached), fit and evaluate every method on every task; write run dirs."""
    from croft.backbones import load_backbone
    from croft.data import read_layout
    from croft.features import ViewSpec, extract_features, extract_text_features
    from croft.protocols.lodo import run_grid

    show = cfg.progress if progress is None else progress
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = dataclasses.asdict(cfg)
    (out / "config.resolved.json").write_text(json.dumps(resolved, indent=2, sort_keys=True))
    methods = expand_methods(cfg.methods)
    full, task_records = build_tasks(cfg)
    backbone = load_backbone(cfg.backbone, device=cfg.device, precision=cfg.precision)
    common = {
        "cache_dir": cfg.cache or None,
        "batch_size": cfg.batch_size,
        "workers": cfg.workers,
        "progress": show,
    }
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

    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(task_records) * len(methods), desc="runs", unit="run")
    records = run_grid(
        tasks(),
        methods,
        out,
        scores=cfg.scores,
        score_params={"knn": {"k": cfg.knn_k}} if "knn" in cfg.scores else None,
        on_result=(lambda r: bar.update(1)) if bar else None,
    )
    if bar is not None:
        bar.close()
    return {"records": records, "out_dir": str(out), "ood": list(ood_sets)}
