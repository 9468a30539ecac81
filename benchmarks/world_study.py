"""The world study's analysis (docs/world-study.md, "Analysis plan") from a `croft run` folder.

Reads the run folder of ``configs/world_study_v4.yaml``, ``configs/world_study_v3.yaml``
or world v2's ``configs/world_study.yaml`` (through ``croft.experiments.records``),
keeps one grid point per (world, method, held-out style, seed) by source-validation
accuracy (ties: validation NLL, then the smaller lambda, then the label), and writes:

* the main table: means over the (style, seed) pairs of source-validation accuracy,
  held-out-style accuracy, sketch accuracy, style-matched energy AUROC and FPR95 with all
  ID test images positive and with correctly classified ones only (the authors'), the
  other OOD sets and the other scores;
* the comparisons: paired bootstrap 95 % intervals (10,000 resamples) of every "CRoFT vs
  X" difference in the plan, and H1's "CE adapter vs zero-shot": over pairs i.i.d. on one
  world (as v2 and v3 were reported), the cluster bootstrap over worlds on several (v4);
* what the selection chose (lr, lambda1, lambda2, temperature; selected epochs, kept init);
* the lambda2 sweep: for each lambda2 of a CRoFT grid, the rest of the grid chosen on
  validation per pair, and its outcome against lambda2 = 0;
* the accuracy-vs-AUROC frontier figure (means with 95 % bootstrap intervals);
* an exploratory table, outside the analysis plan (added after the v3 study had started,
  before any of its results were read): how often each head predicts the class whose
  shortcut colour a held-out test image carries.

    python benchmarks/world_study.py RUN_OUT --out docs/world-study
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from world_study_shortcut import shortcut_following

CROFT_ROWS = ("croft", "croft_paper", "croft_generator_only", "croft_penalty_only")
ORDER = (
    "zeroshot",
    "linear_probe",
    "clip_adapter",
    "tip_adapter",
    "tip_adapter_f",
    "coop",
    "dplclip",
    "wise",
    "wise_a05",
    "ce_adapter",
    *CROFT_ROWS,
)
Pair = tuple[Any, str, int]  # (world seed or None, held-out style, seed)
Metric = Callable[[Mapping[str, Any]], float]


def _det(ood: str, score: str, metric: str) -> Metric:
    return lambda r: 100.0 * r["detection"][ood][score][metric]


def _correct_only(ood: str, metric: str) -> Metric:
    """Energy ``metric`` on ``ood`` with only correctly classified ID test images positive."""
    from croft.metrics import auroc, fpr_at_tpr

    def get(r: Mapping[str, Any]) -> float:
        z = r["_scores"]
        keep = z["id/pred"] == z["id/labels"]
        idx, ood_s = z["id/energy"][keep], z[f"ood/{ood}/energy"]
        if metric == "auroc":
            return 100.0 * auroc(idx, ood_s)
        return 100.0 * fpr_at_tpr(idx, ood_s, 0.95)

    return get


METRICS: dict[str, Metric] = {
    "source val": lambda r: 100.0 * r["val_accuracy"],
    "held-out acc": lambda r: 100.0 * r["accuracy"],
    "sketch acc": lambda r: 100.0 * r["shifted_accuracy"]["sketch"],
    "matched AUROC": _det("matched", "energy", "auroc"),
    "matched FPR95": _det("matched", "energy", "fpr95_id_pos"),
    "matched FPR95 (OOD pos)": _det("matched", "energy", "fpr95_ood_pos"),
    "matched AUROC (correct)": _correct_only("matched", "auroc"),
    "matched FPR95 (correct)": _correct_only("matched", "fpr95"),
    "textures AUROC": _det("textures", "energy", "auroc"),
    "pooled AUROC": _det("pooled", "energy", "auroc"),
}
SCORE_METRICS = {
    s: _det("matched", s, "auroc") for s in ("energy", "mcm", "msp", "max_logit", "knn")
}
COMPARED = (
    "held-out acc",
    "matched AUROC",
    "matched FPR95",
    "matched AUROC (correct)",
    "matched FPR95 (OOD pos)",
    "textures AUROC",
    "sketch acc",
)
BY_STYLE = (("croft", "ce_adapter"), ("croft_paper", "ce_adapter"), ("ce_adapter", "zeroshot"))


def load(out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every grid point, the selected point per (label, style, seed)) with scores attached."""
    from croft.experiments.records import read_runs
    from croft.report import select_records

    every = [r.as_dict() for r in read_runs(out)]
    chosen = select_records(every)
    for r in chosen:
        r["_scores"] = _scores(r)
    return every, chosen


def _scores(r: Mapping[str, Any]) -> dict[str, np.ndarray]:
    from croft.experiments.records import load_scores

    return load_scores(Path(r["run_dir"]) / "scores.npz")


def by_pair(records: Sequence[Mapping[str, Any]], label: str, metric: Metric) -> dict[Pair, float]:
    from croft.verdict import pair_key

    return {pair_key(r): metric(r) for r in records if r["label"] == label}


def paired(a: Mapping[Pair, float], b: Mapping[Pair, float]) -> Any:  # noqa: ANN401
    """The paired interval of ``a - b``: the cluster bootstrap over worlds when the pairs
    span several (the library's top factor, :func:`croft.verdict.cluster_factor`); on one
    world i.i.d. over pairs, as v2 and v3 were reported."""
    from croft.stats import cluster_bootstrap, paired_bootstrap
    from croft.verdict import cluster_factor

    name, cluster = cluster_factor([{"world_seed": k[0]} for k in a])
    if name == "world seeds":
        return cluster_bootstrap(a, b, cluster)
    return paired_bootstrap(a, b)


def mean_ci(
    values: Sequence[float], n_boot: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap 95 % interval of the mean."""
    v = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    low, high = np.quantile(v[idx].mean(axis=1), [0.025, 0.975])
    return float(v.mean()), float(low), float(high)


def labels_of(records: Sequence[Mapping[str, Any]]) -> list[str]:
    present = {r["label"] for r in records}
    return [x for x in ORDER if x in present] + sorted(present - set(ORDER))


def main_table(chosen: Sequence[Mapping[str, Any]], metrics: Mapping[str, Metric]) -> str:
    labels = labels_of(chosen)
    lines = ["| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for lab in labels:
        cells = [f"{np.mean(list(by_pair(chosen, lab, m).values())):.1f}" for m in metrics.values()]
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_baseline(chosen: Sequence[Mapping[str, Any]]) -> str:
    """The baseline with the highest mean source-validation accuracy (never test data):
    :func:`croft.verdict.best_baseline`, zero-shot and the CE adapter compared apart."""
    from croft.verdict import best_baseline as best

    found = best(chosen, exclude=("ce_adapter", "zeroshot"))
    if found is None:
        raise SystemExit("no baseline with a source-validation accuracy in this run folder")
    return found


def by_style_table(chosen: Sequence[Mapping[str, Any]]) -> str:
    """Mean paired differences per held-out style (over its seeds) for :data:`BY_STYLE`."""
    styles = sorted({r["test_domain"] for r in chosen})
    lines = ["| subject − reference | metric | " + " | ".join(styles) + " |"]
    lines.append("|---|---|" + "---|" * len(styles))
    for a, b in BY_STYLE:
        for name in ("held-out acc", "matched AUROC"):
            xa, xb = by_pair(chosen, a, METRICS[name]), by_pair(chosen, b, METRICS[name])
            cells = [np.mean([xa[k] - xb[k] for k in xa if k[1] == s]) for s in styles]
            lines.append(f"| {a} − {b} | {name} | " + " | ".join(f"{c:+.1f}" for c in cells) + " |")
    return "\n".join(lines)


def comparisons(chosen: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    best = best_baseline(chosen)
    plan = [("ce_adapter", "zeroshot")]  # H1
    for subject in ("croft", "croft_paper"):
        plan += [(subject, "ce_adapter"), (subject, "zeroshot"), (subject, best)]
    plan += [(a, "croft") for a in ("croft_generator_only", "croft_penalty_only")]
    plan += [(a, "ce_adapter") for a in ("croft_generator_only", "croft_penalty_only")]
    rows, out = [], []
    for a, b in plan:
        for name in COMPARED:
            d = paired(by_pair(chosen, a, METRICS[name]), by_pair(chosen, b, METRICS[name]))
            up = "fpr" not in name.lower()
            word = "no significant difference"
            if d.significant:
                word = "better" if (d.mean > 0) == up else "worse"
            out.append(
                {"subject": a, "reference": b, "metric": name, **d.to_dict(), "verdict": word}
            )
            rows.append(
                f"| {a} | {b} | {name} | {d.mean:+.1f} | [{d.low:+.1f}, {d.high:+.1f}] | {word} |"
            )
    head = [
        "| subject | reference | metric | mean diff | 95 % CI | verdict |",
        "|---|---|---|---|---|---|",
    ]
    return f"best baseline (by mean source-validation accuracy): {best}\n\n" + "\n".join(
        head + rows
    ), out


def selection_table(chosen: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| method | lr | lambda1 | lambda2 | temperature | selected epoch (min–max) | kept init |",
        "|---|---|---|---|---|---|---|",
    ]
    for lab in labels_of(chosen):
        rs = [r for r in chosen if r["label"] == lab]
        sel = [r.get("selection") or {} for r in rs]
        if not any("kept_init" in s for s in sel):
            continue
        opt = [r.get("options", {}) for r in rs]

        def count(key: str, opt: list[dict[str, Any]] = opt) -> str:
            c = Counter(o.get(key) for o in opt)
            return ", ".join(f"{k:g}×{v}" for k, v in sorted(c.items()) if k is not None) or "–"

        eps = [s["selected_epoch"] for s in sel if "selected_epoch" in s]
        kept = sum(bool(s.get("kept_init")) for s in sel)
        lines.append(
            f"| {lab} | {count('lr')} | {count('lambda1')} | {count('lambda2')} | "
            f"{count('energy_temperature')} | {min(eps)}–{max(eps)} | {kept} of {len(rs)} |"
        )
    return "\n".join(lines)


def lambda2_sweep(every: Sequence[Mapping[str, Any]], group: str) -> tuple[str, dict[str, Any]]:
    """Per lambda2 of ``group``'s grid: the other keys chosen on validation per pair."""
    from croft.report import select_records

    members = [r for r in every if r["label"].split("[", 1)[0] == group]
    values = sorted({float(r["options"]["lambda2"]) for r in members})
    per: dict[float, list[dict[str, Any]]] = {}
    for v in values:
        sub = [
            dict(r, label=r["label"].replace(group, f"{group}@{v:g}", 1))
            for r in members
            if float(r["options"]["lambda2"]) == v
        ]
        per[v] = select_records(sub)
    lines = [
        "| lambda2 | source val | held-out acc | matched AUROC | held-out acc − λ2=0 [95 % CI] "
        "| matched AUROC − λ2=0 [95 % CI] |",
        "|---|---|---|---|---|---|",
    ]
    raw: dict[str, Any] = {}
    for v in values:
        lab = f"{group}@{v:g}"
        cells, diffs = [], []
        for name in ("source val", "held-out acc", "matched AUROC"):
            cells.append(f"{np.mean(list(by_pair(per[v], lab, METRICS[name]).values())):.1f}")
        for name in ("held-out acc", "matched AUROC"):
            d = paired(
                by_pair(per[v], lab, METRICS[name]),
                by_pair(per[values[0]], f"{group}@{values[0]:g}", METRICS[name]),
            )
            diffs.append(f"{d.mean:+.1f} [{d.low:+.1f}, {d.high:+.1f}]")
        raw[f"{v:g}"] = {"means": [float(c) for c in cells], "diffs": diffs}
        lines.append(f"| {v:g} | " + " | ".join(cells + diffs) + " |")
    return "\n".join(lines), raw


def frontier(
    chosen: Sequence[Mapping[str, Any]],
    path: Path,
    sweeps: Mapping[str, Mapping[str, Any]],
    world: str = "World v2",
) -> None:
    """Held-out accuracy vs style-matched energy AUROC, one point per method with 95 % CIs,
    and each CRoFT variant's lambda2 sweep (means; the other keys chosen on validation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from croft.plotstyle import method_styles

    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    styles = method_styles(labels_of(chosen))  # the report's colour and marker per method
    for lab in labels_of(chosen):
        x = mean_ci(list(by_pair(chosen, lab, METRICS["held-out acc"]).values()))
        y = mean_ci(list(by_pair(chosen, lab, METRICS["matched AUROC"]).values()))
        ax.errorbar(
            x[0],
            y[0],
            xerr=[[x[0] - x[1]], [x[2] - x[0]]],
            yerr=[[y[0] - y[1]], [y[2] - y[0]]],
            fmt=styles[lab].marker,
            color=styles[lab].color,
            label=lab,
            capsize=2,
        )
    ax.set_xlabel("held-out-style accuracy (%)")
    ax.set_ylabel("style-matched open-set AUROC, energy (%)")
    styles = {r["test_domain"] for r in chosen}
    seeds = {r["seed"] for r in chosen}
    worlds = {r.get("world_seed") for r in chosen}
    many = f"{len(worlds)} worlds × " if len(worlds) > 1 else ""
    ax.set_title(
        f"{world}, {many}{len(styles)} held-out styles × {len(seeds)} seeds: "
        "means with 95 % bootstrap CIs"
    )
    ax.grid(alpha=0.3)
    for (group, raw), style in zip(sweeps.items(), ("-", "--"), strict=False):
        xs = [m["means"][1] for m in raw.values()]
        ys = [m["means"][2] for m in raw.values()]
        ax.plot(xs, ys, style, color="0.35", lw=1, label=f"{group}: λ2 sweep")
        for lam, x, y in zip(raw, xs, ys, strict=True):
            ax.annotate(f"λ2={lam}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(path.with_suffix(f".{ext}"), dpi=150)
    plt.close(fig)


def main() -> None:
    from croft.fileio import atomic_write_json, atomic_write_text

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "run_out", type=Path, help="the `croft run configs/world_study.yaml` --out folder"
    )
    p.add_argument(
        "--out", type=Path, required=True, help="folder for results.md/json and the figure"
    )
    p.add_argument(
        "--world",
        default=None,
        help="the world's name in the figure title (default: World vN from the world's manifest)",
    )
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.world is None:
        import json

        root = Path(json.loads((a.run_out / "config.resolved.json").read_text())["data"]["root"])
        a.world = f"World v{json.loads((root / 'world.json').read_text())['croft_world']}"
    every, chosen = load(a.run_out)
    n_pairs = len({(r.get("world_seed"), r["test_domain"], r["seed"]) for r in chosen})
    n_worlds = len({r.get("world_seed") for r in chosen})
    n_seeds = len({r["seed"] for r in chosen})
    comp_md, comp = comparisons(chosen)
    sweeps = {g: lambda2_sweep(every, g) for g in ("croft", "croft_paper", "croft_penalty_only")}
    parts = [
        f"# World study results ({n_pairs} (world, held-out style, seed) pairs over {n_worlds} "
        f"world(s), {len(every)} runs)",
        "## Main table (means over pairs, %)",
        main_table(chosen, METRICS),
        "## Style-matched AUROC by score (means, %)",
        main_table(chosen, SCORE_METRICS),
        "## Comparisons (paired bootstrap, 10,000 resamples: "
        + ("the cluster bootstrap over worlds)" if n_worlds > 1 else "pairs i.i.d.)"),
        comp_md,
        f"## Differences by held-out style (means over {n_seeds} seeds, points)",
        by_style_table(chosen),
        "## Exploratory: does the head follow the shortcut on the target? (not in the plan)",
        shortcut_following(chosen, a.run_out, labels_of(chosen))
        if n_worlds == 1
        else "(not computed for several worlds: it reads one world's images)",
        "## What the selection chose",
        selection_table(chosen),
        *[x for g, (md, _) in sweeps.items() for x in (f"## lambda2 sweep: {g}", md)],
    ]
    atomic_write_text(a.out / "results.md", "\n\n".join(parts) + "\n")
    atomic_write_json(
        a.out / "results.json",
        {"comparisons": comp, "sweeps": {g: s[1] for g, s in sweeps.items()}},
    )
    sweeps_drawn = {g: sweeps[g][1] for g in ("croft", "croft_paper")}
    frontier(chosen, a.out / "frontier", sweeps_drawn, world=a.world)
    print((a.out / "results.md").read_text())


if __name__ == "__main__":
    main()
