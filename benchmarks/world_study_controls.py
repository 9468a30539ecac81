"""The attribution controls of H3 (docs/world-study.md, "Controls on world v3"; v4's
family adds H1 and H2: ``--family v4``), from a `croft run` folder of a world study
config that holds the control rows.

Keeps one grid point per (world, method, held-out style, seed) on source validation (the
report's rule, :func:`croft.selection.select_records`), then for each planned comparison
(subject - reference, percentage points, paired on (world seed, held-out style, seed)) on
held-out accuracy and style-matched energy AUROC: the mean, the cluster-bootstrap 95 %
interval (:func:`croft.verdict.compare`; the library's default: worlds where there are
several, else held-out styles, widened for few clusters) with its p-value, the Holm-
adjusted p over the whole family, and the i.i.d. pair interval beside it (descriptive,
never deciding). Also: the reproduction check of the rows the study already reported, and
what the selection chose for every control row.

    python benchmarks/world_study_controls.py RUN_OUT --out docs/world-study/v3/controls
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from croft.selection import select_records
from croft.stats import holm
from croft.verdict import compare

#: (name, subject, reference, what it asks), in the order of the pre-registration: v3's
#: controls (H3 and C0-C4, 12 with both metrics) and v4's family of 16 (H1, H2 before them)
V4_FIRST = (
    ("H1", "ce_adapter", "zeroshot", "fine-tuning over zero-shot (the premise)"),
    ("H2", "croft", "ce_adapter", "CRoFT official over CE (the primary on accuracy)"),
)
COMPARISONS = (
    ("H3", "croft_paper", "ce_adapter", "the paper variant over CE (as reported on v3)"),
    ("C0", "ce_adapter_residual", "ce_adapter", "what the parametrisation alone buys"),
    ("C1", "croft_paper", "ce_adapter_residual", "CRoFT's terms at the same parametrisation"),
    ("C2", "croft_paper", "croft_paper_no_wcf", "covariate features of any kind"),
    ("C3", "croft_paper_worst_case", "croft_paper_no_wcf", "worst-case features (lambda1 > 0)"),
    ("C4", "croft_paper_l2_rescaled", "croft_paper", "the penalty rescaled per temperature"),
)
METRICS = (
    ("held-out acc", ("accuracy", "", "")),
    ("matched AUROC", ("auroc", "matched", "energy")),
)
CONTROL_ROWS = (
    "zeroshot",
    "ce_adapter",
    "croft",
    "ce_adapter_residual",
    "croft_paper",
    "croft_paper_no_wcf",
    "croft_paper_worst_case",
    "croft_paper_l2_rescaled",
)
OPTIONS = ("lr", "lambda1", "lambda2", "energy_temperature")


def load(out: Path) -> list[dict[str, Any]]:
    from croft.experiments.records import read_runs

    return select_records([r.as_dict() for r in read_runs(out)])


def means(chosen: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per row: mean held-out accuracy and matched AUROC (%) and the number of pairs."""
    out: dict[str, dict[str, float]] = {}
    for row in CONTROL_ROWS:
        rs = [r for r in chosen if r["label"] == row]
        if not rs:
            continue
        acc = [100 * r["accuracy"] for r in rs]
        auroc = [100 * r["detection"]["matched"]["energy"]["auroc"] for r in rs]
        out[row] = {"n": len(rs), "accuracy": sum(acc) / len(acc), "auroc": sum(auroc) / len(rs)}
    return out


def family(
    chosen: Sequence[Mapping[str, Any]], comparisons: Sequence[tuple[str, ...]] = COMPARISONS
) -> list[dict[str, Any]]:
    """Every planned comparison x metric that has pairs, Holm-adjusted over the family."""
    rows = []
    for name, a, b, what in comparisons:
        for metric, key in METRICS:
            d = compare(chosen, a, b, key)
            if d is None:
                continue
            iid = compare(chosen, a, b, key, bootstrap="iid")
            rows.append(
                {"name": name, "a": a, "b": b, "what": what, "metric": metric,
                 "cluster": d.to_dict(), "iid": None if iid is None else iid.to_dict()}
            )  # fmt: skip
    adjusted = holm([r["cluster"]["p"] for r in rows])
    for r, p in zip(rows, adjusted, strict=True):
        r["holm_p"] = p
    return rows


def per_world(
    chosen: Sequence[Mapping[str, Any]], comparisons: Sequence[tuple[str, ...]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per comparison and metric, each world's own mean and interval (clusters: its held-out
    styles) and whether the sign agrees in every world (descriptive; {} for one world)."""
    worlds = sorted({r.get("world_seed") for r in chosen}, key=str)
    if len(worlds) < 2:
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, a, b, _ in comparisons:
        for metric, key in METRICS:
            each = {}
            for w in worlds:
                d = compare([r for r in chosen if r.get("world_seed") == w], a, b, key)
                if d is not None:
                    each[str(w)] = d.to_dict()
            if each:
                signs = {(v["mean"] > 0) - (v["mean"] < 0) for v in each.values()}
                out.setdefault(name, {})[metric] = {"worlds": each, "same_sign": len(signs) == 1}
    return out


def per_style(
    chosen: Sequence[Mapping[str, Any]], comparisons: Sequence[tuple[str, ...]] = COMPARISONS
) -> dict[str, dict[str, dict[str, float]]]:
    """Per comparison and metric, the mean difference per held-out style (descriptive)."""
    from croft.verdict import metric_of, pair_key

    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, a, b, _ in comparisons:
        for metric, key in METRICS:
            get = metric_of(key)
            xa = {pair_key(r): get(r) for r in chosen if r["label"] == a}
            xb = {pair_key(r): get(r) for r in chosen if r["label"] == b}
            diffs: dict[str, list[float]] = {}
            for k, v in xa.items():
                if v is not None and xb.get(k) is not None:
                    diffs.setdefault(str(k[1]), []).append(100 * (v - xb[k]))
            if diffs:
                out.setdefault(name, {})[metric] = {
                    s: sum(d) / len(d) for s, d in sorted(diffs.items())
                }
    return out


def chosen_options(chosen: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """Per control row, how often each grid value of lr / lambda1 / lambda2 / temperature
    was selected."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for row in CONTROL_ROWS:
        rs = [r for r in chosen if r["label"] == row]
        for opt in OPTIONS:
            c = Counter(str((r.get("options") or {}).get(opt)) for r in rs)
            c.pop("None", None)
            if c:
                out.setdefault(row, {})[opt] = dict(sorted(c.items()))
    return out


def markdown(
    m: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    opts: Mapping,
    styles: Mapping,
    worlds: Mapping | None = None,
) -> str:
    lines = ["## Rows (means over the pairs, %)", "", "| row | n | held-out acc | matched AUROC |",
             "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {k} | {v['n']} | {v['accuracy']:.1f} | {v['auroc']:.1f} |" for k, v in m.items()]
    lines += ["", f"## Comparisons (a family of {len(rows)}; cluster interval decides, i.i.d. "
              "beside)", "", "| | a − b | metric | mean | cluster 95 % CI | p | Holm p | i.i.d. "
              "95 % CI | verdict |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        c, i = r["cluster"], r["iid"] or {}
        verdict = "above zero" if c["low"] > 0 else "below zero" if c["high"] < 0 else "n.s."
        lines.append(
            f"| {r['name']} | {r['a']} − {r['b']} | {r['metric']} | {c['mean']:+.1f} | "
            f"[{c['low']:+.1f}, {c['high']:+.1f}] ({c['clusters']} clusters) | {c['p']:.3g} | "
            f"{r['holm_p']:.3g} | [{i.get('low', float('nan')):+.1f}, "
            f"{i.get('high', float('nan')):+.1f}] | {verdict} |"
        )
    if worlds:
        lines += ["", "## Per world (its own mean and interval, clusters = its held-out styles; "
                  "descriptive)", ""]  # fmt: skip
        for name, per in worlds.items():
            for metric, v in per.items():
                cells = ", ".join(
                    f"w{w} {d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]"
                    for w, d in v["worlds"].items()
                )
                same = "same sign in every world" if v["same_sign"] else "signs differ"
                lines.append(f"- {name} {metric}: {cells} ({same})")
    lines += ["", "## Per held-out style (mean difference, points; descriptive)", ""]
    for name, per in styles.items():
        for metric, vals in per.items():
            lines.append(
                f"- {name} {metric}: " + ", ".join(f"{s} {v:+.1f}" for s, v in vals.items())
            )
    lines += ["", "## What the selection chose (pairs per grid value)", ""]
    for row, per in opts.items():
        lines.append(f"- {row}: " + "; ".join(f"{k} {v}" for k, v in per.items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_out", type=Path, help="the croft run output folder")
    ap.add_argument("--out", type=Path, required=True, help="folder for controls.md/.json")
    ap.add_argument(
        "--family",
        choices=("v3", "v4"),
        default="v3",
        help="v3: the v3 controls (H3, C0-C4); v4: v4's family of 16 (H1, H2, H3, C0-C4)",
    )
    args = ap.parse_args()
    chosen = load(args.run_out)
    comps = COMPARISONS if args.family == "v3" else V4_FIRST + COMPARISONS
    m, opts = means(chosen), chosen_options(chosen)
    rows, styles, worlds = family(chosen, comps), per_style(chosen, comps), per_world(chosen, comps)
    text = markdown(m, rows, opts, styles, worlds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "controls.md").write_text(text, encoding="utf-8")
    doc = {"means": m, "comparisons": rows, "by_world": worlds, "by_style": styles,
           "selected": opts}  # fmt: skip
    (args.out / "controls.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
