"""The one plotting style of croft's figures.

* one colour and one marker per method across every figure and panel
  (:func:`method_styles`, keyed by the report's row label; :func:`method_colors` its
  colours), one colour per data group in score distributions (:data:`GROUP_COLORS`);
* small multiples in a grid of at most 4 columns that wraps (:func:`panel_grid`);
* legends outside the axes (:func:`legend_outside`), titles that say which runs are shown
  (:func:`runs_phrase`);
* every figure saved as PNG (for reports) and PDF (vector, for papers) by :func:`save`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from croft.fileio import atomic_write_with

MAX_COLS = 4
PANEL_W, PANEL_H = 3.4, 2.7  # inches per panel
DPI = 130

# pinned (colour, marker) for the methods every report has; others take the palette and
# the free markers in sorted order
_PINNED = {
    "zeroshot": ("#000000", "o"),
    "croft": ("#d62728", "D"),
    "croft_paper": ("#ff7f0e", "s"),
}
_PALETTE = (
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#393b79",
    "#637939",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#31a354",
    "#756bb1",
    "#e6550d",
)
# Okabe-Ito (colour-blind safe) for data groups in distribution plots
GROUP_COLORS = ("#0072B2", "#009E73", "#D55E00", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
_MARKERS = ("^", "v", "P", "X", "*", "<", ">", "h", "p", "d", "o", "s", "D")

RC = {
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "legend.fontsize": 8,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "figure.titlesize": 10.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,  # embedded TrueType: editable text in the PDF
}


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def style() -> Any:
    """Context manager: build a figure inside it to get croft's fonts and grid."""
    return pyplot().rc_context(RC)


@dataclass(frozen=True)
class MethodStyle:
    """How one method is drawn in every figure."""

    color: str
    marker: str


def method_key(label: str) -> str:
    """The method a row label draws as: ``croft[...]`` and ``croft (oracle)`` are croft."""
    return label.split("[", 1)[0].split(" (", 1)[0]


def method_styles(labels: Iterable[str]) -> dict[str, MethodStyle]:
    """One :class:`MethodStyle` per row label: pinned methods keep theirs, the others take
    the palette and the free markers in sorted order of their method (stable for a
    given set of labels, whatever order they come in)."""
    base = {lab: method_key(lab) for lab in labels}
    taken = {m for _, m in _PINNED.values()}
    free_markers = [m for m in _MARKERS if m not in taken]
    free_colors = iter(_PALETTE)
    styles: dict[str, MethodStyle] = {}
    k = 0
    for name in sorted(set(base.values())):
        if name in _PINNED:
            styles[name] = MethodStyle(*_PINNED[name])
            continue
        color = next(free_colors, None) or f"C{k % 10}"
        styles[name] = MethodStyle(color, free_markers[k % len(free_markers)])
        k += 1
    return {lab: styles[b] for lab, b in base.items()}


def method_colors(labels: Iterable[str]) -> dict[str, str]:
    """The colour of each row label (:func:`method_styles`)."""
    return {lab: st.color for lab, st in method_styles(labels).items()}


def panel_grid(
    n: int, title: str, *, sharex: bool = False, sharey: bool = False, below: float = 0.0
) -> Any:
    """``(fig, [axes])``: ``n`` panels in rows of at most 4, unused cells removed;
    ``below`` inches more per row for a legend under each panel.

    Call inside :func:`style`."""
    plt = pyplot()
    ncols = max(1, min(MAX_COLS, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(PANEL_W * ncols + 1.8, (PANEL_H + below) * nrows + 0.7),
        squeeze=False,
        sharex=sharex,
        sharey=sharey,
        layout="constrained",
    )
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.remove()
    import textwrap

    fig.suptitle(textwrap.fill(title, width=int(11 * (PANEL_W * ncols + 1.8))))
    return fig, flat[:n]


def legend_outside(fig: Any, handles: Sequence[Any], labels: Sequence[str], title: str = "") -> Any:
    """A figure legend to the right of every axes (constrained layout makes room)."""
    return fig.legend(
        handles, labels, loc="outside right center", title=title or None, frameon=False
    )


def runs_phrase(runs: Sequence[Mapping[str, Any]]) -> str:
    """Which runs a figure shows: "held-out sketch, seed 1" for one run, else "mean over N
    runs (D held-out domains × S seeds)"."""
    domains = sorted({str(r.get("test_domain")) for r in runs})
    seeds = sorted({r.get("seed") for r in runs}, key=str)
    if len(runs) == 1:
        return f"held-out {domains[0]}, seed {seeds[0]}"
    if len(domains) == 1:
        return f"held-out {domains[0]}, mean over {len(seeds)} seeds"
    return f"mean over {len(runs)} runs ({len(domains)} held-out domains × {len(seeds)} seeds)"


def save(fig: Any, out_dir: Path, stem: str) -> list[str]:
    """Write ``stem.png`` and ``stem.pdf``; close the figure; return both paths."""
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{stem}.{ext}"
        # atomic: replaces a symlink planted at ``path`` instead of writing through it
        atomic_write_with(path, lambda p, e=ext: fig.savefig(p, format=e, dpi=DPI))
        paths.append(str(path))
    plt.close(fig)
    return paths
