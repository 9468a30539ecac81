"""Tables: the human tables derived from run results, and the one meaning of "±".

* The tidy long format (:func:`tidy_rows`, :func:`run_rows`, :func:`to_csv_text`,
  results.csv) lives in :mod:`croft.results_csv` and is re-exported here.
* :class:`Table` is a human table of cells (mean, std, n over runs) with grouped columns;
  :func:`to_markdown`, :func:`to_latex` and :func:`to_wide_csv` render it. Cells show
  ``mean ± std`` in %, and just the mean when they hold one value.
* "±" has one meaning everywhere croft prints it (tables, the demo's table, the
  accuracy-vs-AUROC error bars): :func:`spread`, the sample standard deviation (ddof=1)
  over the runs a cell pools, i.e. its (held-out domain × seed) pairs; :data:`PM_TEXT`
  says so in every caption. pandas' ``std`` (ddof=1 by default) gives the same number.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from croft.results_csv import DECIMALS
from croft.results_csv import PERCENT_METRICS as PERCENT_METRICS
from croft.results_csv import TIDY_COLUMNS as TIDY_COLUMNS
from croft.results_csv import UNITS as UNITS
from croft.results_csv import conventions_name as conventions_name
from croft.results_csv import run_rows as run_rows
from croft.results_csv import tidy_rows as tidy_rows
from croft.results_csv import to_csv_text as to_csv_text

#: ``std`` in "mean ± std": the sample standard deviation (pandas' default)
STD_DDOF = 1
#: what "±" means, for every table and figure caption that prints one
PM_TEXT = (
    "mean ± std over the (held-out domain × seed) runs each cell pools "
    "(sample std, ddof=1; one run: its value)"
)


def spread(values: Sequence[float], scale: float = 100.0) -> tuple[float, float, int]:
    """``(mean, std, n)`` of ``values`` × ``scale`` (default: fractions to %), the one
    definition of "±" (:data:`STD_DDOF`; values rounded to :data:`DECIMALS` as in
    results.csv); mean and std are NaN for no value, std for one."""
    a = np.round(np.asarray(values, dtype=float) * scale, DECIMALS)
    n = int(a.size)
    mean = float(a.mean()) if n else math.nan
    std = float(a.std(ddof=STD_DDOF)) if n > STD_DDOF else math.nan
    return mean, std, n


def mean_std(values: Sequence[float], percent: bool = True) -> str:
    """``"84.3 ± 1.2"`` (×100 when ``percent``; :func:`spread`); ``"84.3"`` for one value;
    ``"-"`` for none."""
    mean, std, n = spread(values, 100.0 if percent else 1.0)
    if not n:
        return "-"
    return f"{mean:.1f}" if n == 1 else f"{mean:.1f} ± {std:.1f}"


def render(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """A column-aligned table; ``markdown`` adds pipes and the separator row."""
    cols = [list(map(str, c)) for c in zip(header, *rows, strict=True)]
    widths = [max(len(x) for x in c) for c in cols]
    lines = []
    for i, row in enumerate([header, *rows]):
        cells = [
            str(x).ljust(w) if j == 0 else str(x).rjust(w)
            for j, (x, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(cells))
        if i == 0:
            sep = ["-" * w for w in widths]
            lines.append("| " + " | ".join(sep) + " |" if markdown else "  ".join(sep))
    return "\n".join(lines)


# ---------------------------------------------------------------- human tables


@dataclass
class Cell:
    """Values of one table cell (fractions); shown as % mean ± std over them (:func:`spread`)."""

    values: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        """The mean as a fraction (NaN without values)."""
        return float(np.mean(self.values)) if self.values else math.nan

    def stats(self) -> tuple[float, float, int]:
        """``(mean, std, n)`` in % (:func:`spread`)."""
        return spread(self.values)

    def text(self) -> str:
        return mean_std(self.values)


@dataclass
class Table:
    """A human table: rows of cells under grouped columns.

    ``groups`` is ``[(group title or "", [column titles])]``; ``better[j]`` is ``"max"``,
    ``"min"`` or ``""`` per flat column (every row tied for the best printed mean is bold,
    :func:`best_cells`). ``row_marks`` appends a marker to a row label; ``notes`` are
    printed under the table.
    """

    name: str
    title: str
    groups: list[tuple[str, list[str]]]
    rows: list[tuple[str, list[Cell]]]
    better: list[str]
    notes: list[str] = field(default_factory=list)
    row_marks: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [f"{g} {c}".strip() for g, cols in self.groups for c in cols]

    def header(self) -> list[str]:
        return ["method", *self.columns]

    def text_rows(self) -> list[list[str]]:
        return [
            [label + self.row_marks.get(label, ""), *(c.text() for c in cells)]
            for label, cells in self.rows
        ]

    def as_pair(self) -> tuple[list[str], list[list[str]]]:
        """``(header, rows)`` of strings (the CLI's and :func:`render`'s form)."""
        return self.header(), self.text_rows()


def to_markdown(table: Table) -> str:
    """The table in Markdown, every row tied for a column's best in bold (:func:`best_cells`)."""
    best = best_cells(table)
    rows = [
        [row[0], *(f"**{t}**" if i in best[j] else t for j, t in enumerate(row[1:]))]
        for i, row in enumerate(table.text_rows())
    ]
    out = render(table.header(), rows, markdown=True)
    if table.notes:
        out += "\n\n" + "\n".join(f"- {n}" for n in table.notes)
    return out


def snake(text: str) -> str:
    """``"FS near avg"`` -> ``"fs_near_avg"``, ``"fpr95_id_pos ↓"`` -> ``"fpr95_id_pos"``."""
    return re.sub(r"[^0-9a-z]+", "_", str(text).lower()).strip("_") or "column"


def wide_columns(table: Table) -> list[str]:
    """The per-table CSV's column stems, one per cell column: ``{group}__{column}`` (or
    ``{column}`` without a group), snake_case, made unique with ``_2``, ``_3``..."""
    out: list[str] = []
    for g, cols in table.groups:
        for c in cols:
            stem = f"{snake(g)}__{snake(c)}" if g else snake(c)
            k, base = 2, stem
            while stem in out:
                stem, k = f"{base}_{k}", k + 1
            out.append(stem)
    return out


def to_wide_csv(table: Table) -> str:
    """The table as numbers: ``row`` (the row label, as results.csv's ``row``), then per
    cell column ``STEM_mean`` and ``STEM_std`` in % (:func:`spread`; empty where undefined)
    and ``STEM_n`` (runs pooled), stems from :func:`wide_columns`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    stats = ("mean", "std", "n")
    writer.writerow(["row", *(f"{s}_{k}" for s in wide_columns(table) for k in stats)])
    for label, cells in table.rows:
        line: list[Any] = [label]
        for c in cells:
            mean, std, n = c.stats()
            line += ["" if math.isnan(mean) else f"{mean:.4f}"]
            line += ["" if math.isnan(std) else f"{std:.4f}", n]
        writer.writerow(line)
    return buf.getvalue()


_LATEX_SUBS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "×": r"$\times$",
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
    "†": r"$^\dagger$",
    "‡": r"$^\ddagger$",
    "λ": r"$\lambda$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and map the symbols croft prints (± × ↓ ↑ † ‡ λ) to math."""
    return "".join(_LATEX_SUBS.get(ch, ch) for ch in str(text))


_LEADING_NUMBER = re.compile(r"\s*[-+]?\d+(\.\d*)?")  # a finite number: nan never bold


def _printed_mean(cell: Cell) -> float | None:
    """The mean as the cell prints it (its precision), or None for an empty cell."""
    if not cell.values:
        return None
    lead = _LEADING_NUMBER.match(cell.text())  # "84.3 ± 1.2" -> 84.3
    return float(lead.group()) if lead else None


def best_cells(table: Table) -> list[frozenset[int]]:
    """Per flat column, the rows to print in bold: every row tied for the best mean at
    printed precision (the one rule of Markdown, HTML and LaTeX); none in a column without
    a ``better`` rule or with fewer than two rows holding values."""
    out: list[frozenset[int]] = []
    for j, rule in enumerate(table.better):
        means = {
            i: m
            for i, (_, cells) in enumerate(table.rows)
            if (m := _printed_mean(cells[j])) is not None
        }
        if not rule or len(means) < 2:
            out.append(frozenset())
            continue
        top = max(means.values()) if rule == "max" else min(means.values())
        out.append(frozenset(i for i, m in means.items() if m == top))
    return out


def best_rows(table: Table) -> list[int | None]:
    """Per flat column, the first row tied for the best (:func:`best_cells`), or None."""
    return [min(rows) if rows else None for rows in best_cells(table)]


def to_latex(table: Table, label_prefix: str = "tab:croft-") -> str:
    """booktabs table: grouped headers (one per OOD set), best mean per column in bold."""
    ncol = len(table.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "c" * ncol + "}"]
    lines.append(r"\toprule")
    if any(g for g, _ in table.groups):
        top, rules, start = ["method"], [], 2
        for g, cols in table.groups:
            top.append(rf"\multicolumn{{{len(cols)}}}{{c}}{{{latex_escape(g)}}}")
            if g:
                rules.append(rf"\cmidrule(lr){{{start}-{start + len(cols) - 1}}}")
            start += len(cols)
        lines.append(" & ".join(top) + r" \\")
        lines.append(" ".join(rules))
        sub = [""] + [c for _, cols in table.groups for c in cols]
    else:
        sub = table.header()
    lines += [" & ".join(latex_escape(h) for h in sub) + r" \\", r"\midrule"]
    best = best_cells(table)
    for i, (label, row) in enumerate(zip(table.rows, table.text_rows(), strict=True)):
        del label
        cells = [latex_escape(row[0])]
        for j, text in enumerate(row[1:]):
            cell = latex_escape(text)
            cells.append(rf"\textbf{{{cell}}}" if i in best[j] else cell)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    caption = table.title + ("" if not table.notes else " " + " ".join(table.notes))
    lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines.append(rf"\label{{{label_prefix}{table.name.replace('_', '-')}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
