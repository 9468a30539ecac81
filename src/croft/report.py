"""Reports from run directories (never from logs): tables, figures, the verdict.

Reads every ``metrics.json`` below a runs directory (:func:`collect_runs`, the one place
that reads runs), keeps one grid point per (method, held-out domain, seed)
(:func:`select_records`), and writes into the report folder:

* ``results.csv``: tidy, one row per run × metric (:func:`croft.tables.tidy_rows`), every
  run read (grid points included, ``selected`` = kept by the selection), with the options
  each run was given as ``cfg.*`` columns; ``runs.csv``: one row per run with its whole
  resolved method config (:func:`croft.tables.run_rows`; join on ``run_dir``);
* per table ``NAME.csv`` (means in %, numbers only), ``NAME.tex`` (booktabs) and a
  Markdown section: held-out accuracy (methods × held-out domains), open-set detection per
  score (methods × OOD sets × ``fpr95_id_pos``/``auroc``/``aupr_in``), Setup-I accuracy;
* figures (:mod:`croft.figures`), PNG and PDF;
* ``report.md`` and ``report.html`` (one file, figures embedded): the tables, the grid
  points chosen per (held-out domain, seed), which rows kept their initialisation, and
  the verdict with paired bootstrap intervals (:mod:`croft.verdict`: the cluster bootstrap
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

import numpy as np

from croft.errors import CroftError
from croft.evaluation_frame import TAGS, tag_averages
from croft.fileio import atomic_write_text, inside
from croft.selection import select_grid_point
from croft.tables import (
    Cell,
    Table,
    conventions_name,
    run_rows,
    tidy_rows,
    to_csv_text,
    to_latex,
    to_wide_csv,
)
from croft.verdict import status_lines, status_marks, training_status, verdict

DETECTION_METRICS = (("fpr95_id_pos", "min"), ("auroc", "max"), ("aupr_in", "max"))
#: the full-spectrum column set's group prefix and its meaning (croft.evaluation_frame)
FS = "FS "
FS_NOTE = (
    "full spectrum, positives id+covariate: every ID-class image evaluated (held-out "
    "domain, source validation, covariate-shifted sets) counts as ID (OpenOOD v1.5)"
)
ARROW = {"min": "↓", "max": "↑"}


def collect_runs(runs_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every finished run below ``runs_dir`` as a record dict: its ``metrics.json`` plus
    ``run_dir`` and ``run_config`` (read through :mod:`croft.experiments.records`, the one
    reader of run folders)."""
    from croft.experiments.records import read_runs

    return [r.as_dict() for r in read_runs(runs_dir)]


def select_records(
    records: Sequence[Mapping[str, Any]], rule: str = "val_acc"
) -> list[dict[str, Any]]:
    """One grid point per (method, held-out domain, seed).

    Grid points are labelled ``method[key=value,...]``. ``val_acc`` (default) keeps the
    point with the best source-validation accuracy, ties broken by the lower validation
    NLL (``val_nll``), then the smaller ``lambda*`` values, then the label
    (:func:`croft.selection.select_grid_point`);
    ``oracle`` keeps the best held-out TEST accuracy and labels the row ``method (oracle)``,
    so that test-set selection can never pass unnoticed. A kept point records
    ``selected_from`` (its grid label) and ``selection_rule``.
    """
    if rule not in ("val_acc", "oracle"):
        raise CroftError(f"selection rule {rule!r}: use val_acc or oracle")
    groups: dict[tuple[str, str, int, Any], list[Mapping[str, Any]]] = {}
    for r in records:  # per world too: a study over several worlds (records' world_seed)
        group = r["label"].split("[", 1)[0]
        groups.setdefault((group, r["test_domain"], r["seed"], r.get("world_seed")), []).append(r)
    out = []
    for (group, *_), members in groups.items():
        gridded = any("[" in m["label"] for m in members)
        if not gridded:
            out.extend(dict(m) for m in members)
            continue
        key = "accuracy" if rule == "oracle" else "val_accuracy"
        if any(m.get(key) is None for m in members):
            raise CroftError(f"{group}: runs without {key}; cannot select among grid points")
        if rule == "oracle":
            best = max(sorted(members, key=lambda m: m["label"]), key=lambda m: m[key])
        else:
            best = select_grid_point(members)
        chosen = dict(best)
        chosen["selected_from"] = best["label"]
        chosen["selection_rule"] = rule
        chosen["label"] = f"{group} (oracle)" if rule == "oracle" else group
        out.append(chosen)
    return out


def _labels(records: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["label"] for r in records))


def _table(
    name: str,
    title: str,
    records: Sequence[Mapping[str, Any]],
    groups: list[tuple[str, list[str]]],
    better: list[str],
    value: Any,
) -> Table:
    """A table whose cell ``(label, flat column j)`` holds ``value(record, j)`` per run."""
    rows = []
    ncol = sum(len(c) for _, c in groups)
    for lab in _labels(records):
        rs = [r for r in records if r["label"] == lab]
        cells = []
        for j in range(ncol):
            vals = [v for r in rs if (v := value(r, j)) is not None]
            cells.append(Cell([float(v) for v in vals]))
        rows.append((lab, cells))
    return Table(name, title, groups, rows, better)


def headline_fpr95(records: Sequence[Mapping[str, Any]]) -> str:
    """The FPR95 key the records' conventions show first (both are in results.csv)."""
    keys = {
        (r.get("conventions") or {}).get("fpr95", "fpr95_id_pos")
        for r in records
        if isinstance(r.get("conventions"), Mapping)
    }
    return keys.pop() if len(keys) == 1 else "fpr95_id_pos"


def build_tables(records: Sequence[Mapping[str, Any]]) -> dict[str, Table]:
    """The report's tables, one set per evaluation conventions in the records.

    With one conventions name the tables are keyed by file stem (``accuracy``, …) and each
    title ends with ``[conventions: NAME]``; records made under several conventions get one
    set each, keyed ``STEM__NAME``. Detection tables show the conventions' FPR95
    (``fpr95_id_pos`` or the authors' ``fpr95_paper``) as their first metric.
    """
    names = list(dict.fromkeys(conventions_name(r) for r in records))
    out: dict[str, Table] = {}
    for name in names:
        subset = [r for r in records if conventions_name(r) == name]
        for stem, table in _build_tables(subset).items():
            table.title = f"{table.title} [conventions: {name}]"
            key = stem if len(names) == 1 else f"{stem}__{name}"
            table.name = key
            out[key] = table
    return out


def _build_tables(records: Sequence[Mapping[str, Any]]) -> dict[str, Table]:
    """The report's human tables (cells: per-run values), keyed by file stem."""
    domains = sorted({r["test_domain"] for r in records})
    cols = [*domains, "avg"]
    tables = {
        "accuracy": _table(
            "accuracy",
            "Closed-set OOD generalisation: accuracy (%) on the held-out domain, "
            "mean ± std over seeds (avg: over held-out domains × seeds)",
            records,
            [("", cols)],
            ["max"] * len(cols),
            lambda r, j: (
                r["accuracy"] if j == len(domains) or r["test_domain"] == domains[j] else None
            ),
        )
    }
    shifted_recs = [r for r in records if "shifted_accuracy" in r]
    if shifted_recs:
        names = list(
            dict.fromkeys(
                n
                for r in shifted_recs
                for n in (*r.get("shifted_sets", ()), *r["shifted_accuracy"])
            )
        )

        def setup1(r: Mapping[str, Any], j: int) -> float | None:
            sa = r["shifted_accuracy"]
            if j == 0:
                return r["accuracy"]
            if j <= len(names):
                return sa.get(names[j - 1])
            return float(np.mean(list(sa.values()))) if sa else None

        if any("id_classes" in r for r in shifted_recs):  # Setup-I (ImageNet-style)
            key, header = "setup1_accuracy", ["ID", *names, "shifted avg"]
            caption = (
                "Setup-I: accuracy (%) on the ID classes, ID test and covariate-shifted sets, "
                "mean ± std over seeds"
            )
        else:  # leave-one-domain-out with extra target domains (e.g. the world's sketch)
            key, header = "extra_targets_accuracy", ["held-out", *names, "extra avg"]
            caption = (
                "Accuracy (%) on the held-out domain and on the extra target domains every "
                "fold's head is evaluated on, mean ± std over held-out domains × seeds"
            )
        tables[key] = _table(
            key, caption, shifted_recs, [("", header)], ["max"] * len(header), setup1
        )
    oods = list(dict.fromkeys(o for r in records for o in r.get("detection", {})))
    scores = list(
        dict.fromkeys(s for r in records for o in r.get("detection", {}).values() for s in o)
    )
    fpr = headline_fpr95(records)
    metrics = [((fpr if m == "fpr95_id_pos" else m), b) for m, b in DETECTION_METRICS]
    tags = [t for t in TAGS if any(t in (r.get("ood_tags") or {}).values() for r in records)]
    blocks = [("detection", "")]
    if any("detection_full_spectrum" in r for r in records):
        blocks.append(("detection_full_spectrum", FS))
    columns = [(key, pre, o) for key, pre in blocks for o in [*oods, *(f"{t} avg" for t in tags)]]
    for s in scores:
        flat = [(key, o, m) for key, _, o in columns for m, _ in metrics]

        def det(r: Mapping[str, Any], j: int, s: str = s, flat: list = flat) -> float | None:
            key, o, m = flat[j]
            table = r.get(key, {})
            if o.endswith(" avg") and o not in table:
                return tag_averages(table, r.get("ood_tags") or {}, s, m)[o[:-4]]
            return table.get(o, {}).get(s, {}).get(m)

        groups = [(f"{pre}{o}", [f"{m} {ARROW[b]}" for m, b in metrics]) for _, pre, o in columns]
        tables[f"detection_{s}"] = _table(
            f"detection_{s}",
            f"Open-set OOD detection, {s} score (%), mean ± std over held-out domains × "
            "seeds; fpr95_id_pos: FPR at 95% TPR with ID as positives; fpr95_paper: the "
            "authors' rule (θ = 5th percentile of ID, OOD > θ); aupr_in: AUPR with "
            "ID as positives"
            + ("; near/far avg: mean over the OOD sets tagged so" if tags else "")
            + (f"; {FS}columns: {FS_NOTE}" if len(blocks) > 1 else ""),
            records,
            groups,
            [b for _ in columns for _, b in metrics],
            det,
        )
    return tables


def identical_row_notes(table: Table) -> list[str]:
    """A note for every group of rows whose cells all print the same."""
    seen: dict[tuple[str, ...], list[str]] = {}
    for label, cells in table.rows:
        if any(c.values for c in cells):
            seen.setdefault(tuple(c.text() for c in cells), []).append(label)
    notes = []
    for labels in seen.values():
        if len(labels) < 2:
            continue
        names = ", ".join(labels)
        if table.name == "detection_knn":
            src = (
                "the zero-shot (frozen encoder) image features"
                if "zeroshot" in labels
                else "the same image features"
            )
            notes.append(
                f"rows {names} are identical: the knn score uses only image "
                f"features, and these methods pass it {src}"
            )
        else:
            notes.append(f"rows {names} are identical to the printed digit")
    return notes


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
    configs = {
        str(r["run_dir"]): r["run_config"] for r in all_runs if "run_config" in r and "run_dir" in r
    }
    for name, rows in (
        ("results.csv", tidy_rows(all_runs)),
        ("runs.csv", run_rows(all_runs, configs)),
    ):
        for row in rows:
            row["selected"] = row["run_dir"] in kept
        atomic_write_text(out / name, to_csv_text(rows))
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
    doc.p(
        f"{len(all_runs)} runs read; {len(records)} after choosing one grid point per "
        "(method, held-out domain, seed). Per-run numbers: results.csv; configs: runs.csv."
    )
    conv = list(dict.fromkeys(conventions_name(r) for r in records))
    doc.p(
        "Evaluation conventions: "
        + ", ".join(conv)
        + " (croft: all ID samples are positives, fpr95_id_pos; authors: correctly "
        "classified ID positives, detection at ratios 0.5/0.0, the authors' KNN bank and "
        "k sweep, ≤ 500 ID images per class, fpr95_paper; '+': single fields overridden, "
        "see each run's metrics.json). Each table's title names its conventions."
    )
    if selection == "oracle":
        doc.p("**Oracle selection: grid points chosen on TEST accuracy (marked).**")
    doc.h2("Verdict")
    forest = verdict_section(doc, v, out / "plots" if plots else None)
    lines = status_lines(training_status(records))
    if lines:
        doc.h2("Did each method train?")
        doc.items(lines)
    points = chosen_points(records)
    if points:
        doc.h2("Grid points chosen (per held-out domain and seed)")
        rule = "source-validation accuracy" if selection == "val_acc" else "TEST accuracy (oracle)"
        doc.p(f"Chosen on {rule}.")
        doc.table(["method", "held-out domain", "seed", "chosen", "val acc (%)"], points)
        doc.p("Format: method <- grid point, e.g. " + f"{points[0][0]} <- {points[0][3]}.")
    for table in tables.values():
        doc.h2(table.title)
        doc.result_table(table)
    figs: list[dict[str, Any]] = []
    if plots:
        from croft.figures import write_figures

        figs = write_figures(records, inside(out, "plots"), log_fpr=log_fpr)
        if figs:
            doc.h2("Figures")
            for f in figs:
                doc.figure(Path(f["png"]), f"plots/{Path(f['png']).name}", f["caption"])
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
    (no such file, an unreadable one, or no key: the verdict then says none is named)."""
    path = Path(runs_dir) / "config.resolved.json"
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
