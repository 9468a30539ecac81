"""A λ2 sweep of CRoFT on simulated features, explained by ``croft diagnose``.

    python benchmarks/diagnose_sweep.py [--variant paper] [--equal-rows] [--seeds 1 2 3]

Features come from :mod:`croft.simulate` (synthetic, 64-d, 7 classes, 4 domains; domain 0
held out). For every seed and λ2 the head of the LAST epoch is kept (so a large λ2 is not
hidden behind an early, identity-like epoch), and its diagnostics are measured on the
three training domains, the held-out domain and its unseen-class set. Prints, per λ2, the
means over seeds of: energy-gradient norm (train, held-out, unseen), Hessian trace and
top eigenvalue (mean over training domains), mean pairwise cosine of the training-domain
Hessians, the held-out domain's cosine to them, held-out accuracy and ‖W_i − I‖/√D.
Writes the pooled table and plots to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from croft.diagnose import DiagnoseOptions, diagnose_heads, write_diagnostics
from croft.methods import fit
from croft.simulate import SimConfig, Simulator

LAMBDA2 = (0.0, 1.0, 10.0, 100.0, 1000.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/diagnose_sweep")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--probes", type=int, default=32)
    ap.add_argument("--variant", default="paper", choices=("paper", "official"))
    ap.add_argument("--equal-rows", action="store_true", help="equal-size Hessian groups")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        task = Simulator(SimConfig()).lodo(0, seed=seed)
        heads = {}
        for l2 in LAMBDA2:
            res = fit(
                "croft",
                task.train,
                task.val,
                variant=args.variant,
                lambda2=l2,
                epochs=args.epochs,
                lr=args.lr,
                select_epoch="last",
                seed=seed,
            )
            heads[f"l2={l2:g}/seed{seed}"] = res.head
        sets = {"heldout": task.test, "unseen": task.ood}
        opts = DiagnoseOptions(probes=args.probes, seed=seed, equal_rows=args.equal_rows)
        rows += diagnose_heads(heads, task.train, sets, opts)[0]
    write_diagnostics(rows, args.out, {"benchmark": "diagnose_sweep", **vars(args)})
    print(f"{len(args.seeds)} seeds x {len(LAMBDA2)} lambda2 in {time.perf_counter() - t0:.0f} s")
    summarise(rows)


def summarise(rows: list[dict]) -> None:
    acc: dict[tuple[float, str], list[float]] = defaultdict(list)
    for r in rows:
        g, q, o = r["group"], r["quantity"], r["other"]
        key = None
        if q == "energy_grad_norm_mean" and g in ("train", "heldout", "unseen"):
            key = f"g_{g}"
        elif q == "official_penalty" and g == "train":
            key = "pen_official_train"
        elif q in ("hessian_trace", "hessian_top_eig") and g.startswith("train:"):
            key = f"{q}_train"
        elif q == "hessian_cosine" and g.startswith("train:") and o.startswith("train:"):
            key = "cos_train_pairs"
        elif q == "hessian_cosine_to_train" and g == "heldout":
            key = "cos_heldout_train"
        elif q == "hessian_distance" and g.startswith("train:") and o.startswith("train:"):
            key = "dist_train_pairs"
        elif q == "hessian_cosine_split_half" and g.startswith("train:"):
            key = "cos_split_half_train"
        elif q == "accuracy" and g == "heldout":
            key = "acc_heldout"
        elif q == "w_minus_i" and g == "fc_i":
            key = "w_i"
        if key:
            acc[(r["x"], key)].append(r["value"])
    keys = sorted({k for _, k in acc})
    print("lambda2 " + " ".join(f"{k:>18}" for k in keys))
    for x in sorted({x for x, _ in acc}):
        vals = [statistics.fmean(acc[(x, k)]) if acc[(x, k)] else float("nan") for k in keys]
        print(f"{x:7g} " + " ".join(f"{v:18.4g}" for v in vals))


if __name__ == "__main__":
    main()
