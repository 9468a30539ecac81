"""The world study's diagnostics (docs/world-study.md, H4) from a `croft run` folder.

For each CRoFT variant (``croft`` official, ``croft_paper``) and each held-out style, on
seed 1: the grid point chosen on source validation fixes every key but lambda2 (lr,
lambda1, and the paper variant's temperature); the heads of that slice at every lambda2
of the grid are diagnosed with :func:`croft.experiments.diagnose_runs` (energy-gradient
norms per domain and set, per-domain Hessians of the classification loss wrt the adapter,
their cross-domain alignment with its split-half ceiling, ``||W - I||/sqrt(D)``). Writes
a tidy CSV of every row, a summary table per (variant, lambda2) averaged over the styles,
and Spearman correlations across lambda2 of the held-out Hessian's alignment with the
training domains' against held-out accuracy.

    OMP_NUM_THREADS=1 python benchmarks/world_study_diagnose.py RUN_OUT --out DIR
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = ("croft", "croft_paper")
FIXED = ("lr", "lambda1", "energy_temperature")
#: (group, other, quantity) -> column of the summary
SUMMARY = {
    "train ‖∇E‖": ("train", "", "energy_grad_norm_mean"),
    "held-out ‖∇E‖": ("heldout", "", "energy_grad_norm_mean"),
    "matched OOD ‖∇E‖": ("matched", "", "energy_grad_norm_mean"),
    "held-out tr H": ("heldout", "", "hessian_trace"),
    "held-out λmax": ("heldout", "", "hessian_top_eig"),
    "cos(H_held-out, H_train)": ("heldout", "", "hessian_cosine_to_train"),
    "split-half ceiling": ("heldout", "", "hessian_cosine_split_half"),
    "‖W−I‖/√D image": ("fc_i", "", "w_minus_i"),
    "held-out acc": ("heldout", "", "accuracy"),
}


def slices(out: Path, seed: int = 1) -> dict[tuple[str, str], list[Path]]:
    """``{(variant, style): run folders of the lambda2 slice through the selected point}``."""
    from croft.experiments.records import read_runs
    from croft.report import select_records

    every = [r.as_dict() for r in read_runs(out)]
    chosen = {(r["label"], r["test_domain"]): r for r in select_records(every) if r["seed"] == seed}
    result: dict[tuple[str, str], list[Path]] = {}
    for (label, style), sel in chosen.items():
        if label not in VARIANTS:
            continue
        keep = {k: sel["options"].get(k) for k in FIXED}
        members = [
            r
            for r in every
            if r["label"].split("[", 1)[0] == label
            and (r["test_domain"], r["seed"]) == (style, seed)
            and all(r["options"].get(k) == v for k, v in keep.items())
        ]
        members.sort(key=lambda r: float(r["options"]["lambda2"]))
        result[label, style] = [Path(r["run_dir"]) for r in members]
    return result


def value(rows: Sequence[Mapping[str, Any]], x: float, key: tuple[str, str, str]) -> float:
    group, other, quantity = key
    for r in rows:
        if (r["x"], r["group"], r["other"], r["quantity"]) == (x, group, other, quantity):
            return float(r["value"])
    return float("nan")


def main() -> None:
    from scipy.stats import spearmanr

    from croft.diagnose import DiagnoseOptions
    from croft.experiments import diagnose_runs
    from croft.fileio import atomic_write_json, atomic_write_text
    from croft.tables import to_csv_text

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_out", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    every_row: list[dict[str, Any]] = []
    per: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (variant, style), dirs in sorted(slices(a.run_out, a.seed).items()):
        diag = diagnose_runs(dirs, DiagnoseOptions(), x_key="lambda2")
        rows = [{**r, "variant": variant, "style": style} for r in diag.rows]
        per[variant, style] = rows
        every_row += rows
        print(f"{variant} {style}: {len(dirs)} heads [{time.perf_counter() - t0:.0f} s]")
    atomic_write_text(a.out / "diagnostics.csv", to_csv_text(every_row))
    lines, stats = [], {}
    for variant in VARIANTS:
        styles = sorted(s for v, s in per if v == variant)
        xs = sorted({r["x"] for s in styles for r in per[variant, s]})
        lines += [f"### {variant} (seed {a.seed}, means over {len(styles)} held-out styles)", ""]
        lines += ["| λ2 | " + " | ".join(SUMMARY) + " |", "|---" * (len(SUMMARY) + 1) + "|"]
        for x in xs:
            cells = [
                np.nanmean([value(per[variant, s], x, k) for s in styles]) for k in SUMMARY.values()
            ]
            lines.append(f"| {x:g} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        cos_k, acc_k = SUMMARY["cos(H_held-out, H_train)"], SUMMARY["held-out acc"]
        pts = [
            (value(per[variant, s], x, cos_k), value(per[variant, s], x, acc_k), s)
            for s in styles
            for x in xs
        ]
        within = {}
        for s in styles:
            c = [(value(per[variant, s], x, cos_k), value(per[variant, s], x, acc_k)) for x in xs]
            within[s] = float(spearmanr(*zip(*c, strict=True)).statistic)
        pooled = spearmanr([q[0] for q in pts], [q[1] for q in pts])
        stats[variant] = {
            "within_style": within,
            "pooled": float(pooled.statistic),
            "pooled_p": float(pooled.pvalue),
            "n_pooled": len(pts),
        }
        # per style: the numbers the text quotes style by style (e.g. an indefinite held-out
        # Hessian, a negative trace), committed with the means
        keys = ("held-out tr H", "held-out λmax", "cos(H_held-out, H_train)", "held-out acc")
        head = "| style | λ2 | " + " | ".join(keys) + " |"
        lines += ["", f"Per held-out style ({variant}, seed {a.seed}):", "", head]
        lines.append("|---|---" + "|---" * len(keys) + "|")
        for s in styles:
            for x in xs:
                vals = [value(per[variant, s], x, SUMMARY[k]) for k in keys]
                lines.append(f"| {s} | {x:g} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
        lines += [
            "",
            "Spearman ρ(alignment, held-out accuracy) across λ2: within style "
            + ", ".join(f"{s} {r:+.2f} (n={len(xs)})" for s, r in within.items())
            + f"; pooled {pooled.statistic:+.2f} (n={len(pts)}, p={pooled.pvalue:.2f})",
            "",
        ]
    atomic_write_text(a.out / "diagnostics.md", "\n".join(lines) + "\n")
    atomic_write_json(
        a.out / "diagnostics.json", {"spearman": stats, "seconds": time.perf_counter() - t0}
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
