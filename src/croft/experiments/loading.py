"""Reading an experiment YAML: overrides, protocol dispatch, typed build, paths, checks.

Relative data roots and weight paths are relative to the YAML file's folder (dataset roots
to ``data_root`` when it is set: :mod:`croft.experiments.run_defaults`, with ``defaults``).
``--set`` items use the one grammar of :mod:`croft.overrides`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from croft.errors import CroftError
from croft.experiments.checks import check_device, check_weights
from croft.experiments.config import DataSpec, ExperimentBase
from croft.experiments.configs import CONFIGS
from croft.experiments.grid import expand_methods, method_config
from croft.experiments.run_defaults import apply_run_defaults, env_data_root, method_option_hint
from croft.experiments.typed import build
from croft.fileio import parse_yaml
from croft.limits import check_limit
from croft.overrides import apply_overrides


def read_document(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The YAML mapping of an experiment file with ``key.path=value`` overrides applied."""
    p = Path(path)
    if not p.is_file():
        raise CroftError(f"experiment file {str(p)!r} does not exist")
    check_limit("json_bytes", p.stat().st_size, f"{p}: size in bytes")
    try:
        text = p.read_text()
    except UnicodeDecodeError as exc:
        raise CroftError(f"{p}: not valid YAML ({exc})") from None
    doc = parse_yaml(text, str(p)) or {}
    if not isinstance(doc, dict):
        raise CroftError(f"{p}: expected a mapping of settings, got {type(doc).__name__}")
    env_data_root(doc, overrides)
    apply_overrides(doc, overrides)
    return doc


def build_config(doc: dict[str, Any], where: str) -> ExperimentBase:
    """The protocol's typed config from a document (no path resolution)."""
    protocol = doc.get("protocol", "lodo")
    if protocol not in CONFIGS:
        known = ", ".join(CONFIGS)
        raise CroftError(f"protocol {protocol!r} is not known; use one of: {known}")
    cls = CONFIGS[protocol]
    # ``demo:``: croft demo's settings for a packaged demo config, not part of the experiment
    doc = apply_run_defaults({k: v for k, v in doc.items() if k != "demo"}, where)
    for other, ocls in CONFIGS.items():
        if other == protocol:
            continue
        own = set(cls.__dataclass_fields__)
        foreign = sorted(k for k in doc if k in ocls.__dataclass_fields__ and k not in own)
        if foreign:
            raise CroftError(
                f"{where}: {foreign[0]} applies to protocol {other} only; remove it "
                f"(this file is protocol {protocol})"
            )
    unknown = sorted(k for k in doc if k not in cls.__dataclass_fields__ and k != "protocol")
    hint = method_option_hint(doc, unknown, list(cls.__dataclass_fields__)) if unknown else ""
    if hint:
        raise CroftError(f"{where}: unknown key(s) {', '.join(unknown)}; {hint}")
    cfg = build(cls, {**doc, "protocol": protocol}, where)
    _name_sets(cfg)
    return cfg


def _name_sets(cfg: ExperimentBase) -> None:
    for i, o in enumerate(cfg.ood):
        if o.per_fold and not o.name:
            raise CroftError(f"ood {o.root}: a root with {{held_out}} needs a name (name: ...)")
        o.name = o.name or Path(o.root).name or f"ood{i}"
    for i, o in enumerate(getattr(cfg, "shifted", [])):
        o.name = o.name or _variant_name(o) or Path(o.root).name or f"shifted{i}"


def _variant_name(spec: DataSpec) -> str:
    """``imagenet_v2`` etc. for an ImageNet-variant spec, else empty."""
    from croft.data.imagenet import VARIANTS, imagenet_variant

    if spec.layout != "imagenet" or not spec.options.get("variant"):
        return ""
    return VARIANTS[imagenet_variant(str(spec.options["variant"]))]


def load_experiment(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> ExperimentBase:
    """Read a YAML experiment, apply ``key.path=value`` overrides, type-check, validate."""
    p = Path(path)
    cfg = build_config(read_document(p, overrides), str(p))
    resolve_paths(cfg, p.parent)
    cfg.check()
    for run in expand_methods(cfg.methods):  # every option of every grid point, now
        method_config(run, cfg.seeds[0])
    return cfg


def resolve_paths(cfg: ExperimentBase, base: Path) -> None:
    """Make relative data roots and the weight path relative to ``base`` (the YAML's folder)."""
    if not cfg.IMAGES:
        return
    for spec in [cfg.data, *cfg.ood, *getattr(cfg, "shifted", [])]:
        if not os.path.isabs(spec.root) and not spec.root.startswith("~"):
            spec.root = str((base / spec.root).resolve())
        spec.root = os.path.expanduser(spec.root)
    cfg.backbone = resolve_backbone_path(cfg.backbone, base)


def resolve_backbone_path(spec: str, base: Path) -> str:
    """The spec with a relative weight path made relative to ``base`` (the loader's parser)."""
    from croft.backbones.loader import parse_spec

    parsed = parse_spec(spec)
    if parsed.path is None:
        return spec
    raw = spec.rpartition(":")[2] if parsed.arch else spec.partition(":")[2]
    if os.path.isabs(os.path.expanduser(raw)):
        return spec
    candidate = (base / raw).resolve()
    if parsed.kind != "openclip" and not candidate.exists():
        return spec  # openai/hf: keep a path that only exists relative to the working dir
    prefix = f"{parsed.kind}:{parsed.arch}:" if parsed.arch else f"{parsed.kind}:"
    return f"{prefix}{candidate}"


def plan_lines(cfg: ExperimentBase) -> list[str]:
    """What the experiment would run, one line each: its evaluation conventions, then every
    method row with its grid points (``croft run --check`` prints them)."""
    conv = cfg.evaluation_conventions()
    runs = expand_methods(cfg.methods)
    lines = [f"conventions: {conv.name} ({', '.join(f'{k}={v}' for k, v in _fields(conv))})"]
    lines.append(f"methods: {len(cfg.methods)} rows, {len(runs)} runs per task")
    for m in cfg.methods:
        points = [r.label for r in runs if r.label == m.label or r.label.startswith(m.label + "[")]
        grid = f" ({len(points)} grid points: {', '.join(points)})" if m.grid else ""
        lines.append(f"  {m.label}: {m.method}{grid}")
    return lines


def _fields(conv: Any) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in conv.to_dict().items() if k != "name"]


def check_experiment(cfg: ExperimentBase) -> list[str]:
    """Every problem found without running: methods, weights, device, datasets, domains."""
    problems = []
    for m in expand_methods(cfg.methods):
        try:
            method_config(m, cfg.seeds[0])
        except CroftError as exc:
            problems.append(str(exc))
    weights = check_weights(cfg.backbone) if cfg.IMAGES else None
    problems += [p for p in (weights, check_device(cfg.device)) if p]
    if not cfg.IMAGES:
        return problems
    specs = [("data", "data.root", cfg.data)]
    specs += [(f"ood {o.name}", f"ood.{i}.root", o) for i, o in enumerate(cfg.ood)
              if not o.per_fold]  # fmt: skip
    specs += [(f"shifted {o.name}", f"shifted.{i}.root", o)
              for i, o in enumerate(getattr(cfg, "shifted", []))]  # fmt: skip
    data_ok = True
    for what, key, spec in specs:
        found = _layout_problems(spec)
        data_ok = data_ok and (what != "data" or not found)
        where = f"{spec.root}, layout {spec.layout}; fix {key} or data_root"
        problems += [f"{what} ({where}): {p}" for p in found]
    if data_ok:
        from croft.experiments.protocols import PROTOCOLS

        proto = PROTOCOLS.get(cfg.protocol)
        try:  # held-out domains, class splits: the task records without any extraction
            held = sorted({dom for dom, _ in proto.pairs(proto.records(cfg))})
        except CroftError as exc:
            problems.append(str(exc))
            held = []
        for o in (o for o in cfg.ood if o.per_fold):  # each held-out domain's own folder
            for dom in held:
                spec = o.for_held_out(dom)
                problems += [
                    f"ood {o.name} ({spec.root}, layout {spec.layout}): {p}"
                    for p in _layout_problems(spec)
                ]
    return problems


def _layout_problems(spec: DataSpec) -> list[str]:
    from croft.data import check_layout

    try:
        return check_layout(spec.root, spec.layout, **spec.options)
    except CroftError as exc:
        return [str(exc)]
