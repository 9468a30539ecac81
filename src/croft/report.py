"""Reports from run directories (never from logs): tables and plots.

Reads every ``metrics.json`` below a runs directory (as written by
:mod:`croft.protocols.lodo`) and renders, in the paper's layout:

* closed-set OOD generalisation: methods × held-out domains, accuracy mean ± std
  over seeds, and the average over domains;
* open-set detection: methods × OOD sets, FPR95 (↓), AUROC (↑) and AUPR-in (↑) per score,
  mean ± std over held-out domains × seeds;
* Setup-I (records with ``shifted_accuracy``): methods × (ID test, each covariate-shifted
  set, their average), accuracy mean ± std over seeds;

as Markdown, CSV and LaTeX; and plots from ``scores.npz``: energy-score distributions of
ID (source validation), covariate-shifted (held-out domain) and open-set data, ROC
curves, and accuracy against AUROC per method.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from croft.errors import CroftError
from croft.tables import mean_std, render

METRICS = (("fpr95_id_pos", "FPR95↓"), ("auroc", "AUROC↑"), ("aupr_in", "AUPR↑"))


def collect_runs(runs_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every finished run below ``runs_dir`` (its ``metrics.json`` plus ``run_dir``)."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise CroftError(f"{root}: no such directory; pass the output directory of a run")
    records = []
    for path in sorted(root.rglob("metrics.json")):
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CroftError(
                f"{path}: not valid JSON ({exc}); delete it to rerun that run"
            ) from None
        if "label" in rec and "accuracy" in rec:
            rec["run_dir"] = str(path.parent)
            records.append(rec)
    if not records:
        raise CroftError(f"{root}: no finished runs (no metrics.json below it)")
    return records


def select_records(
    records: Sequence[Mapping[str, Any]], rule: str = "val_acc"
) -> list[dict[str, Any]]:
    """One grid point per (method, held-out domain, seed).

    Grid points are labelled ``method[key=value,...]``. ``val_acc`` (default) keeps the
    point with the best source-validation accuracy (ties: the first in label order);
    ``oracle`` keeps the best held-out TEST accuracy and labels the row ``method (oracle)``,
    so that test-set selection can never pass unnoticed.
    """
    if rule not in ("val_acc", "oracle"):
        raise CroftError(f"selection rule {rule!r}: use val_acc or oracle")
    groups: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for r in records:
        group = r["label"].split("[", 1)[0]
        groups.setdefault((group, r["test_domain"], r["seed"]), []).append(r)
    out = []
    for (group, _, _), members in groups.items():
        gridded = any("[" in m["label"] for m in members)
        if not gridded:
            out.extend(dict(m) for m in members)
            continue
        key = "accuracy" if rule == "oracle" else "val_accuracy"
        if any(m.get(key) is None for m in members):
            raise CroftError(f"{group}: runs without {key}; cannot select among grid points")
        best = max(sorted(members, key=lambda m: m["label"]), key=lambda m: m[key])
        chosen = dict(best)
        chosen["selected_from"] = best["label"]
        chosen["selection"] = rule
        chosen["label"] = f"{group} (oracle)" if rule == "oracle" else group
        out.append(chosen)
    return out


def _labels(records: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["label"] for r in records))


def accuracy_table(records: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Methods × held-out domains (+ average): accuracy in %, mean ± std over seeds."""
    domains = sorted({r["test_domain"] for r in records})
    header = ["method", *domains, "avg"]
    rows = []
    for lab in _labels(records):
        rs = [r for r in records if r["label"] == lab]
        row = [lab]
        for d in domains:
            row.append(mean_std([r["accuracy"] for r in rs if r["test_domain"] == d]))
        row.append(mean_std([r["accuracy"] for r in rs]))
        rows.append(row)
    return header, rows


def setup1_accuracy_table(
    records: Sequence[Mapping[str, Any]],
) -> tuple[list[str], list[list[str]]]:
    """Setup-I: methods × (ID, each shifted set, shifted average), mean ± std over seeds (%)."""
    with_shift = [r for r in records if "shifted_accuracy" in r]
    shifted = list(
        dict.fromkeys(
            n for r in with_shift for n in (*r.get("shifted_sets", ()), *r["shifted_accuracy"])
        )
    )
    header = ["method", "ID", *shifted, "shifted avg"]
    rows = []
    for lab in _labels(with_shift):
        rs = [r for r in with_shift if r["label"] == lab]
        row = [lab, mean_std([r["accuracy"] for r in rs])]
        for n in shifted:
            row.append(
                mean_std([r["shifted_accuracy"][n] for r in rs if n in r["shifted_accuracy"]])
            )
        row.append(
            mean_std(
                [
                    float(np.mean(list(r["shifted_accuracy"].values())))
                    for r in rs
                    if r["shifted_accuracy"]
                ]
            )
        )
        rows.append(row)
    return header, rows


def detection_table(
    records: Sequence[Mapping[str, Any]], score: str = "energy"
) -> tuple[list[str], list[list[str]]]:
    """Methods × OOD sets × (FPR95, AUROC, AUPR-in) for one score, mean ± std in %."""
    oods = list(dict.fromkeys(o for r in records for o in r["detection"]))
    header = ["method"] + [f"{o} {name}" for o in oods for _, name in METRICS]
    rows = []
    for lab in _labels(records):
        rs = [r for r in records if r["label"] == lab]
        row = [lab]
        for o in oods:
            for key, _ in METRICS:
                vals = [
                    r["detection"][o][score][key] for r in rs if score in r["detection"].get(o, {})
                ]
                row.append(mean_std(vals))
        rows.append(row)
    return header, rows


_SETUP1_TITLE = (
    "Setup-I: accuracy (%) on the ID classes, ID test and covariate-shifted sets, "
    "mean ± std over seeds"
)


def to_csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def to_latex(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    def esc(x: str) -> str:
        return (
            str(x)
            .replace("_", r"\_")
            .replace("±", r"$\pm$")
            .replace("↓", r"$\downarrow$")
            .replace("↑", r"$\uparrow$")
            .replace("%", r"\%")
        )

    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}",
    ]
    lines += [r"\toprule", " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{esc(caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_report(
    runs_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    plots: bool = True,
    selection: str = "val_acc",
) -> dict[str, Any]:
    """Write ``report.md``, ``*.csv``, ``*.tex`` (and ``plots/*.png``) into ``out_dir``.

    Grid points are reduced with :func:`select_records` (``selection``).
    """
    records = select_records(collect_runs(runs_dir), selection)
    out = Path(out_dir) if out_dir is not None else Path(runs_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    scores = list(dict.fromkeys(s for r in records for o in r["detection"].values() for s in o))
    tables = {"accuracy": accuracy_table(records)}
    if any("shifted_accuracy" in r for r in records):
        tables["setup1_accuracy"] = setup1_accuracy_table(records)
    for s in scores:
        tables[f"detection_{s}"] = detection_table(records, s)
    md = [f"# croft report: {Path(runs_dir)}", "", f"{len(records)} runs.", ""]
    if selection == "oracle":
        md += ["**Oracle selection: grid points chosen on TEST accuracy (marked).**", ""]
    chosen = sorted(
        {f"{r['label']} <- {r['selected_from']}" for r in records if "selected_from" in r}
    )
    if chosen:
        md += ["Grid points chosen (per held-out domain and seed):", ""]
        md += [f"- {c}" for c in chosen] + [""]
    for name, (header, rows) in tables.items():
        title = (
            "Closed-set OOD generalisation: accuracy (%) on the held-out domain"
            if name == "accuracy"
            else _SETUP1_TITLE
            if name == "setup1_accuracy"
            else f"Open-set OOD detection, {name.split('_', 1)[1]} score (%), "
            "mean ± std over held-out domains × seeds"
        )
        md += [f"## {title}", "", render(header, rows, markdown=True), ""]
        (out / f"{name}.csv").write_text(to_csv(header, rows))
        (out / f"{name}.tex").write_text(to_latex(header, rows, title))
    written: list[str] = []
    if plots:
        written = write_plots(records, out / "plots")
        if written:
            md += ["## Plots", ""] + [f"![{Path(p).stem}](plots/{Path(p).name})" for p in written]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return {"out_dir": str(out), "tables": tables, "plots": written, "records": len(records)}


def write_plots(records: Sequence[Mapping[str, Any]], out_dir: Path) -> list[str]:
    """Energy distributions and ROC curves of the first run of each method; acc vs AUROC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    labels = _labels(records)
    firsts = [next(r for r in records if r["label"] == lab) for lab in labels]
    loaded = []
    for rec in firsts:
        path = Path(rec["run_dir"]) / "scores.npz"
        if path.is_file():
            with np.load(path) as z:
                loaded.append((rec, {k: z[k] for k in z.files}))
    if loaded:
        n = len(loaded)
        fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False, sharey=False)
        for ax, (rec, s) in zip(axes[0], loaded, strict=True):
            groups = [("ID (source val)", s.get("extra/source_val/energy"))]
            if rec.get("protocol") == "imagenet":  # Setup-I: ID test, then the shifted sets
                groups.append(("ID test", s.get("id/energy")))
                for sname in rec.get("shifted_sets", []):
                    groups.append((f"covariate shift: {sname}", s.get(f"shifted/{sname}/energy")))
            else:
                groups.append((f"covariate shift ({rec['test_domain']})", s.get("id/energy")))
            for o in rec["detection"]:
                groups.append((f"open-set: {o}", s.get(f"ood/{o}/energy")))
            for name, vals in groups:
                if vals is not None and len(vals):
                    ax.hist(vals, bins=40, density=True, alpha=0.45, label=name)
            ax.set_title(f"{rec['label']} (seed {rec['seed']})", fontsize=10)
            ax.set_xlabel("energy score (higher = more ID)")
        axes[0][0].set_ylabel("density")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / "energy_distributions.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))

        fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
        for ax, (rec, s) in zip(axes[0], loaded, strict=True):
            idv = s.get("id/energy")
            for o in rec["detection"]:
                oodv = s.get(f"ood/{o}/energy")
                if idv is None or oodv is None:
                    continue
                y = np.r_[np.ones(len(idv)), np.zeros(len(oodv))]
                fpr, tpr, _ = roc_curve(y, np.r_[idv, oodv])
                auc = rec["detection"][o]["energy"]["auroc"]
                ax.plot(fpr, tpr, label=f"{o} (AUROC {100 * auc:.1f})")
            ax.plot([0, 1], [0, 1], "k:", lw=0.8)
            ax.set_title(rec["label"], fontsize=10)
            ax.set_xlabel("FPR (OOD accepted)")
            ax.legend(fontsize=7, loc="lower right")
        axes[0][0].set_ylabel("TPR (ID accepted)")
        fig.tight_layout()
        path = out_dir / "roc_energy.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))

    oods = list(dict.fromkeys(o for r in records for o in r["detection"]))
    if oods:
        fig, ax = plt.subplots(figsize=(5, 4))
        for lab in labels:
            rs = [r for r in records if r["label"] == lab]
            acc = 100 * np.mean([r["accuracy"] for r in rs])
            for o, marker in zip(oods, "osD^v<>", strict=False):
                vals = [
                    r["detection"][o]["energy"]["auroc"]
                    for r in rs
                    if "energy" in r["detection"][o]
                ]
                if vals:
                    ax.scatter(acc, 100 * np.mean(vals), marker=marker, label=f"{lab} / {o}")
        ax.set_xlabel("held-out-domain accuracy (%)")
        ax.set_ylabel("open-set AUROC, energy (%)")
        ax.legend(fontsize=6)
        fig.tight_layout()
        path = out_dir / "accuracy_vs_auroc.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written
