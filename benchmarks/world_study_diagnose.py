"""The world study's diagnostics (docs/world-study.md, H4) from a `croft run` folder.

For each CRoFT variant (``croft`` official, ``croft_paper``) and each held-out style, on
seed 1: the grid point chosen on source validation fixes every key but lambda2 (lr,
lambda1, and the paper variant's temperature); the heads of that slice at every lambda2
of the grid are diagnosed with :func:`croft.experiments.diagnose_runs` (energy-gradient
norms per domain and set, per-domain Hessians of the classification loss wrt the adapter,
their cross-domain alignment with its split-half ceiling, ``||W - I||/sqrt(D)``). Writes
a tidy CSV of every row, a summary table per (variant, lambda2) averaged over the slices
(held-out styles; with several worlds, (world, style)), a per-slice table, Spearman
correlations across lambda2 of the held-out Hessian's alignment with the training
domains' against held-out accuracy, and v4's H4 medians over slices (:func:`h4`).

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


SliceKey = tuple[Any, str, str]  # (world_seed or None, variant, held-out style)


def slices(out: Path, seed: int = 1) -> dict[SliceKey, list[Path]]:
    """``{(world seed, variant, style): run folders of the lambda2 slice through the selected
    point}`` (world seed None for a one-world study)."""
    from croft.experiments.records import read_runs
    from croft.report import select_records

    every = [r.as_dict() for r in read_runs(out)]
    chosen = {
        (r.get("world_seed"), r["label"], r["test_domain"]): r
        for r in select_records(every)
        if r["seed"] == seed
    }
    result: dict[SliceKey, list[Path]] = {}
    for (world, label, style), sel in chosen.items():
        if label not in VARIANTS:
            continue
        keep = {k: sel["options"].get(k) for k in FIXED}
        members = [
            r
            for r in every
            if r["label"].split("[", 1)[0] == label
            and (r.get("world_seed"), r["test_domain"], r["seed"]) == (world, style, seed)
            and all(r["options"].get(k) == v for k, v in keep.items())
        ]
        members.sort(key=lambda r: float(r["options"]["lambda2"]))
        result[world, label, style] = [Path(r["run_dir"]) for r in members]
    return result


def source_alignment(rows: Sequence[Mapping[str, Any]], x: float) -> float:
    """Mean pairwise cosine of the training domains' Hessians at ``x`` (nan if < 2)."""
    vals = [
        float(r["value"])
        for r in rows
        if r["x"] == x
        and r["quantity"] == "hessian_cosine"
        and str(r["group"]).startswith("train:")
        and str(r["other"]).startswith("train:")
    ]
    return float(np.mean(vals)) if vals else float("nan")


def h4(per: Mapping[SliceKey, Sequence[Mapping[str, Any]]], variant: str) -> dict[str, Any]:
    """H4 (docs/world-study.md, v4): within each (world, style) slice, Spearman across
    lambda2 of (a) source alignment and held-out alignment against lambda2 and (b) held-out
    alignment against held-out accuracy; the median over slices with n."""
    from scipy.stats import spearmanr

    def rho(u: Sequence[float], v: Sequence[float]) -> float:
        ok = [(a, b) for a, b in zip(u, v, strict=True) if np.isfinite(a) and np.isfinite(b)]
        if len(ok) < 3 or len({a for a, _ in ok}) < 2 or len({b for _, b in ok}) < 2:
            return float("nan")
        return float(spearmanr(*zip(*ok, strict=True)).statistic)

    each: dict[str, dict[str, float]] = {}
    for key, rows in sorted(per.items(), key=lambda kv: str(kv[0])):
        if key[1] != variant:
            continue
        xs = sorted({r["x"] for r in rows})
        src = [source_alignment(rows, x) for x in xs]
        held = [value(rows, x, SUMMARY["cos(H_held-out, H_train)"]) for x in xs]
        acc = [value(rows, x, SUMMARY["held-out acc"]) for x in xs]
        each[name_of(key)] = {
            "a_source_vs_lambda2": rho(xs, src),
            "a_heldout_vs_lambda2": rho(xs, held),
            "b_heldout_vs_accuracy": rho(held, acc),
            "n_lambda2": len(xs),
        }
    summary: dict[str, Any] = {"slices": each}
    for q in ("a_source_vs_lambda2", "a_heldout_vs_lambda2", "b_heldout_vs_accuracy"):
        v = [e[q] for e in each.values() if np.isfinite(e[q])]
        summary[q] = {
            "median": float(np.median(v)) if v else float("nan"),
            "n": len(v),
            "positive": sum(x > 0 for x in v),
        }
    return summary


def name_of(key: SliceKey) -> str:
    """``w<world> <style>``, or the style alone in a one-world study."""
    return f"w{key[0]} {key[2]}" if key[0] is not None else str(key[2])


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
    per: dict[SliceKey, list[dict[str, Any]]] = {}
    for (world, variant, style), dirs in sorted(
        slices(a.run_out, a.seed).items(), key=lambda kv: str(kv[0])
    ):
        diag = diagnose_runs(dirs, DiagnoseOptions(), x_key="lambda2")
        rows = [{**r, "world_seed": world, "variant": variant, "style": style} for r in diag.rows]
        per[world, variant, style] = rows
        every_row += rows
        where = f"world {world} " if world is not None else ""
        print(f"{where}{variant} {style}: {len(dirs)} heads [{time.perf_counter() - t0:.0f} s]")
    atomic_write_text(a.out / "diagnostics.csv", to_csv_text(every_row))
    lines, stats = [], {}
    for variant in VARIANTS:
        keys = sorted((k for k in per if k[1] == variant), key=str)
        if not keys:
            continue
        xs = sorted({r["x"] for k in keys for r in per[k]})
        what = "(world, held-out style) slices" if keys[0][0] is not None else "held-out styles"
        lines += [f"### {variant} (seed {a.seed}, means over {len(keys)} {what})", ""]
        lines += ["| λ2 | " + " | ".join(SUMMARY) + " |", "|---" * (len(SUMMARY) + 1) + "|"]
        for x in xs:
            cells = [np.nanmean([value(per[k], x, q) for k in keys]) for q in SUMMARY.values()]
            lines.append(f"| {x:g} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        cos_k, acc_k = SUMMARY["cos(H_held-out, H_train)"], SUMMARY["held-out acc"]
        pts = [(value(per[k], x, cos_k), value(per[k], x, acc_k)) for k in keys for x in xs]
        within = {}
        for k in keys:
            c = [(value(per[k], x, cos_k), value(per[k], x, acc_k)) for x in xs]
            within[name_of(k)] = float(spearmanr(*zip(*c, strict=True)).statistic)
        pooled = spearmanr([q[0] for q in pts], [q[1] for q in pts])
        mech = h4(per, variant)
        stats[variant] = {
            "within_style": within,
            "pooled": float(pooled.statistic),
            "pooled_p": float(pooled.pvalue),
            "n_pooled": len(pts),
            "h4": mech,
        }
        # per slice: the numbers the text quotes style by style (e.g. an indefinite held-out
        # Hessian, a negative trace), committed with the means
        cols = ("held-out tr H", "held-out λmax", "cos(H_held-out, H_train)", "held-out acc")
        head = "| slice | λ2 | " + " | ".join(cols) + " | source alignment |"
        lines += ["", f"Per slice ({variant}, seed {a.seed}):", "", head]
        lines.append("|---|---" + "|---" * (len(cols) + 1) + "|")
        for k in keys:
            for x in xs:
                vals = [value(per[k], x, SUMMARY[q]) for q in cols]
                vals.append(source_alignment(per[k], x))
                cells = " | ".join(f"{v:.3f}" for v in vals)
                lines.append(f"| {name_of(k)} | {x:g} | {cells} |")
        lines += [
            "",
            "Spearman ρ(alignment, held-out accuracy) across λ2: within slice "
            + ", ".join(f"{s} {r:+.2f} (n={len(xs)})" for s, r in within.items())
            + f"; pooled {pooled.statistic:+.2f} (n={len(pts)}, p={pooled.pvalue:.2f})",
            "",
            "H4, Spearman ρ across λ2 within each slice (median over slices; n slices with a "
            "defined ρ; how many > 0):",
            "",
        ]
        for q, text in (
            ("a_source_vs_lambda2", "(a) source domains' mutual alignment vs λ2"),
            ("a_heldout_vs_lambda2", "(a) held-out alignment to the sources vs λ2"),
            ("b_heldout_vs_accuracy", "(b) held-out alignment vs held-out accuracy"),
        ):
            m = mech[q]
            lines.append(f"- {text}: median {m['median']:+.2f} (n={m['n']}, {m['positive']} > 0)")
        lines.append("")
    atomic_write_text(a.out / "diagnostics.md", "\n".join(lines) + "\n")
    atomic_write_json(
        a.out / "diagnostics.json", {"spearman": stats, "seconds": time.perf_counter() - t0}
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
