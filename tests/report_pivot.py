"""Rebuild a report's result tables from its results.csv with pandas, as a user would.

:func:`assert_results_csv_reproduces_report` reads every result table printed in
``report.md`` (a ``##`` heading that says what "±" means, then a Markdown table), pivots
the ``selected`` rows of ``results.csv`` by ``row`` the way the report's module doc says,
formats mean ± std at the printed precision and asserts that every row and cell matches.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

MARKS = "†‡"
PM = "mean ± std over the (held-out domain × seed) runs"


def printed_tables(report_md: Path) -> dict[str, tuple[list[str], list[list[str]]]]:
    """``{heading: (header, rows)}`` of every result table in ``report.md``."""
    lines = report_md.read_text(encoding="utf-8").splitlines()
    out: dict[str, tuple[list[str], list[list[str]]]] = {}
    for i, line in enumerate(lines):
        if not (line.startswith("## ") and PM in line):
            continue
        body = []
        for nxt in lines[i + 1 :]:
            if nxt.startswith("## "):
                break
            if nxt.startswith("|"):
                # best cells are bold (**…**): the number is what the pivot must give
                cells = nxt.strip().strip("|").split("|")
                body.append([c.strip().removeprefix("**").removesuffix("**") for c in cells])
            elif body:
                break
        assert len(body) >= 2, f"no table under {line!r}"
        out[line[3:]] = (body[0], [r for r in body[2:]])  # body[1]: the --- row
    return out


def _text(mean: float, std: float, n: int) -> str:
    if not n:
        return "-"
    return f"{mean:.1f}" if n == 1 else f"{mean:.1f} ± {std:.1f}"


def _cells(frame: Any, key: Any) -> dict[str, str]:
    """``{row: printed cell}`` from a pivot with ``mean``/``std``/``count`` on top."""
    if key not in frame["count"].columns:
        return {}
    out = {}
    for row in frame.index:
        n = frame["count"][key].get(row)
        n = 0 if n != n or n is None else int(n)
        out[row] = _text(frame["mean"][key].get(row), frame["std"][key].get(row), n)
    return out


def _pivot(frame: Any, columns: Any, **kw: Any) -> Any:
    """mean, std (pandas' default, ddof=1) and count of ``value`` by ``row`` × ``columns``
    (``dropna=False``: a std that is NaN everywhere, one run per cell, stays a column)."""
    return frame.pivot_table(
        index="row",
        columns=columns,
        values="value",
        aggfunc=["mean", "std", "count"],
        dropna=False,
        **kw,
    )


def pivot_columns(kept: Any, heading: str, header: list[str]) -> list[dict[str, str]]:
    """One ``{row: text}`` per printed column (after ``method``), from results.csv rows."""
    conv = re.search(r"\[conventions: ([^\]]+)\]$", heading)
    if conv:
        kept = kept[kept["conventions"] == conv.group(1)]
    acc = kept[(kept["metric"] == "accuracy") & (kept["split"] == "test")]
    cols = header[1:]
    if heading.startswith("Closed-set"):
        piv = _pivot(acc, "test_domain", margins=True, margins_name="avg").drop(
            index="avg"
        )  # the margin row; the margin column is the table's avg
        return [_cells(piv, c) for c in cols]
    if heading.startswith(("Setup-I", "Accuracy (%) on the held-out domain and")):
        shifted = kept[(kept["split"] == "shifted") & (kept["metric"] == "accuracy")]
        acc = acc[acc["run_dir"].isin(shifted["run_dir"])]
        piv = _pivot(shifted, "set")
        # the avg column: each run's mean over the shifted sets, then over runs
        per_run = shifted.groupby(["row", "run_dir"])["value"].mean().reset_index()
        avg = _pivot(per_run.assign(c="avg"), "c")
        first = _pivot(acc.assign(c="x"), "c")
        return [_cells(first, "x"), *(_cells(piv, c) for c in cols[1:-1]), _cells(avg, "avg")]
    score = re.match(r"Open-set OOD detection, (\S+) score", heading)
    assert score, f"a result table this check does not know: {heading!r}"
    det = kept[kept["score"] == score.group(1)]
    out = []
    for col in cols:
        *group, metric, _arrow = col.split(" ")
        split = "ood_full_spectrum" if group[0] == "FS" else "ood"
        name = " ".join(group[1:] if group[0] == "FS" else group)
        sub = det[det["split"] == split]
        if name.endswith(" avg"):  # near/far: each run's mean over the sets so tagged
            sub = sub[sub["tag"] == name[: -len(" avg")]]
            sub = sub.groupby(["row", "run_dir", "metric"])["value"].mean().reset_index()
            sub = sub.assign(set=name)
        piv = _pivot(sub, ["set", "metric"])
        out.append(_cells(piv, (name, metric)))
    return out


def assert_results_csv_reproduces_report(report_dir: Path) -> int:
    """Assert every printed result table equals the pivot of results.csv (and that its
    booleans are typed, no column is empty, per-table CSV headers are snake_case);
    returns how many tables were checked."""
    import pandas as pd

    df = pd.read_csv(report_dir / "results.csv")
    for col in ("selected", "kept_init", "diverged"):  # typed, never a mix with NaN
        assert df[col].dtype == bool, (col, df[col].dtype)
    assert not [c for c in df.columns if df[c].isna().all()]  # no empty column
    assert df[df["unit"] == "%"]["value"].between(0, 100).all()
    for table in report_dir.glob("*.csv"):  # per-table CSVs: plain snake_case headers
        if table.name not in ("results.csv", "runs.csv"):
            header = table.read_text(encoding="utf-8").splitlines()[0].split(",")
            assert header[0] == "row" and all(re.fullmatch(r"[a-z0-9_]+", h) for h in header)
    kept = df[df["selected"]]
    tables = printed_tables(report_dir / "report.md")
    for heading, (header, rows) in tables.items():
        columns = pivot_columns(kept, heading, header)
        printed = {r[0].rstrip(MARKS): r[1:] for r in rows}
        pivot_rows = set().union(*(c.keys() for c in columns))
        assert pivot_rows == set(printed), (heading, pivot_rows, set(printed))
        for label, cells in printed.items():
            got = [c.get(label, "-") for c in columns]
            assert got == cells, (heading, label, got, cells)
    return len(tables)
