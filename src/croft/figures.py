"""Report figures from run records and their ``scores.npz`` (style: :mod:`croft.plotstyle`).

* ``energy_<domain>``: per method, step histograms of the energy score (higher = more ID)
  of ID (source validation), the test groups named by the record's protocol
  (:func:`test_groups`: Setup-II the held-out domain, covariate-shifted, and any extra
  target domains; Setup-I the ID test and each shifted set) and each open-set OOD set,
  the seeds of that held-out domain pooled;
* ``roc_energy``: one panel per OOD set, every method's ROC overlaid, averaged over runs
  (vertical averaging on a common FPR grid, the mean curve only: a band of the spread over
  held-out domains covered most of a panel), a marker where the mean TPR reaches 95 % and
  the method's mean AUROC over runs in its legend entry; ``log_fpr`` puts FPR on a log
  axis, the same layout;
* ``accuracy_vs_auroc``: per OOD set, each method's held-out accuracy against its energy
  AUROC, mean with ±1 std error bars in both axes, the tables' "±"
  (:func:`croft.tables.spread`: the sample std over the (held-out domain × seed) runs), so
  each point and bar is the table's avg-accuracy and AUROC cell.

Every method keeps one colour and one marker in every figure and panel
(:func:`croft.plotstyle.method_styles`, keyed by the report's row label).
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


def is_setup1(run: Record) -> bool:
    """True for a Setup-I record (ImageNet-style: an ID test set of the training domain),
    told by the task meta it carries (``protocol: imagenet`` or ``id_classes``); every
    other record is leave-one-domain-out (Setup-II), whose test set is the held-out domain.
    """
    return run.get("protocol") == "imagenet" or "id_classes" in run


#: the legend names of the test groups, per protocol
HELD_OUT = "held-out domain (covariate-shifted)"
ID_TEST = "ID test"


def test_groups(run: Record) -> list[tuple[str, str]]:
    """``[(legend name, scores.npz key)]`` of a run's test sets: Setup-I the ID test, then
    each covariate-shifted set; Setup-II the held-out domain, then each extra target."""
    setup1 = is_setup1(run)
    out = [(ID_TEST if setup1 else HELD_OUT, "id/energy")]
    kind = "shifted" if setup1 else "extra target"
    for name in run.get("shifted_sets") or ():
        out.append((f"{kind}: {name}", f"shifted/{name}/energy"))
    return out


def _groups(run: Record, s: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray | None]]:
    groups: list[tuple[str, np.ndarray | None]] = [
        ("ID (source val)", s.get("extra/source_val/energy"))
    ]
    groups += [(name, s.get(key)) for name, key in test_groups(run)]
    for o in run.get("detection", {}):
        groups.append((f"OOD: {o}", s.get(f"ood/{o}/energy")))
    return groups


def energy_figure(runs: Sequence[Record], domain: str | None = None) -> Any:
    """Small multiples (one per method) of the energy distributions of one held-out domain
    (its seeds pooled), or of every run pooled (``domain=None``)."""
    styles = ps.method_styles(r["label"] for r in runs)
    by = _by_label([r for r in runs if domain is None or r.get("test_domain") == domain])
    loaded = {
        lab: [(r, s) for r in rs if (s := load_scores(r)) is not None] for lab, rs in by.items()
    }
    loaded = {k: v for k, v in loaded.items() if v}
    if not loaded:
        return None
    seeds = sorted({r.get("seed") for v in loaded.values() for r, _ in v}, key=str)
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds pooled"
    setup1 = all(is_setup1(r) for v in loaded.values() for r, _ in v)
    what = "test set" if setup1 else "held-out domain"
    if domain is None:
        ndom = len({r.get("test_domain") for v in loaded.values() for r, _ in v})
        where = f"{ndom} {what}s"
        title = f"Energy score distributions, all runs pooled ({where} × {len(seeds)} seeds)"
        seed_text = f"{where}, {len(seeds)} seeds"
    else:
        where = domain
        title = f"Energy score distributions, {what} {domain}, {seed_text}"
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
        sub = f"{where}, {seed_text}" if domain else seed_text
        ax.set_title(f"{lab}\n{sub}", color=styles[lab].color)
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


def _mean_auroc(rs: Sequence[Record], ood: str, pairs: Sequence[tuple[Any, Any]]) -> float:
    """Mean AUROC (%) over runs: the recorded one (as in the tables), else from the scores."""
    got = [r["detection"].get(ood, {}).get("energy", {}).get("auroc") for r in rs]
    if got and all(isinstance(v, (int, float)) for v in got):
        return 100 * float(np.mean(got))
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(np.r_[np.ones(len(i)), np.zeros(len(o))], np.r_[i, o]) for i, o in pairs]
    return 100 * float(np.mean(aucs))


def roc_figure(runs: Sequence[Record], log_fpr: bool = False) -> Any:
    """One panel per OOD set: every method's energy ROC averaged over runs (mean curve, a
    marker at TPR 95 %), its legend entry naming its mean AUROC over runs."""
    by = _by_label(runs)
    styles = ps.method_styles(by)
    grid = np.logspace(-3, 0, 300) if log_fpr else np.linspace(0, 1, 301)
    # panels[ood][label] = ([runs], [(id scores, ood scores)])
    panels: dict[str, dict[str, tuple[list[Record], list[tuple[np.ndarray, np.ndarray]]]]] = {}
    for o in _oods(runs):
        for lab, rs in by.items():
            for r in rs:
                s = load_scores(r)
                if s is None:
                    continue
                idv = s.get("detection_id/energy", s.get("id/energy"))
                oodv = s.get(f"ood/{o}/energy")
                if idv is not None and oodv is not None:
                    runs_, pairs = panels.setdefault(o, {}).setdefault(lab, ([], []))
                    runs_.append(r)
                    pairs.append((idv, oodv))
    if not panels:
        return None
    fig, axes = ps.panel_grid(
        len(panels),
        f"ROC of the energy score per OOD set, {ps.runs_phrase(runs)} (vertical averaging); "
        "marker: where the mean TPR reaches 95%; legend: mean AUROC (%) over runs",
        below=0.55 + 0.16 * max(len(m) for m in panels.values()),
    )
    from matplotlib.lines import Line2D
    from matplotlib.transforms import offset_copy

    for ax, (o, per_method) in zip(axes, panels.items(), strict=True):
        handles, texts = [], []
        for lab, (rs, pairs) in per_method.items():
            st = styles[lab]
            mean = _mean_roc(pairs, grid).mean(0)
            ax.plot(grid, mean, color=st.color, lw=1.4)
            k = int(np.argmax(mean >= 0.95))
            ax.plot(grid[k], mean[k], marker=st.marker, color=st.color, ms=6, mec="white")
            handles.append(Line2D([], [], color=st.color, marker=st.marker, mec="white", lw=1.4))
            texts.append(f"{lab}: AUROC {_mean_auroc(rs, o, pairs):.1f} ({len(rs)} runs)")
        ax.axhline(0.95, color="0.5", lw=0.7, ls=":")
        ax.plot(grid, grid, color="0.6", lw=0.7, ls=":")  # chance
        if log_fpr:
            ax.set_xscale("log")
        ax.set_title(f"OOD set: {o}")
        ax.set_xlabel("FPR (OOD accepted as ID)")
        ax.set_ylabel("TPR (ID accepted)")
        ax.set_ylim(0, 1.02)
        # below its own panel, a fixed distance under the axis label (constrained layout
        # makes room): no curve hidden
        under = offset_copy(ax.transAxes, fig, y=-34, units="points")
        ax.legend(
            handles,
            texts,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            bbox_transform=under,
            frameon=False,
            fontsize=7,
            title="method",
            title_fontsize=7,
        )
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
    styles = ps.method_styles(by)
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
                fmt=styles[lab].marker,
                color=styles[lab].color,
                ms=6,
                capsize=2,
                lw=1,
                mec="white",
            )
        ax.set_title(f"OOD set: {o}")
        ax.set_xlabel("held-out accuracy (%)")
        ax.set_ylabel(f"AUROC, {score} (%)")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=styles[lab].color, marker=styles[lab].marker, ls="") for lab in by
    ]
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
            built.append(("roc_energy", fig, "ROC of the energy score per OOD set"))
        fig = accuracy_auroc_figure(records)
        if fig is not None:
            caption = f"Held-out accuracy vs energy AUROC per OOD set; {PM_TEXT}"
            built.append(("accuracy_vs_auroc", fig, caption))
        out = []
        for stem, fig, caption in built:
            png, pdf = ps.save(fig, out_dir, stem)
            out.append({"stem": stem, "png": png, "pdf": pdf, "caption": caption})
    return out
