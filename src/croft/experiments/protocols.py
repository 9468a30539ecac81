"""Protocols in the one registry style, and ``run_experiment`` on top of them.

A protocol is a config class, ``records(cfg)`` (the task records, read from the dataset
indices once, no extraction), ``pairs(records)`` (the (held-out domain, seed) of each
task) and ``tasks(cfg, records, backbone, show)`` (extract through the feature store;
returns the task iterator, its length and result info).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from croft.errors import CroftError
from croft.experiments import synthetic, tasks_imagenet, tasks_lodo
from croft.experiments.checks import check_device, check_weights
from croft.experiments.config import ExperimentBase
from croft.experiments.grid import expand_methods
from croft.experiments.plan import PlannedRun, plan_runs
from croft.experiments.records import read_run
from croft.experiments.runner import check_plan, discard_runs, run_plan, run_status, shard_of
from croft.fileio import atomic_write_json
from croft.progress import progress as progress_bar
from croft.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    """A registered protocol."""

    name: str
    records: Callable[[Any], Any]
    pairs: Callable[[Any], list[tuple[str, int]]]
    tasks: Callable[[Any, Any, Any, bool], tuple[Any, int, dict[str, Any]]]


PROTOCOLS: Registry[Protocol] = Registry("protocol")
PROTOCOLS.register("lodo", "Setup-II: leave one domain out, open-set detection")(
    Protocol("lodo", tasks_lodo.build_tasks, tasks_lodo.pairs, tasks_lodo.lodo_tasks)
)
PROTOCOLS.register("imagenet", "Setup-I: ImageNet class split, shifted ImageNet variants")(
    Protocol(
        "imagenet",
        tasks_imagenet.build_setup1_tasks,
        tasks_imagenet.pairs,
        tasks_imagenet.imagenet_tasks,
    )
)

PROTOCOLS.register("synthetic", "Setup-II on the feature-space simulator (synthetic features)")(
    Protocol(
        "synthetic",
        synthetic.records,
        synthetic.pairs,
        synthetic.synthetic_tasks,
    )
)


def dry_run(
    cfg: ExperimentBase, out_dir: str | os.PathLike[str], shards: int = 1
) -> list[tuple[str, str, int]]:
    """``(run folder relative to out, status, part)`` for every planned run; nothing is
    written. ``part``: the 1-based :func:`shard_of` among ``shards`` parts."""
    proto = PROTOCOLS.get(cfg.protocol)
    plan = experiment_plan(cfg, proto.pairs(proto.records(cfg)), out_dir)
    return [
        (f"runs/{p.label}/{p.test_domain}_seed{p.seed}", run_status(p),
         shard_of(p.config_key, shards))
        for p in plan
    ]  # fmt: skip


def experiment_plan(
    cfg: ExperimentBase,
    pairs: list[tuple[str, int]],
    out_dir: str | os.PathLike[str],
    shard: tuple[int, int] | None = None,
) -> list[PlannedRun]:
    """Every planned run of ``cfg`` on ``pairs`` (only part K of N with ``shard=(K, N)``),
    each method config built once here."""
    plan = plan_runs(expand_methods(cfg.methods), pairs, cfg.run_settings(), out_dir)
    if shard is None:
        return plan
    return [p for p in plan if shard_of(p.config_key, shard[1]) == shard[0]]


def _data_roots(cfg: ExperimentBase) -> list[tuple[str, Path]]:
    """``(name, root)`` of every dataset the experiment reads (a ``{held_out}`` root: the
    folder above the placeholder)."""
    from croft.experiments.config import HELD_OUT, DataSpec

    found: list[tuple[str, Path]] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        specs = value if isinstance(value, list) else [value]
        for i, spec in enumerate(specs):
            if isinstance(spec, DataSpec):
                name = f.name if spec is value else f"{f.name}.{i}"
                found.append((name, Path(spec.root.split(HELD_OUT, 1)[0] or ".")))
    return found


def refuse_out_inside_data(cfg: ExperimentBase, out: Path) -> None:
    """An output folder inside a dataset root would be scanned as part of the dataset (a
    class folder without images) on every later run: refuse it before anything is written."""
    target = out.expanduser().resolve()
    for name, root in _data_roots(cfg):
        base = root.expanduser().resolve()
        if target == base or base in target.parents:
            raise CroftError(
                f"--out {out} lies inside the dataset root {root} ({name}.root); its run "
                "folders would be read as part of the dataset: choose an --out outside it"
            )


def run_experiment(
    cfg: ExperimentBase,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool | None = None,
    fresh: bool = False,
    shard: tuple[int, int] | None = None,
    workers: int | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Extract (cached), fit and evaluate every method on every task; write run folders.

    A rerun into ``out_dir`` reuses finished runs with the same run key and refuses
    (before any work) runs made with other settings, unless ``fresh`` discards them.
    ``shard=(K, N)``: only the K-th (1-based) of N disjoint parts of the grid
    (:func:`croft.experiments.runner.shard_of`); every part writes its own run folders.
    ``workers``: fit worker processes (:func:`croft.experiments.workers.fit_workers`;
    None: ``CROFT_FIT_WORKERS``, else one per CPU); with more than one, the parent
    extracts and each worker fits a shard (:mod:`croft.experiments.workers`).
    ``on_result(metrics)``: after every run (in-process only).

    Torch threads: :func:`run_threads` (a worker: one).
    """
    with run_threads():
        return _run_experiment(
            cfg, out_dir, progress=progress, fresh=fresh, shard=shard, workers=workers,
            on_result=on_result,
        )  # fmt: skip


@contextlib.contextmanager
def run_threads() -> Iterator[int]:
    """Torch threads for an experiment's extraction, fits and evaluation (restored after):
    ``CROFT_THREADS`` if set, else half the CPUs (at least 1; batched fits use
    :func:`croft.methods.croft.engine.default_threads` inside). On the 2-core reference machine
    shared with other work that is one thread: two made extraction 3-4x and the
    non-batched fits 3x slower in wall time (BENCHMARKS.md, the demo on world v2). Half is
    a guess for larger machines, not a measurement: it leaves room for a second process;
    set ``CROFT_THREADS`` to use more. Yields the thread count.
    """
    import torch

    from croft.methods.croft.engine import default_threads

    old_threads = torch.get_num_threads()
    threads = default_threads(fallback=(os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(old_threads)


def _run_experiment(
    cfg: ExperimentBase,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool | None,
    fresh: bool,
    shard: tuple[int, int] | None,
    workers: int | None,
    on_result: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    from croft.backbones import load_backbone
    from croft.experiments.workers import fit_workers, run_in_workers

    show = cfg.progress if progress is None else progress
    out = Path(out_dir)
    problem = check_device(cfg.device) or (check_weights(cfg.backbone) if cfg.IMAGES else None)
    if problem:
        raise CroftError(problem)
    proto = PROTOCOLS.get(cfg.protocol)
    records = proto.records(cfg)
    plan = experiment_plan(cfg, proto.pairs(records), out, shard)
    if fresh:  # a shard discards only its own part's folders (others may share the --out)
        discard_runs(out, None if shard is None else [p.folder for p in plan])
    refuse_out_inside_data(cfg, out)
    check_plan(out, plan)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.resolved.json", dataclasses.asdict(cfg))
    backbone = (
        load_backbone(cfg.backbone, device=cfg.device, precision=cfg.precision)
        if cfg.IMAGES
        else None
    )
    todo = sum(run_status(p) != "reuse" for p in plan)
    n_workers = fit_workers(workers, device=cfg.device, runs=todo)
    tasks, _n_tasks, info = proto.tasks(cfg, records, backbone, show)  # extracts
    if n_workers > 1:  # the features are cached now: every worker reads them
        del tasks, backbone
        with progress_bar(len(plan), "runs", "run", enabled=show) as bar:
            bar.update(len(plan) - todo)
            run_in_workers(
                run_experiment, cfg, out, n_workers, shard=shard, on_result=lambda: bar.update(1)
            )
        found = [read_run(p.folder) for p in plan]
        return {"records": [rec.metrics for rec in found], "out_dir": str(out), **info}

    def done(metrics: dict[str, Any]) -> None:
        bar.update(1)
        if on_result is not None:
            on_result(metrics)

    with progress_bar(len(plan), "runs", "run", enabled=show) as bar:
        records = run_plan(
            tasks,
            plan,
            out,
            scores=cfg.score_specs(),
            on_result=done,
            device=cfg.device,
            conventions=cfg.evaluation_conventions(),
            fit_engine=cfg.fit_engine,
            fit_progress=show,
        )
    return {"records": records, "out_dir": str(out), **info}
