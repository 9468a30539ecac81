"""The report's human tables, built from the selected run records.

:func:`build_tables` gives one set per evaluation conventions in the records: held-out
accuracy (methods × held-out domains), Setup-I or extra-target accuracy when recorded, and
per OOD score the detection table (methods × OOD sets, near/far averages and the full
spectrum where recorded × the conventions' FPR95, ``auroc``, ``aupr_in``).
:func:`identical_row_notes` says which rows print alike. Re-exported by
:mod:`croft.report`, which writes the tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from croft.evaluation_frame import TAGS, tag_averages
from croft.tables import PM_TEXT, Cell, Table, conventions_name

__all__ = [
    "ARROW",
    "DETECTION_METRICS",
    "FPR_NOTES",
    "FS",
    "FS_NOTE",
    "build_tables",
    "headline_fpr95",
    "identical_row_notes",
]

DETECTION_METRICS = (("fpr95_id_pos", "min"), ("auroc", "max"), ("aupr_in", "max"))
#: the full-spectrum column set's group prefix and its meaning (croft.evaluation_frame)
FS = "FS "
FS_NOTE = (
    "full spectrum, positives id+covariate: every ID-class image evaluated (held-out "
    "domain, source validation, covariate-shifted sets) counts as ID (OpenOOD v1.5)"
)
ARROW = {"min": "↓", "max": "↑"}
#: what a detection table's FPR95 column means (only the one it shows is explained)
FPR_NOTES = {
    "fpr95_id_pos": "fpr95_id_pos: FPR at 95% TPR with ID as positives",
    "fpr95_paper": "fpr95_paper: the authors' rule (θ = 5th percentile of ID, OOD > θ)",
}


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
            "Closed-set OOD generalisation: accuracy (%) on the held-out domain (avg: all "
            f"held-out domains), {PM_TEXT}",
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
                "Setup-I: accuracy (%) on the ID classes, ID test and covariate-shifted sets "
                f"(shifted avg: each run's mean over the shifted sets), {PM_TEXT}"
            )
        else:  # leave-one-domain-out with extra target domains (e.g. the world's sketch)
            key, header = "extra_targets_accuracy", ["held-out", *names, "extra avg"]
            caption = (
                "Accuracy (%) on the held-out domain and on the extra target domains every "
                "fold's head is evaluated on (extra avg: each run's mean over them), "
                f"{PM_TEXT}"
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
            f"Open-set OOD detection, {s} score (%), {PM_TEXT}; {FPR_NOTES.get(fpr, fpr)}; "
            "aupr_in: AUPR with ID as positives"
            + ("; near/far avg: each run's mean over the OOD sets tagged so" if tags else "")
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
