"""The verdict at a glance: a forest plot and a compact comparison × metric table.

:func:`forest_figure`: one panel per metric (held-out accuracy, then each open set's
score metrics), one row per comparison (``subject vs reference``, in the verdict's order),
the mean paired difference in points with its 95% interval (the verdict's bootstrap: the
cluster bootstrap by default) as a horizontal bar, zero marked by a vertical line; a
filled marker where the interval excludes 0, hollow where it does not, and a note on the
panel title where lower is better (FPR95). :func:`verdict_table` is the same numbers as
text. Both read a :class:`croft.verdict.Verdict`; :func:`write_forest` saves PNG + PDF.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from croft import plotstyle as ps
from croft.stats import higher_is_better
from croft.verdict import MetricKey, Verdict, what_of

STEM = "verdict_forest"
ROW_H = 0.22  # inches per comparison row


def short_name(key: MetricKey) -> str:
    """``accuracy`` or ``OOD metric`` (the score named when it is not energy)."""
    metric, ood, score = key
    if not ood:
        return metric
    return f"{ood} {metric}" if score == "energy" else f"{ood} {score} {metric}"


def _rows(v: Verdict) -> list[str]:
    return list(dict.fromkeys(c.label + c.note for c in v.comparisons))


def verdict_table(v: Verdict) -> tuple[list[str], list[list[str]]]:
    """Rows: comparisons; columns: metrics; cells ``mean [low, high]`` in points, ``*``
    where the interval excludes 0 and Holm's adjustment agrees, ``(*)`` where only the raw
    interval does, ``-`` where the pair has no shared runs."""
    keys = list(dict.fromkeys(c.key for c in v.comparisons))
    cells: dict[str, dict[MetricKey, str]] = {}
    for c in v.comparisons:
        d = c.diff
        mark = ""
        if d.significant:
            mark = " *" if c.holm_p is not None and c.holm_p < 1.0 - d.level else " (*)"
        cells.setdefault(c.label + c.note, {})[c.key] = (
            f"{d.mean:+.1f} [{d.low:+.1f}, {d.high:+.1f}]{mark}"
        )
    header = ["comparison", *(short_name(k) for k in keys)]
    return header, [[lab, *(cells[lab].get(k, "-") for k in keys)] for lab in _rows(v)]


def forest_figure(v: Verdict) -> Any:
    """The forest plot of a verdict (module doc), or None without comparisons."""
    if not v.comparisons:
        return None
    plt = ps.pyplot()
    keys = list(dict.fromkeys(c.key for c in v.comparisons))
    rows = _rows(v)
    subjects = list(dict.fromkeys(c.subject for c in v.comparisons))
    styles = ps.method_styles(subjects)
    ncols = min(ps.MAX_COLS, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(2.6 * ncols + 2.2, ROW_H * len(rows) * nrows + 1.2 * nrows + 0.6),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(keys) :]:
        ax.remove()
    y = {lab: len(rows) - 1 - i for i, lab in enumerate(rows)}
    for ax, key in zip(flat, keys, strict=False):
        ax.axvline(0.0, color="#444444", lw=0.8, zorder=1)
        for c in (c for c in v.comparisons if c.key == key):
            d, yy, st = c.diff, y[c.label + c.note], styles[c.subject]
            col = st.color
            ax.plot([d.low, d.high], [yy, yy], color=col, lw=1.4, zorder=2)
            face = col if d.significant else "white"
            ax.plot(d.mean, yy, st.marker, ms=4, mec=col, mfc=face, zorder=3)
        better = "higher" if higher_is_better(key[0]) else "lower"
        ax.set_title(f"{what_of(key)}\n({better} is better)", fontsize=8)
        ax.set_xlabel("difference (points)")
        ax.set_yticks(range(len(rows)), list(reversed(rows)))
        ax.set_ylim(-0.7, len(rows) - 0.3)
    how = f"cluster bootstrap over {v.factor}" if v.bootstrap == "cluster" else "i.i.d. pairs"
    fig.suptitle(
        f"Verdict: paired differences, 95% intervals ({how}); filled: the interval excludes 0",
        fontsize=9,
    )
    return fig


def write_forest(v: Verdict, out_dir: Path) -> dict[str, str] | None:
    """Save the forest plot as ``verdict_forest.png`` and ``.pdf`` in ``out_dir``; returns
    ``{stem, png, pdf, caption}`` or None without comparisons."""
    with ps.style():
        fig = forest_figure(v)
        if fig is None:
            return None
        png, pdf = ps.save(fig, Path(out_dir), STEM)
    caption = (
        f"Verdict at a glance: {len(v.comparisons)} paired comparisons, one panel per "
        "metric, mean difference (points) with its 95% interval; zero marked"
    )
    return {"stem": STEM, "png": png, "pdf": pdf, "caption": caption}


def verdict_section(doc: Any, v: Verdict, plots_dir: Path | None, rel_dir: str = "plots") -> Any:
    """The report's verdict section in ``doc`` (:class:`croft.report_html.Doc`): the forest
    plot with the compact table beside it (the table alone without ``plots_dir``), then the
    verdict's lines. Returns the saved figure's dict (or None)."""
    fig = write_forest(v, plots_dir) if plots_dir is not None and v.comparisons else None
    header, rows = verdict_table(v)
    note = (
        "Cells: mean paired difference in points [95% interval]; * the interval excludes 0 "
        "and Holm's adjustment over every comparison agrees, (*) only the raw interval does."
    )
    if fig is not None:
        doc.beside(Path(fig["png"]), f"{rel_dir}/{Path(fig['png']).name}", fig["caption"],
                   header, rows)  # fmt: skip
        doc.p(note)
    elif rows:
        doc.table(header, rows)
        doc.p(note)
    doc.items(v.lines or ["(no subject method to compare; pass subject=)"])
    return fig


def within_noise_lines(v: Verdict) -> list[str]:
    """Which comparisons are within the noise (interval contains 0): one line for those
    within it on every metric, then per comparison the metrics that are, e.g. "- within
    the noise on accuracy, matched fpr95_id_pos: croft vs ce_adapter"; one line saying so
    when every interval excludes 0."""
    keys = list(dict.fromkeys(c.key for c in v.comparisons))
    by: dict[str, list[str]] = {}
    for c in v.within_noise():
        by.setdefault(c.label + c.note, []).append(short_name(c.key))
    if not by:
        return ["- within the noise: none (every interval excludes 0)"] if keys else []
    every = [lab for lab, ks in by.items() if len(ks) == len(keys)]
    out = [f"- within the noise on every metric: {', '.join(every)}"] if every else []
    return out + [
        f"- within the noise on {', '.join(ks)}: {lab}"
        for lab, ks in by.items()
        if len(ks) < len(keys)
    ]
