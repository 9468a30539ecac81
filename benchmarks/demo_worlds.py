"""`croft demo` on several generated worlds: do its stated conclusions contradict each other?

Reads one `croft demo --world-seed K --out DIR_K` output folder per world, recomputes each
world's verdict exactly as the demo states it (:func:`croft.verdict.verdict`: both CRoFT
variants against every baseline, accuracy and the matched / textures energy metrics, the
cluster bootstrap over held-out styles, Holm over the world's family), and per comparison
puts the worlds side by side: the sign and whether its raw 95 % interval excludes zero.

Two worlds **contradict** on a comparison when both intervals exclude zero with opposite
signs; a comparison significant on one world and not on another is **not** a
contradiction and is listed as "significant on some worlds". Then the worlds are pooled
(records keep their `world_seed`) and the cluster bootstrap resamples worlds: the verdict
across worlds, with its own Holm family.

    python benchmarks/demo_worlds.py W0 W1 W2 --out docs/world-study/demo-worlds
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from croft.experiments.records import read_runs
from croft.selection import select_records
from croft.verdict import verdict, what_of

SUBJECTS = ("croft", "croft_paper")
OOD_SETS = ("matched", "textures")


def records_of(folder: Path) -> list[dict[str, Any]]:
    recs = select_records([r.as_dict() for r in read_runs(folder / "runs")])
    seeds = {r.get("world_seed") for r in recs}
    if len(seeds) != 1:
        raise SystemExit(f"{folder}: expected one world, found world seeds {sorted(seeds)}")
    return recs


def comparisons(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], Any]:
    v = verdict(records, list(SUBJECTS), ood_sets=list(OOD_SETS))
    return {(c.subject, c.other, what_of(c.key)): c for c in v.comparisons}


def state(c: Any) -> str:
    d = c.diff
    if d.low > 0:
        return "+"
    if d.high < 0:
        return "−"
    return "0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="croft demo output folders")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    per_world = {}
    pooled: list[dict[str, Any]] = []
    for folder in args.folders:
        recs = records_of(folder)
        per_world[recs[0].get("world_seed")] = comparisons(recs)
        pooled += recs
    worlds = sorted(per_world)
    keys = list(dict.fromkeys(k for w in worlds for k in per_world[w]))
    across = comparisons(pooled)
    rows, contradictions, some = [], [], []
    for k in keys:
        marks = [state(per_world[w][k]) if k in per_world[w] else "·" for w in worlds]
        means = [per_world[w][k].diff.mean if k in per_world[w] else None for w in worlds]
        signif = {m for m in marks if m in "+−"}
        if len(signif) == 2:
            contradictions.append(k)
        elif signif and "0" in marks:
            some.append(k)
        p = across.get(k)
        rows.append(
            {"comparison": f"{k[0]} vs {k[1]}", "metric": k[2], "per_world": marks,
             "means": means,
             "pooled": None if p is None else {**p.diff.to_dict(), "holm_p": p.holm_p}}
        )  # fmt: skip
    lines = [
        f"# croft demo on world seeds {', '.join(map(str, worlds))}",
        "",
        f"{len(keys)} comparisons per world. Per world: + / − the raw 95 % cluster interval "
        "(over held-out styles) above / below zero, 0 spanning zero; signs are of the "
        "difference (for FPR95 + is worse). Pooled: the cluster "
        f"bootstrap over the {len(worlds)} worlds.",
        "",
        f"- contradictions (significant with opposite signs on two worlds): {len(contradictions)}",
        f"- significant on some worlds, not on others: {len(some)}",
        f"- the same on every world: {len(keys) - len(contradictions) - len(some)}",
        "",
        "| comparison | metric | "
        + " | ".join(f"world {w}" for w in worlds)
        + " | pooled mean [95 % CI], Holm p |",
        "|---|---|" + "---|" * len(worlds) + "---|",
    ]
    for r in rows:
        p = r["pooled"]
        cells = [f"{m} ({x:+.1f})" if x is not None else m for m, x in zip(r["per_world"],
                 r["means"], strict=True)]  # fmt: skip
        pooled_text = "-" if p is None else (
            f"{p['mean']:+.1f} [{p['low']:+.1f}, {p['high']:+.1f}], {p['holm_p']:.2f}"
        )  # fmt: skip
        lines.append(f"| {r['comparison']} | {r['metric']} | " + " | ".join(cells)
                     + f" | {pooled_text} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo_worlds.md").write_text(text, encoding="utf-8")
    doc = {"worlds": worlds, "contradictions": [list(k) for k in contradictions],
           "significant_on_some": [list(k) for k in some], "rows": rows}  # fmt: skip
    (args.out / "demo_worlds.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
