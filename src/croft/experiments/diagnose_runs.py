"""``croft diagnose`` on the run folders ``croft run`` writes: the task is rebuilt, then
:func:`croft.diagnose.diagnose_heads` runs unchanged.

A run folder ``<out>/runs/<label>/<held_out>_seed<k>/`` holds ``head/``, ``metrics.json``
and ``run_key.json`` but no features; ``<out>/config.resolved.json`` (the resolved
experiment config) says how they were made. :func:`diagnose_runs` rebuilds the run's
(held-out domain, seed) task through the protocol's own task building (the same records,
extractions and views as ``croft run``; the keyed feature store makes a second call
cheap), checks that the rebuilt task's data key equals the one in every run's
``run_key.json`` (else the features would not be those the heads were fitted on), and
diagnoses on

* ``train``: the few-shot ID training features (view 0) with their source domains
  (groups ``train:<domain>`` and ``train``),
* ``heldout``: the held-out domain's test images (labelled),
* every extra target / covariate-shifted set under its own name (labelled),
* every OOD set under its config name (labels -1: energy-gradient norms only); a name
  already taken gets the prefix ``ood:``.

Every run folder given together must belong to the same experiment folder and the same
(held-out domain, seed) task. ``x`` is looked up in each run's grid-point options, then
its resolved method config (``config.json``), then the head's own config.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from croft.diagnose import DiagnoseOptions, diagnose_heads, require_adapter
from croft.diagnose.output import RUN_INPUTS
from croft.errors import CroftError
from croft.experiments.config import ExperimentBase
from croft.experiments.records import METRICS, RUN_KEY, read_run, read_run_key
from croft.experiments.task import Task
from croft.features.files import FeatureSet
from croft.fileio import read_json

log = logging.getLogger(__name__)

RESOLVED = "config.resolved.json"


@dataclass(frozen=True)
class ExperimentRun:
    """One run folder of ``croft run`` and what diagnosing it needs."""

    path: Path  # the run folder
    experiment: Path  # <out>, holding config.resolved.json
    label: str  # the grid point's label, e.g. croft[lambda2=10.0]
    test_domain: str
    seed: int
    config: dict[str, Any] = field(default_factory=dict)  # options > config.json > head's
    data_key: str | None = None  # the task's data key in run_key.json


@dataclass
class RunDiagnosis:
    """What :func:`diagnose_runs` returns (``croft diagnose`` writes it unchanged)."""

    rows: list[dict[str, Any]]  # tidy rows, croft.diagnose.COLUMNS
    x_name: str  # the x key, or "head index"
    meta: dict[str, Any]  # what diagnostics.json records besides the rows


def is_experiment_run(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a run folder written by ``croft run`` (``run_key.json`` and
    ``metrics.json``, no ``features.json`` naming its own feature files)."""
    p = Path(path)
    return (p / RUN_KEY).is_file() and (p / METRICS).is_file() and not (p / RUN_INPUTS).is_file()


def read_experiment_run(path: str | os.PathLike[str]) -> ExperimentRun:
    """The run folder ``path``; one-line errors for a folder diagnose cannot rebuild."""
    from croft.methods.io import read_head_meta

    p = Path(path)
    rec = read_run(p)
    if rec is None:
        raise CroftError(f"{p}: no metrics.json; pass a finished run folder of 'croft run'")
    root = p.resolve()
    experiment = root.parents[2] if len(root.parents) > 2 else root
    layout = f"<out>/runs/<label>/{rec.test_domain}_seed{rec.seed}"
    if root.parent.parent.name != "runs":
        raise CroftError(
            f"{p}: not inside an experiment folder ({layout}); diagnose needs the run folder "
            f"where 'croft run' wrote it, next to its {RESOLVED}"
        )
    if not (experiment / RESOLVED).is_file():
        raise CroftError(
            f"{p}: no {RESOLVED} in {experiment}, so the run's data cannot be rebuilt; keep the "
            f"run folder at {layout} with the {RESOLVED} 'croft run' wrote to <out>"
        )
    if rec.head_dir is None:
        raise CroftError(f"{p}: the run saved no head (head/head.json); rerun it with heads saved")
    head_cfg = read_head_meta(rec.head_dir).get("config") or {}
    config = {**head_cfg, **(rec.run_config or {}), **dict(rec.metrics.get("options") or {})}
    stored = read_run_key(p) or {}
    return ExperimentRun(
        p, experiment, rec.label, rec.test_domain, rec.seed, config, stored.get("data_key")
    )


def load_resolved(experiment: str | os.PathLike[str]) -> ExperimentBase:
    """The typed experiment config of ``<experiment>/config.resolved.json``."""
    from croft.experiments.loading import build_config

    path = Path(experiment) / RESOLVED
    doc = read_json(path, "resolved experiment config")
    if not isinstance(doc, dict):
        raise CroftError(f"{path}: expected the mapping 'croft run' writes")
    cfg = build_config(doc, str(path))
    cfg.check()
    return cfg


def rebuild_task(
    cfg: ExperimentBase, test_domain: str, seed: int, *, device: str = "cpu", progress: bool = False
) -> Task:
    """The (``test_domain``, ``seed``) task of ``cfg``, built as ``croft run`` builds it
    (every task's extraction through the feature store, then this task's rows)."""
    from croft.backbones import load_backbone
    from croft.experiments.checks import check_weights
    from croft.experiments.protocols import PROTOCOLS

    proto = PROTOCOLS.get(cfg.protocol)
    records = proto.records(cfg)
    pairs = proto.pairs(records)
    if (test_domain, seed) not in pairs:
        have = ", ".join(f"{d} seed {s}" for d, s in pairs)
        raise CroftError(
            f"({test_domain}, seed {seed}) is not a task of the experiment's {RESOLVED} "
            f"({have}); was it rewritten by a later 'croft run' with other held_out or seeds?"
        )
    problem = check_weights(cfg.backbone) if cfg.IMAGES else None
    if problem:
        raise CroftError(problem)
    backbone = (
        load_backbone(cfg.backbone, device=device, precision=cfg.precision) if cfg.IMAGES else None
    )
    tasks, _n, _info = proto.tasks(cfg, records, backbone, progress)
    for task in tasks:
        if (task.test_domain, task.seed) == (test_domain, seed):
            return task
    raise CroftError(f"({test_domain}, seed {seed}): the protocol built no such task")


def task_sets(task: Task) -> tuple[FeatureSet, dict[str, FeatureSet], dict[str, str]]:
    """``(train, {name: set}, {name: kind})``: the diagnosed sets of a task (see the module
    docstring; kinds ``heldout``, ``shifted``, ``ood``)."""
    sets: dict[str, FeatureSet] = {"heldout": task.test}
    kinds = {"heldout": "heldout"}
    for kind, group in (("shifted", task.shifted), ("ood", task.ood_sets)):
        for name, fs in group.items():
            key = name if name not in sets and not name.startswith("train") else f"{kind}:{name}"
            sets[key], kinds[key] = fs, kind
    return task.train, sets, kinds


def _check_data(runs: Sequence[ExperimentRun], task: Task) -> None:
    from croft.experiments.runkey import task_data, task_data_key

    key = task_data_key(task)
    for r in runs:
        if r.data_key is None:
            warnings.warn(
                f"{r.path}: run_key.json holds no data key, so the rebuilt features cannot be "
                "checked against those the head was fitted on",
                stacklevel=3,
            )
        elif r.data_key != key:
            stored = (read_run_key(r.path) or {}).get("data") or {}
            now = task_data(task)
            changed = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
            raise CroftError(
                f"{r.path}: the data rebuilt from {r.experiment / RESOLVED} differs from the "
                f"data this run was fitted on ({', '.join(changed[:3]) or 'data key'}); the file "
                "or the dataset changed after the run: rerun 'croft run' into that folder first"
            )


def _one_task(runs: Sequence[ExperimentRun]) -> None:
    paths = [r.path.resolve() for r in runs]
    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise CroftError(f"run folder {twice[0]} given twice; give each run folder once")
    exps = sorted({str(r.experiment) for r in runs})
    if len(exps) > 1:
        raise CroftError(
            f"run folders from different experiments ({exps[0]} and {exps[1]}); diagnose one "
            "experiment's runs at a time"
        )
    tasks = sorted({(r.test_domain, r.seed) for r in runs})
    if len(tasks) > 1:
        (d1, s1), (d2, s2) = tasks[:2]
        raise CroftError(
            f"run folders of different tasks ({d1}_seed{s1} and {d2}_seed{s2}); give the runs "
            f"of one (held-out domain, seed) task, e.g. <out>/runs/*/{d1}_seed{s1}"
        )


def diagnose_runs(
    paths: Sequence[str | os.PathLike[str]],
    options: DiagnoseOptions | None = None,
    *,
    x_key: str = "lambda2",
    device: str = "cpu",
    progress: bool = False,
) -> RunDiagnosis:
    """Diagnose the heads of ``croft run`` run folders of one task (see the module docstring).

    ``options``: how to measure (default :class:`~croft.diagnose.DiagnoseOptions`);
    ``device``: where the backbone runs when a feature set is not cached yet. Every input
    error (folders, head kinds, mixed tasks) is raised before any extraction.
    """
    from croft._version import __version__
    from croft.experiments.protocols import run_threads
    from croft.methods import load_head

    if not paths:
        raise CroftError("give at least one run folder")
    options = options or DiagnoseOptions()
    options.check()
    runs = [read_experiment_run(p) for p in paths]
    _one_task(runs)
    heads = {}
    for r in runs:
        heads[r.label] = require_adapter(load_head(r.path / "head"), f"{r.path} ({r.label})")
    cfg = load_resolved(runs[0].experiment)
    with run_threads():  # croft run's thread rule, for the extraction and the measurements
        task = rebuild_task(
            cfg, runs[0].test_domain, runs[0].seed, device=device, progress=progress
        )
        _check_data(runs, task)
        train, sets, kinds = task_sets(task)
        configs = {r.label: r.config for r in runs}
        rows, x_name = diagnose_heads(heads, train, sets, options, x_key=x_key, configs=configs)
    meta = {
        "croft_version": __version__,
        "options": {**dataclasses.asdict(options), "params": list(options.params)},
        "experiment": str(runs[0].experiment),
        "task": {"held_out": task.test_domain, "seed": task.seed},
        "heads": {r.label: str(r.path.resolve()) for r in runs},
        "train": {"rows": len(train), "domains": _domains(train)},
        "sets": {name: {"kind": kinds[name], "rows": len(fs)} for name, fs in sets.items()},
    }
    return RunDiagnosis(rows, x_name, meta)


def _domains(fs: FeatureSet) -> list[str]:
    if fs.domains is None:
        return []
    return [fs.domain_names[int(d)] for d in sorted(set(fs.domains.tolist()))]
