"""Gates over several worlds (docs/world-study.md, "World v4"): G1-G5 per world and G6 on
the analysis interval, from one ``benchmarks/world_gates.py`` output per world seed.

G6 here is the half-width of the cluster-bootstrap interval (``croft.stats``, clusters =
world seeds, 10,000 resamples) of CE − zero-shot held-out accuracy over every world's
pairs; each world's own G6 (its paired interval, from its file) is listed beside it.

    python benchmarks/world_gates_pool.py w0.json w1.json w2.json --out pooled.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

GATES = ("G1", "G2", "G3", "G4", "G5")


def pool(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-world gates, the pooled G6 and the CE cue gap per source style per world."""
    from croft.stats import cluster_bootstrap, paired_bootstrap

    seeds = [r["world_seed"] for r in results]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"one file per world seed, got world seeds {seeds}")
    ce, zs = {}, {}
    for r in results:
        for rec in r["records"]:
            key = (r["world_seed"], rec["style"], rec["seed"])
            ce[key] = 100.0 * rec["ce_adapter"]["test_acc"]
            zs[key] = 100.0 * rec["zeroshot"]["test_acc"]
    cl = cluster_bootstrap(ce, zs, lambda k: k[0])
    iid = paired_bootstrap(ce, zs)
    per_world = {
        str(r["world_seed"]): {
            **{g: bool(r["gates"][g]["pass"]) for g in GATES},
            "G6": r["gates"]["G6"],
            "G4_ce_gap_by_source_style": r["gates"]["G4"].get("ce_gap_by_source_style"),
        }
        for r in results
    }
    half = (cl.high - cl.low) / 2
    return {
        "world_seeds": seeds,
        "per_world": per_world,
        "G1-G5 pass on every world": all(all(w[g] for g in GATES) for w in per_world.values()),
        "G6": {
            "ce_minus_zeroshot_heldout_acc": cl.mean,
            "cluster_interval": [cl.low, cl.high],
            "half_width": half,
            "clusters": cl.clusters,
            "pairs": cl.n,
            "iid_interval (not the gate)": [iid.low, iid.high],
            "pass": half <= 2.0,
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", type=Path, nargs="+", help="world_gates.py outputs, one per world")
    p.add_argument("--out", type=Path, default=Path("world_gates_pooled.json"))
    a = p.parse_args()
    out = pool([json.loads(f.read_text()) for f in a.files])
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
