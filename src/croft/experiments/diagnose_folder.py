"""``croft diagnose OUT_DIR``: every task of a ``croft run`` / ``croft demo`` output folder.

An output folder holds ``config.resolved.json`` and ``runs/<label>/<held_out>_seed<k>/``.
:func:`folder_tasks` groups its finished adapter runs by (held-out domain, seed) task and
keeps, per task,

* by default the run each method row would report: a gridded row's point chosen on
  source validation (:func:`croft.selection.select_grid_point`, the report's rule), an
  ungridded row's only run;
* with ``select`` (shell-style patterns on run labels, e.g. ``"croft[*"``), every run whose
  label matches one of them (e.g. a whole λ2 sweep per task).

:func:`diagnose_folder` then runs :func:`croft.experiments.diagnose_runs.diagnose_runs` once
per task; ``croft diagnose`` writes each task's result to ``<out>/<held_out>_seed<k>/``.
Runs whose heads are not adapters (zero-shot, probes, cache methods) are left out.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from croft.errors import CroftError
from croft.experiments.diagnose_runs import RESOLVED, RunDiagnosis, diagnose_runs
from croft.experiments.records import RunRecord, read_runs
from croft.selection import select_grid_point

ADAPTER_HEAD = "adapter"  # the head kind croft diagnose measures (croft, ce_adapter)


def is_experiment_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an output folder of ``croft run``/``croft demo`` (it holds
    ``config.resolved.json`` and ``runs/``)."""
    p = Path(path)
    return (p / RESOLVED).is_file() and (p / "runs").is_dir()


def _is_adapter(rec: RunRecord) -> bool:
    from croft.methods.io import read_head_meta

    return rec.head_dir is not None and read_head_meta(rec.head_dir).get("head") == ADAPTER_HEAD


def _selected(records: Sequence[RunRecord]) -> list[RunRecord]:
    """Per method row (label before ``[``) the run the report keeps."""
    rows: dict[str, list[RunRecord]] = {}
    for rec in records:
        rows.setdefault(rec.label.split("[", 1)[0], []).append(rec)
    kept = []
    for members in rows.values():
        if len(members) == 1:
            kept.append(members[0])
            continue
        by_id = {id(m.metrics): m for m in members}
        best = select_grid_point([m.metrics for m in members])
        kept.append(by_id[id(best)])
    return kept


def folder_tasks(
    out_dir: str | os.PathLike[str], select: Sequence[str] | None = None
) -> dict[tuple[str, int], list[Path]]:
    """``{(held_out, seed): [run folder, …]}`` of the adapter runs to diagnose (see the
    module docstring), tasks and runs in a stable order."""
    out = Path(out_dir)
    if not is_experiment_folder(out):
        raise CroftError(
            f"{out}: not an output folder of 'croft run' or 'croft demo' (no {RESOLVED} and "
            "runs/); pass that folder, or run folders / heads"
        )
    records = [r for r in read_runs(out / "runs") if _is_adapter(r)]
    if not records:
        raise CroftError(
            f"{out}: no adapter runs (croft, ce_adapter) with a saved head; nothing to diagnose"
        )
    tasks: dict[tuple[str, int], list[RunRecord]] = {}
    for rec in records:
        tasks.setdefault((rec.test_domain, rec.seed), []).append(rec)
    chosen: dict[tuple[str, int], list[Path]] = {}
    for key in sorted(tasks):
        recs = sorted(tasks[key], key=lambda r: r.label)
        if select:
            keep = [r for r in recs if any(fnmatch.fnmatchcase(r.label, p) for p in select)]
        else:
            keep = _selected(recs)
        if keep:
            chosen[key] = [r.run_dir for r in keep]
    if not chosen:
        labels = sorted({r.label for r in records})
        raise CroftError(
            f"--select {','.join(select or [])!r} matches no adapter run in {out}; labels there: "
            f"{', '.join(labels[:6])}{' …' if len(labels) > 6 else ''}"
        )
    return chosen


def diagnose_folder(
    out_dir: str | os.PathLike[str],
    options: Any = None,
    *,
    select: Sequence[str] | None = None,
    x_key: str = "lambda2",
    device: str = "cpu",
    progress: bool = False,
    on_task: Callable[[tuple[str, int], RunDiagnosis], None] | None = None,
    tasks: Mapping[tuple[str, int], Sequence[Path]] | None = None,
) -> dict[tuple[str, int], RunDiagnosis]:
    """Diagnose every task of ``out_dir`` (``tasks``, else :func:`folder_tasks`);
    ``on_task(task, result)`` is called as each finishes (``croft diagnose`` writes it then,
    so an interrupted call keeps the tasks already done)."""
    results = {}
    tasks = folder_tasks(out_dir, select) if tasks is None else tasks
    for key, runs in tasks.items():
        result = diagnose_runs(runs, options, x_key=x_key, device=device, progress=progress)
        results[key] = result
        if on_task is not None:
            on_task(key, result)
    return results
