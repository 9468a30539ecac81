"""Report figures from run records and their ``scores.npz`` (style: :mod:`croft.plotstyle`).

* ``energy_<domain>``: per method, step histograms of the energy score (higher = more ID)
  of ID (source validation), covariate-shifted (the held-out domain; Setup-I: ID test and
  each shifted set) and each open-set OOD set, the seeds of that held-out domain pooled;
* ``roc_energy``: per method, the ROC of each OOD set averaged over runs (vertical
  averaging on a common FPR grid), a ±1 std band and a marker where the mean TPR reaches
  95 %; ``log_fpr`` puts FPR on a log axis;
* ``accuracy_vs_auroc``: per OOD set, each method's held-out accuracy against its energy
  AUROC, mean with ±1 std error bars in both axes, the tables' "±"
  (:func:`croft.tables.spread`: the sample std over the (held-out domain × seed) runs), so
  each point and bar is the table's avg-accuracy and AUROC cell.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from croft import plotstyle as ps
from croft.tables import PM_TEXT, spread

Record = Mapping[str, Any]


def load_scores(run: Record) -> dict[str, np.ndarray] | None:
    """The run's per-sample scores (``scores.npz`` beside its metrics.json), or None.

    Cached per file version (path, size, mtime): every figure reads each run once."""
    path = Path(str(run.get("run_dir", ""))) / "scores.npz"
    if not path.is_file():
        return None
    st = path.stat()
    return _load_npz(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _load_npz(path: str, size: int, mtime_ns: int) -> dict[str, np.ndarray]:
    del size, mtime_ns  # cache key only
    from croft.experiments.records import load_scores

    return load_scores(path)


def _by_label(records: Sequence[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(r["label"], []).append(r)
    return out


def _oods(records: Sequence[Record]) -> list[str]:
    return list(dict.fromkeys(o for r in records for o in r.get("detection", {})))


def _groups(run: Record, s: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray | None]]:
    groups: list[tuple[str, np.ndarray | None]] = [
        ("ID (source val)", s.get("extra/source_val/energy"))
    ]
    if run.get("shifted_sets"):  # Setup-I: ID test, then each covariate-shifted set
        groups.append(("ID test", s.get("id/energy")))
        for name in run["shifted_sets"]:
            groups.append((f"shifted: {name}", s.get(f"shifted/{name}/energy")))
    else:
        groups.append(("covariate-shifted (held-out)", s.get("id/energy")))
    for o in run.get("detection", {}):
        groups.append((f"OOD: {o}", s.get(f"ood/{o}/energy")))
    return groups


def energy_figure(runs: Sequence[Record], domain: str | None = None) -> Any:
    """Small multiples (one per method) of the energy distributions of one held-out domain
    (its seeds pooled), or of every run pooled (``domain=None``)."""
    by = _by_label([r for r in runs if domain is None or r.get("test_domain") == domain])
    loaded = {
        lab: [(r, s) for r in rs if (s := load_scores(r)) is not None] for lab, rs in by.items()
    }
    loaded = {k: v for k, v in loaded.items() if v}
    if not loaded:
        return None
    seeds = sorted({r.get("seed") for v in loaded.values() for r, _ in v}, key=str)
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds pooled"
    if domain is None:
        ndom = len({r.get("test_domain") for v in loaded.values() for r, _ in v})
        where = f"{ndom} held-out domains"
        title = f"Energy score distributions, all runs pooled ({where} × {len(seeds)} seeds)"
        seed_text = f"{where}, {len(seeds)} seeds"
    else:
        where = domain
        title = f"Energy score distributions, held-out domain {domain}, {seed_text}"
    fig, axes = ps.panel_grid(len(loaded), title)
    names: list[str] = []
    for ax, (lab, pairs) in zip(axes, loaded.items(), strict=True):
        pooled: dict[str, list[np.ndarray]] = {}
        for run, s in pairs:
            for name, vals in _groups(run, s):
                if vals is not None and len(vals):
                    pooled.setdefault(name, []).append(np.asarray(vals, float))
        allv = np.concatenate([np.concatenate(v) for v in pooled.values()])
        bins = np.linspace(*np.percentile(allv, [0.5, 99.5]), 40)
        for name, parts in pooled.items():
            if name not in names:
                names.append(name)
            color = ps.GROUP_COLORS[names.index(name) % len(ps.GROUP_COLORS)]
            ax.hist(
                np.concatenate(parts), bins=bins, density=True, histtype="step", lw=1.4, color=color
            )
        ax.set_title(f"{lab}\n{where if domain else ''}{', ' if domain else ''}{seed_text}")
        ax.set_xlabel("energy (higher = more ID)")
        ax.set_ylabel("density")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=ps.GROUP_COLORS[i % len(ps.GROUP_COLORS)], lw=1.6)
        for i in range(len(names))
    ]
    ps.legend_outside(fig, handles, names, "data")
    return fig


def _mean_roc(pairs: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> np.ndarray:
    """TPR of each run interpolated at ``grid`` FPRs (rows: runs)."""
    from sklearn.metrics import roc_curve

    tprs = []
    for idv, oodv in pairs:
        y = np.r_[np.ones(len(idv)), np.zeros(len(oodv))]
        fpr, tpr, _ = roc_curve(y, np.r_[idv, oodv])
        tprs.append(np.interp(grid, fpr, tpr))
    return np.asarray(tprs)


def roc_figure(runs: Sequence[Record], log_fpr: bool = False) -> Any:
    """Small multiples (one per method) of the energy ROC per OOD set, averaged over runs."""
    by = _by_label(runs)
    oods = _oods(runs)
    styles = ps.ood_styles(oods)
    colors = ps.method_colors(by)
    grid = np.logspace(-3, 0, 300) if log_fpr else np.linspace(0, 1, 301)
    panels: dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]] = {}
    for lab, rs in by.items():
        for r in rs:
            s = load_scores(r)
            if s is None:
                continue
            idv = s.get("detection_id/energy", s.get("id/energy"))
            for o in oods:
                oodv = s.get(f"ood/{o}/energy")
                if idv is not None and oodv is not None:
                    panels.setdefault(lab, {}).setdefault(o, []).append((idv, oodv))
    if not panels:
        return None
    fig, axes = ps.panel_grid(
        len(panels), f"ROC of the energy score, {ps.runs_phrase(runs)}; band ±1 std over runs"
    )
    for ax, (lab, per_ood) in zip(axes, panels.items(), strict=True):
        color = colors[lab]
        for o, pairs in per_ood.items():
            tprs = _mean_roc(pairs, grid)
            mean, std = tprs.mean(0), tprs.std(0)
            marker, line = styles[o]
            ax.plot(grid, mean, ls=line, color=color, lw=1.4)
            ax.fill_between(
                grid,
                np.clip(mean - std, 0, 1),
                np.clip(mean + std, 0, 1),
                color=color,
                alpha=0.15,
                lw=0,
            )
            k = int(np.argmax(mean >= 0.95))
            ax.plot(grid[k], mean[k], marker=marker, color=color, ms=6, mec="white")
        ax.axhline(0.95, color="0.5", lw=0.7, ls=":")
        if log_fpr:
            ax.set_xscale("log")
        else:
            ax.plot([0, 1], [0, 1], color="0.6", lw=0.7, ls=":")
        ax.set_title(f"{lab} ({len(next(iter(per_ood.values())))} runs)", color=color)
        ax.set_xlabel("FPR (OOD accepted as ID)")
        ax.set_ylabel("TPR (ID accepted)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.3", ls=styles[o][1], marker=styles[o][0]) for o in oods]
    ps.legend_outside(fig, handles, [f"{o} (marker: TPR 95%)" for o in oods], "OOD set")
    return fig


def accuracy_auroc_points(
    runs: Sequence[Record], score: str = "energy"
) -> dict[str, dict[str, tuple[float, float, float, float]]]:
    """``{ood set: {method: (acc, acc std, auroc, auroc std)}}`` in %, over the runs with
    an AUROC: mean and std as the tables' cells (:func:`croft.tables.spread`; std 0 for one
    run, no bar)."""
    out: dict[str, dict[str, tuple[float, float, float, float]]] = {}
    for o in _oods(runs):
        for lab, rs in _by_label(runs).items():
            rs = [
                r for r in rs if r["detection"].get(o, {}).get(score, {}).get("auroc") is not None
            ]
            if not rs:  # no run, or none with a metric (e.g. no correct ID sample)
                continue
            x, xe, n = spread([r["accuracy"] for r in rs])
            y, ye, _ = spread([r["detection"][o][score]["auroc"] for r in rs])
            out.setdefault(o, {})[lab] = (x, xe, y, ye) if n > 1 else (x, 0.0, y, 0.0)
    return out


def accuracy_auroc_figure(runs: Sequence[Record], score: str = "energy") -> Any:
    """One panel per OOD set: held-out accuracy vs AUROC per method, the tables' mean ± std
    (:func:`accuracy_auroc_points`) in both axes."""
    by = _by_label(runs)
    points = accuracy_auroc_points(runs, score)
    oods = [o for o in _oods(runs) if o in points]
    if not oods:
        return None
    styles = ps.ood_styles(_oods(runs))
    colors = ps.method_colors(by)
    bars = "bars ±1 sample std over (domain × seed) runs" if len(runs) > len(by) else "no bars"
    fig, axes = ps.panel_grid(
        len(oods), f"Held-out accuracy vs {score} AUROC, {ps.runs_phrase(runs)}; {bars}"
    )
    for ax, o in zip(axes, oods, strict=True):
        for lab, (x, xe, y, ye) in points[o].items():
            ax.errorbar(
                x,
                y,
                xerr=xe,
                yerr=ye,
                fmt=styles[o][0],
                color=colors[lab],
                ms=6,
                capsize=2,
                lw=1,
                mec="white",
            )
        ax.set_title(f"OOD set: {o}")
        ax.set_xlabel("held-out accuracy (%)")
        ax.set_ylabel(f"AUROC, {score} (%)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[lab], marker="o", ls="") for lab in by]
    ps.legend_outside(fig, handles, list(by), "method")
    return fig


def write_figures(
    records: Sequence[Record], out_dir: Path, *, log_fpr: bool = False
) -> list[dict[str, Any]]:
    """Build and save every figure (PNG + PDF); returns ``[{stem, png, pdf, caption}]``."""
    built: list[tuple[str, Any, str]] = []
    with ps.style():
        domains = sorted({str(r.get("test_domain")) for r in records})
        fig = energy_figure(records, domains[0] if len(domains) == 1 else None)
        if fig is not None:
            built.append(("energy_distributions", fig, "Energy distributions, all runs"))
        for d in domains if len(domains) > 1 else ():
            fig = energy_figure(records, d)
            if fig is not None:
                built.append(
                    (f"energy_distributions_{d}", fig, f"Energy distributions, held-out {d}")
                )
        fig = roc_figure(records, log_fpr=log_fpr)
        if fig is not None:
            built.append(("roc_energy", fig, "ROC of the energy score per method"))
        fig = accuracy_auroc_figure(records)
        if fig is not None:
            caption = f"Held-out accuracy vs energy AUROC per OOD set; {PM_TEXT}"
            built.append(("accuracy_vs_auroc", fig, caption))
        out = []
        for stem, fig, caption in built:
            png, pdf = ps.save(fig, out_dir, stem)
            out.append({"stem": stem, "png": png, "pdf": pdf, "caption": caption})
    return out
