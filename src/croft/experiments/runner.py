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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from croft.conventions import Conventions
from croft.errors import CroftError
from croft.experiments.evaluate import evaluate_task, task_detectors
from croft.experiments.grid import MethodRun, method_config
from croft.experiments.records import (
    METRICS,
    RunRecord,
    read_run,
    read_run_key,
    run_dir,
    write_run,
)
from croft.experiments.runkey import config_document, difference, make_key, refuse, task_data
from croft.experiments.task import Task
from croft.fileio import inside
from croft.score_lists import score_specs

log = logging.getLogger(__name__)


def config_key(run: MethodRun, domain: str, seed: int, settings: Mapping) -> str:
    """The config part of a run's key (no data needed: known before extraction)."""
    options = dataclasses.asdict(method_config(run, seed))
    doc = config_document(settings, run.method, options, domain, seed)
    return make_key(doc, None)["config_key"]


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
    scores: Sequence[Any],
    score_params: Mapping[str, Mapping[str, Any]] | None,
    device: str,
    save_heads: bool,
    conventions: Conventions | None = None,
    fitted: tuple[Any, Any, float] | None = None,
) -> RunRecord:
    """Fit (unless ``fitted`` = :func:`fit_method`'s triple is given), evaluate and save one
    run into ``rdir`` (its key is written first). The one place a run is evaluated and written.

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
        rdir,
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


def head_provenance(run: MethodRun, cfg: Any, result: Any, task: Task) -> dict[str, Any]:
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
    """A run that needs fitting: its slot in the returned records, run, task, folder, key."""

    slot: int
    run: MethodRun
    task: Task
    rdir: Path
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
        cfgs = [method_config(p.run, p.task.seed) for p in batch]
        members = [
            (p.task.train, p.task.val, dataclasses.asdict(c))
            for p, c in zip(batch, cfgs, strict=True)
        ]
        for i, result in fit_iter(method, members, device=device, progress=show):
            if isinstance(result, CroftError):
                raise result
            seconds = sum(h.get("seconds", 0.0) for h in result.history)
            yield batch[i], (cfgs[i], result, seconds)


def run_grid(
    tasks: Iterable[Task],
    methods: Sequence[MethodRun],
    out_dir: str | os.PathLike[str],
    *,
    settings: Mapping[str, Any] | None = None,
    scores: Sequence[Any] = ("energy", "knn"),
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    device: str = "cpu",
    save_heads: bool = True,
    conventions: Conventions | None = None,
    fit_engine: str = "auto",
    shard: tuple[int, int] | None = None,
    fit_progress: bool = False,
) -> list[dict[str, Any]]:
    """Every method on every task; returns every run's metrics (reused or new), task x
    method order.

    ``settings``: the resolved experiment settings that change a run (run key; it should
    hold the resolved ``conventions``). ``conventions``: the evaluation conventions
    (default croft's, :mod:`croft.conventions`). ``fit_engine``: runs that :func:`batches`
    sends to the batched engine are collected over every task (their tasks stay in memory)
    and fitted together at the end, per method; every other run is fitted one by one as
    its task comes (``sequential``: every run, streaming the tasks as before). Each run is
    evaluated and written as its fit arrives, so an interrupted grid leaves complete runs
    only and a rerun resumes. ``shard=(K, N)``: only the
    runs whose :func:`shard_of` is K. ``fit_progress``: a bar over member-epochs.
    """
    if fit_engine not in FIT_ENGINES:
        raise CroftError(f"fit_engine {fit_engine!r}: use {' or '.join(FIT_ENGINES)}")
    out = Path(out_dir)
    settings = dict(settings or {})
    for m in methods:  # validate every method and option before any work
        method_config(m)
    kw = {"scores": scores, "score_params": score_params, "device": device}
    kw.update(conventions=conventions, save_heads=save_heads)
    records: list[dict[str, Any] | None] = []

    def done(slot: int, rec: RunRecord) -> None:
        records[slot] = rec.metrics
        if on_result is not None:
            on_result(rec.metrics)

    def flush(pending: list[_Pending], batched: bool) -> None:
        for p, fitted in _fits(pending, batched, device, fit_progress):
            done(p.slot, run_one(p.run, p.task, p.rdir, p.key, fitted=fitted, **kw))
        pending.clear()

    deferred: list[_Pending] = []  # for the batched engine, over every task
    for task in tasks:
        data = task_data(task)
        now: list[_Pending] = []  # fitted one by one after this task
        for m in methods:
            options = dataclasses.asdict(method_config(m, task.seed))
            doc = config_document(settings, m.method, options, task.test_domain, task.seed)
            key = make_key(doc, data)
            if shard is not None and shard_of(key["config_key"], shard[1]) != shard[0]:
                continue
            rdir = run_dir(out, m.label, task.test_domain, task.seed)
            records.append(None)
            rec = _reuse(out, rdir, key)
            if rec is not None:
                done(len(records) - 1, rec)
                continue
            todo = _Pending(len(records) - 1, m, task, rdir, key)
            use = batches(fit_engine, m.method, task.train, device)
            (deferred if use else now).append(todo)
        flush(now, False)
    flush(deferred, True)
    return [r for r in records if r is not None]


def planned(methods: Sequence[MethodRun], tasks: Iterable[tuple[str, int]]) -> list[tuple]:
    """``(run, domain, seed)`` for every grid point on every (domain, seed)."""
    return [(m, d, s) for d, s in tasks for m in methods]


__all__ = [
    "FIT_ENGINES",
    "CroftError",
    "check_plan",
    "discard_runs",
    "parse_shard",
    "planned",
    "run_grid",
    "run_status",
    "shard_of",
]
