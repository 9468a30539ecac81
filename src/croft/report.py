"""Reports from run directories (never from logs): tables, figures, the verdict.

Reads every ``metrics.json`` below a runs directory (:func:`collect_runs`, the one place
that reads runs), keeps one grid point per (method, held-out domain, seed)
(:func:`select_records`), builds the human tables (:func:`build_tables`, in
:mod:`croft.report_tables`, re-exported here) and writes into the report folder:

* ``results.csv``: tidy, one row per run × metric (:func:`croft.tables.tidy_rows`), every
  run read (grid points included, ``selected`` = kept by the selection), with the options
  each run was given as ``cfg.*`` columns. ``row`` is the report table's row label of the
  run (``croft``, ``croft_paper``, ``croft (oracle)``; a grid point not kept carries the
  row it competed for), ``value`` is in the tables' unit, named by ``unit`` (``%`` for
  accuracy and detection metrics, ``nats`` for ``nll``); ``selected``, ``kept_init`` and
  ``diverged`` are booleans (``True``/``False``, never empty; no selection record reads
  False, as the report's † and ‡ count); a column with no value in any row is left out.
  The tables are pivots of its ``selected`` rows by ``row`` (mean, and ``std``: the
  sample std, as pandas' default; the avg columns first average each run)::

      df = pd.read_csv("results.csv"); kept = df[df.selected]
      acc = kept[(kept.split == "test") & (kept.metric == "accuracy")]
      acc.pivot_table(index="row", columns="test_domain", values="value",
                      aggfunc=["mean", "std", "count"])

  ``runs.csv``: one row per run with its whole resolved method config
  (:func:`croft.tables.run_rows`; join on ``run_dir``);
* per table ``NAME.csv`` (``row``, then per cell ``STEM_mean``, ``STEM_std`` in % and
  ``STEM_n``, snake_case stems ``{group}__{column}``: :func:`croft.tables.to_wide_csv`),
  ``NAME.tex`` (booktabs) and a Markdown section: held-out accuracy (methods × held-out
  domains), open-set detection per score (methods × OOD sets × the conventions' FPR95,
  ``auroc``, ``aupr_in``), Setup-I accuracy. "±" is :func:`croft.tables.spread` (the
  sample std over the (held-out domain × seed) runs of a cell), said in every caption;
* figures (:mod:`croft.figures`), PNG and PDF;
* ``report.md`` and ``report.html`` (one file, figures embedded, a contents list): the
  verdict first, then the tables, which rows kept their initialisation, the figures, the
  conventions and, last (collapsed in HTML), the grid points chosen per (held-out domain,
  seed); the verdict with paired bootstrap intervals (:mod:`croft.verdict`: the cluster bootstrap
  by default, the number of comparisons, the primary one named by the config's
  ``primary:``, Holm-adjusted p), drawn as a forest plot with a comparison x metric table
  beside it (:mod:`croft.forest`, ``plots/verdict_forest.png``/``.pdf``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from croft.errors import CroftError
from croft.fileio import atomic_write_text, inside
from croft.report_tables import ARROW as ARROW
from croft.report_tables import DETECTION_METRICS as DETECTION_METRICS
from croft.report_tables import FPR_NOTES as FPR_NOTES
from croft.report_tables import FS as FS
from croft.report_tables import FS_NOTE as FS_NOTE
from croft.report_tables import _labels, build_tables, identical_row_notes
from croft.report_tables import headline_fpr95 as headline_fpr95
from croft.selection import row_labels, select_records
from croft.tables import (
    Table,
    conventions_name,
    run_rows,
    tidy_rows,
    to_csv_text,
    to_latex,
    to_wide_csv,
)
from croft.verdict import status_lines, status_marks, training_status, verdict


def collect_runs(runs_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every finished run below ``runs_dir`` as a record dict: its ``metrics.json`` plus
    ``run_dir`` and ``run_config`` (read through :mod:`croft.experiments.records`, the one
    reader of run folders)."""
    from croft.experiments.records import read_runs

    return [r.as_dict() for r in read_runs(runs_dir)]


def chosen_points(records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """``[method, held-out domain, seed, chosen grid point, its val accuracy]`` rows."""
    rows = []
    for r in sorted(records, key=lambda r: (r["label"], str(r["test_domain"]), str(r["seed"]))):
        if "selected_from" in r:
            va = r.get("val_accuracy")
            rows.append(
                [
                    r["label"],
                    str(r["test_domain"]),
                    str(r["seed"]),
                    r["selected_from"],
                    "-" if va is None else f"{100 * va:.1f}",
                ]
            )
    return rows


def _write_tables(
    out: Path, all_runs: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]]
) -> dict[str, Table]:
    kept = {r.get("run_dir") for r in records}
    labels = row_labels(all_runs, records)
    configs = {
        str(r["run_dir"]): r["run_config"] for r in all_runs if "run_config" in r and "run_dir" in r
    }
    for name, rows in (
        ("results.csv", tidy_rows(all_runs)),
        ("runs.csv", run_rows(all_runs, configs)),
    ):
        for row in rows:
            row["selected"] = row["run_dir"] in kept
            row["row"] = labels.get(row["run_dir"], row["row"])
        atomic_write_text(out / name, to_csv_text(rows, drop_empty=True))
    marks, mark_notes = status_marks(training_status(records))
    tables = build_tables(records)
    for name, table in tables.items():
        table.row_marks = marks
        table.notes = [*identical_row_notes(table), *mark_notes]
        atomic_write_text(out / f"{name}.csv", to_wide_csv(table))
        atomic_write_text(out / f"{name}.tex", to_latex(table))
    return tables


def write_report(
    runs_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    plots: bool = True,
    selection: str = "val_acc",
    subject: str | Sequence[str] | None = None,
    log_fpr: bool = False,
    bootstrap: str = "cluster",
    primary: Mapping[str, Any] | None = None,
    verdict_ood: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the report (see the module doc) into ``out_dir`` (default RUNS_DIR/report).

    ``subject``: the verdict's subject label(s) (default croft); ``bootstrap``: ``cluster``
    or ``iid`` (:mod:`croft.stats`); ``primary``: the primary comparison (default: the
    ``primary`` of RUNS_DIR/config.resolved.json, the config's); ``verdict_ood``: the open
    sets the verdict compares (default: every set). Returns ``{"out_dir", "tables": {name:
    (header, rows)}, "verdict", "verdict_table", "within_noise", "plots", "records",
    "runs"}``; ``records`` counts rows after grid selection, ``runs`` every run read.
    """
    from croft.forest import verdict_section, verdict_table, within_noise_lines
    from croft.report_html import Doc

    all_runs = collect_runs(runs_dir)
    records = select_records(all_runs, selection)
    # the default folder must stay inside the runs folder, symlinks included
    out = Path(out_dir) if out_dir is not None else inside(runs_dir, "report")
    out.mkdir(parents=True, exist_ok=True)
    tables = _write_tables(out, all_runs, records)
    if primary is None:
        primary = config_primary(runs_dir)
    v = verdict(records, subject, ood_sets=verdict_ood, bootstrap=bootstrap, primary=primary)
    doc = Doc(f"croft report: {Path(runs_dir)}")
    # results first: the verdict, the result tables, the figures; how the rows were made
    # (conventions, the grid points chosen, collapsed in HTML) last
    doc.p(
        f"{len(all_runs)} runs read; {len(records)} after choosing one grid point per "
        "(method, held-out domain, seed). Per-run numbers: results.csv (value in unit, % "
        "as the tables; its selected rows pivoted by row give every table); configs: "
        "runs.csv."
    )
    if selection == "oracle":
        doc.p("**Oracle selection: grid points chosen on TEST accuracy (marked).**")
    doc.h2("Verdict")
    forest = verdict_section(doc, v, out / "plots" if plots else None)
    for table in tables.values():
        doc.h2(table.title)
        doc.result_table(table)
    lines = status_lines(training_status(records))
    if lines:
        doc.h2("Did each method train?")
        doc.items(lines)
    figs: list[dict[str, Any]] = []
    if plots:
        from croft.figures import write_figures

        figs = write_figures(records, inside(out, "plots"), log_fpr=log_fpr)
        if figs:
            doc.h2("Figures")
            for f in figs:
                doc.figure(Path(f["png"]), f"plots/{Path(f['png']).name}", f["caption"])
    conv = list(dict.fromkeys(conventions_name(r) for r in records))
    doc.h2("Evaluation conventions")
    doc.p(
        "Evaluation conventions: "
        + ", ".join(conv)
        + " (croft: all ID samples are positives, fpr95_id_pos; authors: correctly "
        "classified ID positives, detection at ratios 0.5/0.0, the authors' KNN bank and "
        "k sweep, ≤ 500 ID images per class, fpr95_paper; '+': single fields overridden, "
        "see each run's metrics.json). Each table's title names its conventions."
    )
    points = chosen_points(records)
    if points:
        doc.h2("Grid points chosen (per held-out domain and seed)")
        rule = "source-validation accuracy" if selection == "val_acc" else "TEST accuracy (oracle)"
        doc.p(
            f"Chosen on {rule}. Format: method <- grid point, e.g. "
            f"{points[0][0]} <- {points[0][3]}."
        )
        with doc.details(f"the {len(points)} grid points chosen (show)"):
            doc.table(["method", "held-out domain", "seed", "chosen", "val acc (%)"], points)
    atomic_write_text(out / "report.md", doc.markdown())
    atomic_write_text(out / "report.html", doc.html())
    return {
        "out_dir": str(out),
        "tables": {name: t.as_pair() for name, t in tables.items()},
        "verdict": v.lines,
        "verdict_table": verdict_table(v),
        "within_noise": within_noise_lines(v),
        "plots": [f["png"] for f in figs] + ([forest["png"]] if forest else []),
        "records": len(records),
        "runs": len(all_runs),
    }


def config_primary(runs_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``primary`` comparison of the runs' config (``config.resolved.json``), or None
    (no such file, an unreadable one, or no key: the verdict then says none is named). A
    folder of several worlds (``world_seeds``: one ``world<K>/config.resolved.json`` each,
    none above them) takes the primary its worlds' configs name, when they all name it."""
    path = Path(runs_dir) / "config.resolved.json"
    if path.is_file():
        return _primary_of(path)
    found = [_primary_of(p) for p in sorted(Path(runs_dir).glob("*/config.resolved.json"))]
    if not found or any(p is None or p != found[0] for p in found):
        return None
    return found[0]


def _primary_of(path: Path) -> dict[str, Any] | None:
    try:
        primary = json.loads(path.read_text(encoding="utf-8")).get("primary")
    except (OSError, ValueError, AttributeError):
        return None
    return primary if isinstance(primary, dict) else None


def export_head(
    runs_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    method: str,
    domain: str | None = None,
    seed: int | None = None,
    selection: str = "val_acc",
) -> Path:
    """Copy the head (``RUN_DIR/head/``) of the run the report selects for ``method`` on
    (``domain``, ``seed``) into ``dest`` (which must not exist or be empty)."""
    records = select_records(collect_runs(runs_dir), selection)
    picks = [r for r in records if r["label"] == method]
    if not picks:
        labels = ", ".join(_labels(records))
        raise CroftError(f"no runs of {method!r} in {runs_dir}; choose one of: {labels}")
    if domain is not None:
        picks = [r for r in picks if str(r["test_domain"]) == str(domain)]
    if seed is not None:
        picks = [r for r in picks if str(r["seed"]) == str(seed)]
    if len(picks) != 1:
        have = ", ".join(sorted({f"{r['test_domain']}/seed {r['seed']}" for r in picks})) or "none"
        raise CroftError(
            f"{method}: {len(picks)} runs match (have: {have}); pick one with --domain and --seed"
        )
    src = Path(picks[0]["run_dir"]) / "head"
    if not (src / "head.json").is_file():
        raise CroftError(
            f"{picks[0]['run_dir']}: the run stored no head (no head/head.json); "
            "rerun it with a croft version that saves heads"
        )
    target = Path(dest)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CroftError(f"{target} exists and is not empty; pass a new folder")
    shutil.copytree(src, target, dirs_exist_ok=True)
    return target
