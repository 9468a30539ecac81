"""The one experiment runner: for every task and grid point, reuse or fit → evaluate → save.

The runner decides (run key) and delegates: :func:`croft.methods` fits,
:func:`croft.experiments.evaluate.evaluate_task` evaluates,
:func:`croft.experiments.records.write_run` saves. A rerun reuses a finished run whose
key matches, redoes an interrupted one, and refuses a folder that holds other work.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from croft.conventions import Conventions
from croft.errors import CroftError
from croft.experiments.evaluate import evaluate_task
from croft.experiments.grid import MethodRun, method_config
from croft.experiments.records import (
    METRICS,
    RunRecord,
    read_run,
    read_run_key,
    run_dir,
    write_run,
    write_run_key,
)
from croft.experiments.runkey import config_document, difference, make_key, refuse, task_data
from croft.experiments.task import Task
from croft.fileio import inside

log = logging.getLogger(__name__)


def run_status(out: Path, run: MethodRun, domain: str, seed: int, settings: Mapping) -> str:
    """``new``, ``reuse``, ``resume`` (interrupted) or ``conflict: <why>`` — config part only."""
    rdir = run_dir(out, run.label, domain, seed)
    options = dataclasses.asdict(method_config(run, seed))
    new = make_key(config_document(settings, run.method, options, domain, seed), None)
    stored = read_run_key(rdir)
    if stored is None:
        return "conflict: a run without a run key" if (rdir / METRICS).is_file() else "new"
    if stored.get("config_key") != new["config_key"]:
        return f"conflict: {difference(stored, new)}"
    return "reuse" if (rdir / METRICS).is_file() else "resume"


def check_plan(out: Path, plan: Iterable[tuple[MethodRun, str, int]], settings: Mapping) -> None:
    """Refuse, before any work, a folder whose runs were made with other settings."""
    for run, domain, seed in plan:
        status = run_status(out, run, domain, seed, settings)
        if status.startswith("conflict"):
            raise refuse(run_dir(out, run.label, domain, seed), out, status.split(": ", 1)[1])


def discard_runs(out: str | os.PathLike[str]) -> None:
    """``--fresh``: remove ``out/runs`` (nothing else)."""
    runs = inside(out, "runs")
    if runs.is_dir():
        log.info("discarding %s (--fresh)", runs)
        shutil.rmtree(runs)


def fit_method(run: MethodRun, task: Task, device: str) -> tuple[Any, Any, float]:
    """``(method config, FitResult, seconds)`` for one run on one task."""
    from croft.methods import METHODS

    cfg = method_config(run, task.seed)
    t0 = time.perf_counter()
    result = METHODS.get(run.method).fit(task.train, task.val, cfg, device=device)
    return cfg, result, time.perf_counter() - t0


def run_one(
    run: MethodRun,
    task: Task,
    rdir: Path,
    key: Mapping[str, Any],
    *,
    scores: Sequence[str],
    score_params: Mapping[str, Mapping[str, Any]] | None,
    device: str,
    save_heads: bool,
    conventions: Conventions | None = None,
) -> RunRecord:
    """Fit, evaluate and save one run into ``rdir`` (its key is written first).

    ``conventions`` give an adapter head its detection ratios before it is evaluated and
    saved (so ``head.json`` carries them) and decide the detection side of the evaluation.
    """
    from croft.provenance import environment

    write_run_key(rdir, key)
    cfg, result, seconds = fit_method(run, task, device)
    conv = conventions or Conventions()
    conv.apply_to_head(result.head)
    fields, per_sample = evaluate_task(result.head, task, scores, score_params, conv)
    metrics = {
        "label": run.label,
        "method": run.method,
        "options": dict(run.options),
        "test_domain": task.test_domain,
        "seed": task.seed,
        "selected_epoch": result.selected_epoch,
        "fit_seconds": seconds,
        "scores": list(scores),
        "ood_sets": list(task.ood_sets),
        "run_key": key["run_key"],
        "selection": result.selection,
        **fields,
        **task.meta,
    }
    return write_run(
        rdir,
        metrics,
        config={"method": run.method, "config": dataclasses.asdict(cfg)},
        env=environment(),
        per_sample=per_sample,
        head=result.head if save_heads else None,
        head_meta=head_provenance(run, cfg, result, task) if save_heads else None,
    )


def head_provenance(run: MethodRun, cfg: Any, result: Any, task: Task) -> dict[str, Any]:
    """What ``croft fit`` records in head.json (:func:`croft.methods.saving.provenance`,
    with the OOD threshold from source validation) plus the run's label."""
    from croft.methods.saving import provenance

    return {**provenance(run.method, cfg, result, task.train, task.val), "label": run.label}


def run_grid(
    tasks: Iterable[Task],
    methods: Sequence[MethodRun],
    out_dir: str | os.PathLike[str],
    *,
    settings: Mapping[str, Any] | None = None,
    scores: Sequence[str] = ("energy", "knn"),
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    device: str = "cpu",
    save_heads: bool = True,
    conventions: Conventions | None = None,
) -> list[dict[str, Any]]:
    """Every method on every task; returns every run's metrics (reused or new).

    ``settings``: the resolved experiment settings that change a run (run key; it should
    hold the resolved ``conventions``). ``conventions``: the evaluation conventions
    (default croft's, :mod:`croft.conventions`).
    """
    out = Path(out_dir)
    settings = dict(settings or {})
    for m in methods:  # validate every method and option before any work
        method_config(m)
    records = []
    for task in tasks:
        data = task_data(task)
        for m in methods:
            rdir = run_dir(out, m.label, task.test_domain, task.seed)
            options = dataclasses.asdict(method_config(m, task.seed))
            doc = config_document(settings, m.method, options, task.test_domain, task.seed)
            key = make_key(doc, data)
            stored = read_run_key(rdir)
            rec = None
            if stored is not None and stored.get("run_key") != key["run_key"]:
                raise refuse(rdir, out, difference(stored, key))
            if stored is None and (rdir / METRICS).is_file():
                raise refuse(rdir, out, "an older croft (no run key)")
            if stored is not None:
                rec = read_run(rdir)
            if rec is None:
                kw = {"scores": scores, "score_params": score_params, "device": device}
                kw["conventions"] = conventions
                rec = run_one(m, task, rdir, key, save_heads=save_heads, **kw)
            records.append(rec.metrics)
            if on_result is not None:
                on_result(rec.metrics)
    return records


def planned(methods: Sequence[MethodRun], tasks: Iterable[tuple[str, int]]) -> list[tuple]:
    """``(run, domain, seed)`` for every grid point on every (domain, seed)."""
    return [(m, d, s) for d, s in tasks for m in methods]


__all__ = ["CroftError", "check_plan", "discard_runs", "planned", "run_grid", "run_status"]
