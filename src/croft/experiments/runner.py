"""The one experiment runner: for every task and grid point, reuse or fit → evaluate → save.

It works on planned runs (:class:`~croft.experiments.plan.PlannedRun`: the method config
built once, the config key, the folder), handed over as they are to the fit, the batched
engine and the run record. The runner decides (run key) and delegates: :func:`croft.methods` fits,
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from croft.conventions import Conventions
from croft.errors import CroftError
from croft.experiments.evaluate import evaluate_task, task_detectors
from croft.experiments.grid import MethodRun
from croft.experiments.plan import PlannedRun, plan_run, plan_runs
from croft.experiments.records import METRICS, RunRecord, read_run, read_run_key, write_run
from croft.experiments.runkey import difference, refuse, task_data
from croft.experiments.task import Task
from croft.fileio import inside
from croft.score_lists import score_specs

log = logging.getLogger(__name__)


def run_status(p: PlannedRun) -> str:
    """``new``, ``reuse``, ``resume`` (interrupted) or ``conflict: <why>`` — config part only."""
    stored = read_run_key(p.folder)
    if stored is None:
        return "conflict: a run without a run key" if (p.folder / METRICS).is_file() else "new"
    if stored.get("config_key") != p.config_key:
        return f"conflict: {difference(stored, p.key(None))}"
    return "reuse" if (p.folder / METRICS).is_file() else "resume"


def check_plan(out: Path, plan: Iterable[PlannedRun]) -> None:
    """Refuse, before any work, a folder whose runs were made with other settings."""
    for p in plan:
        status = run_status(p)
        if status.startswith("conflict"):
            raise refuse(p.folder, out, status.split(": ", 1)[1])


def discard_runs(out: str | os.PathLike[str], folders: Iterable[Path] | None = None) -> None:
    """``--fresh``: remove ``out/runs`` (nothing else), or only the run ``folders`` given
    (``--shard``: this part's runs; the other parts may share ``out``)."""
    runs = inside(out, "runs")
    if folders is None:
        if runs.is_dir():
            log.info("discarding %s (--fresh)", runs)
            shutil.rmtree(runs)
        return
    for rdir in folders:
        if rdir.is_dir() and rdir.resolve().is_relative_to(runs.resolve()):
            log.info("discarding %s (--fresh)", rdir)
            shutil.rmtree(rdir)


FIT_ENGINES = ("auto", "batched", "sequential")


def fit_method(p: PlannedRun, task: Task, device: str) -> tuple[Any, Any, float]:
    """``(method config, FitResult, seconds)`` for one planned run on its task."""
    from croft.methods import METHODS

    t0 = time.perf_counter()
    result = METHODS.get(p.method).fit(task.train, task.val, p.config, device=device)
    return p.config, result, time.perf_counter() - t0


def run_one(
    run: PlannedRun,
    task: Task,
    key: Mapping[str, Any],
    *,
    scores: Sequence[Any],
    score_params: Mapping[str, Mapping[str, Any]] | None,
    device: str,
    save_heads: bool,
    conventions: Conventions | None = None,
    fitted: tuple[Any, Any, float] | None = None,
) -> RunRecord:
    """Fit (unless ``fitted`` = :func:`fit_method`'s triple is given), evaluate and save one
    run into its folder (its key is written first). The one place a run is evaluated and written.

    ``conventions`` give an adapter head its detection ratios before it is evaluated and
    saved (so ``head.json`` carries them) and decide the detection side of the evaluation.
    """
    from croft.provenance import environment

    cfg, result, seconds = fitted or fit_method(run, task, device)
    conv = conventions or Conventions()
    conv.apply_to_head(result.head)
    detectors = task_detectors(result.head, task, scores, score_params, conv)
    fields, per_sample = evaluate_task(
        result.head, task, scores, conventions=conv, detectors=detectors
    )
    metrics = {
        "label": run.label,
        "method": run.method,
        "options": dict(run.options),
        "test_domain": task.test_domain,
        "seed": task.seed,
        "selected_epoch": result.selected_epoch,
        "fit_seconds": seconds,
        "scores": [s.label for s in score_specs(scores)],
        "ood_sets": list(task.ood_sets),
        "run_key": key["run_key"],
        "selection": result.selection,
        **fields,
        **task.meta,
    }
    return write_run(
        run.folder,
        metrics,
        config={"method": run.method, "config": dataclasses.asdict(cfg)},
        env=environment(),
        per_sample=per_sample,
        head=result.head if save_heads else None,
        head_meta=head_provenance(run, cfg, result, task) if save_heads else None,
        key=key,
        detectors={s.label: detectors[s.label] for s in score_specs(scores)}
        if save_heads
        else None,
    )


def head_provenance(run: PlannedRun, cfg: Any, result: Any, task: Task) -> dict[str, Any]:
    """What ``croft fit`` records in head.json (:func:`croft.methods.saving.provenance`,
    with the OOD threshold from source validation) plus the run's label."""
    from croft.methods.saving import provenance

    return {**provenance(run.method, cfg, result, task.train, task.val), "label": run.label}


def shard_of(config_key: str, parts: int) -> int:
    """The 1-based part (of ``parts``) a run belongs to: ``int(config_key, 16) % parts + 1``.

    From the config part of the run key (settings, method, options, held-out domain, seed),
    so ``--dry-run`` can show it before any extraction and every machine agrees on it.
    """
    return int(config_key, 16) % parts + 1


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"K/N"`` (1 <= K <= N) -> ``(K, N)``; None stays None; a one-line error otherwise."""
    if text is None:
        return None
    k, sep, n = str(text).partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit()) or not 1 <= int(k) <= int(n):
        raise CroftError(f"--shard {text!r}: use K/N with 1 <= K <= N, e.g. --shard 2/4")
    return int(k), int(n)


@dataclasses.dataclass
class _Pending:
    """A run that needs fitting: its slot in the returned records, planned run, task, key."""

    slot: int
    run: PlannedRun
    task: Task
    key: dict[str, Any]


def _reuse(out: Path, rdir: Path, key: Mapping[str, Any]) -> RunRecord | None:
    """The finished run with this key in ``rdir``; None: it must be (re)fitted; refuses a
    folder holding other work."""
    stored = read_run_key(rdir)
    if stored is not None and stored.get("run_key") != key["run_key"]:
        raise refuse(rdir, out, difference(stored, key))
    if stored is None and (rdir / METRICS).is_file():
        raise refuse(rdir, out, "an older croft (no run key)")
    return read_run(rdir) if stored is not None else None


def batches(engine: str, method: str, train: Any, device: str) -> bool:
    """Whether ``engine`` sends this run's fit to the batched engine: ``batched`` every run
    of a method it batches, ``auto`` where :func:`croft.methods.croft.engine.batching_helps`."""
    from croft.methods.croft.engine import batching_helps, has_batched_step

    if engine == "batched":
        return has_batched_step(method)
    return engine == "auto" and batching_helps(method, train, device)


def _fits(pending: list[_Pending], batched: bool, device: str, show: bool) -> Iterator[tuple]:
    """``(pending run, (cfg, FitResult, seconds))`` for every pending run, as they finish:
    one by one in grid order, or (``batched``) per method through
    :func:`croft.methods.croft.engine.fit_iter` (it groups by shape). A divergence error is
    raised when its run comes up."""
    from croft.methods.croft.engine import fit_iter

    if not batched:
        for p in pending:
            yield p, fit_method(p.run, p.task, device)
        return
    by_method: dict[str, list[_Pending]] = {}
    for p in pending:
        by_method.setdefault(p.run.method, []).append(p)
    for method, batch in by_method.items():
        members = [(p.task.train, p.task.val, p.run.config) for p in batch]
        for i, result in fit_iter(method, members, device=device, progress=show):
            if isinstance(result, CroftError):
                raise result
            seconds = sum(h.get("seconds", 0.0) for h in result.history)
            yield batch[i], (batch[i].run.config, result, seconds)


def run_grid(
    tasks: Iterable[Task],
    methods: Sequence[MethodRun],
    out_dir: str | os.PathLike[str],
    *,
    settings: Mapping[str, Any] | None = None,
    shard: tuple[int, int] | None = None,
    **kw: Any,
) -> list[dict[str, Any]]:
    """Every method on every task (planned as each task comes); returns every run's
    metrics (reused or new), task x method order.

    ``settings``: the resolved experiment settings that change a run (run key; it should
    hold the resolved ``conventions``). ``shard=(K, N)``: only the runs whose
    :func:`shard_of` is K. The other keywords are :func:`run_plan`'s.
    """
    out, settings = Path(out_dir), dict(settings or {})

    def plan_of(task: Task) -> list[PlannedRun]:
        runs = [plan_run(m, task.test_domain, task.seed, settings, out) for m in methods]
        if shard is None:
            return runs
        return [p for p in runs if shard_of(p.config_key, shard[1]) == shard[0]]

    return _run_tasks(tasks, plan_of, out, **kw)


def run_plan(
    tasks: Iterable[Task], plan: Sequence[PlannedRun], out_dir: str | os.PathLike[str], **kw: Any
) -> list[dict[str, Any]]:
    """The planned runs (:func:`croft.experiments.plan.plan_runs`) on their tasks, as
    :func:`run_grid` runs a grid; a task no run is planned on is skipped."""
    by_task: dict[tuple[str, int], list[PlannedRun]] = {}
    for p in plan:
        by_task.setdefault((p.test_domain, p.seed), []).append(p)
    return _run_tasks(tasks, lambda t: by_task.get((t.test_domain, t.seed), []), out_dir, **kw)


def _run_tasks(
    tasks: Iterable[Task],
    plan_of: Callable[[Task], Sequence[PlannedRun]],
    out_dir: str | os.PathLike[str],
    *,
    scores: Sequence[Any] = ("energy", "knn"),
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    device: str = "cpu",
    save_heads: bool = True,
    conventions: Conventions | None = None,
    fit_engine: str = "auto",
    fit_progress: bool = False,
) -> list[dict[str, Any]]:
    """The runner: for every task, its planned runs reused or fitted, evaluated, written.

    ``conventions``: the evaluation conventions (default croft's, :mod:`croft.conventions`).
    ``fit_engine``: runs that :func:`batches` sends to the batched engine are collected
    over every task (their tasks stay in memory) and fitted together at the end, per
    method; every other run is fitted one by one as its task comes (``sequential``: every
    run, streaming the tasks as before). Each run is evaluated and written as its fit
    arrives, so an interrupted grid leaves complete runs only and a rerun resumes.
    ``fit_progress``: a bar over member-epochs.
    """
    if fit_engine not in FIT_ENGINES:
        raise CroftError(f"fit_engine {fit_engine!r}: use {' or '.join(FIT_ENGINES)}")
    out = Path(out_dir)
    kw = {"scores": scores, "score_params": score_params, "device": device}
    kw.update(conventions=conventions, save_heads=save_heads)
    records: list[dict[str, Any] | None] = []

    def done(slot: int, rec: RunRecord) -> None:
        records[slot] = rec.metrics
        if on_result is not None:
            on_result(rec.metrics)

    def flush(pending: list[_Pending], batched: bool) -> None:
        for p, fitted in _fits(pending, batched, device, fit_progress):
            done(p.slot, run_one(p.run, p.task, p.key, fitted=fitted, **kw))
        pending.clear()

    deferred: list[_Pending] = []  # for the batched engine, over every task
    for task in tasks:
        runs = plan_of(task)
        data = task_data(task) if runs else None
        now: list[_Pending] = []  # fitted one by one after this task
        for p in runs:
            key = p.key(data)
            records.append(None)
            rec = _reuse(out, p.folder, key)
            if rec is not None:
                done(len(records) - 1, rec)
                continue
            todo = _Pending(len(records) - 1, p, task, key)
            use = batches(fit_engine, p.method, task.train, device)
            (deferred if use else now).append(todo)
        flush(now, False)
    flush(deferred, True)
    return [r for r in records if r is not None]


__all__ = [
    "FIT_ENGINES",
    "CroftError",
    "PlannedRun",
    "check_plan",
    "discard_runs",
    "parse_shard",
    "plan_runs",
    "run_grid",
    "run_plan",
    "run_status",
    "shard_of",
]
