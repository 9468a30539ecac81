"""CRoFT's fit time per epoch against a CE-only adapter on the same cached features.

Target (issue 2): ``official`` at most 3x the CE-only adapter per epoch.

    python benchmarks/fit_speed.py [--repeats 3] [--device cpu]

Shapes: Setup-II (7 classes x 16 shots, D=512, batch 32: 3 batches/epoch) and a
Setup-I-like shape (400 classes x 4 shots, D=512: 50 batches/epoch). Features are random
(timing does not depend on their values). Prints seconds per epoch (median of repeats)
and the ratio to CE-only measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

import croft.methods as M
from croft.features import FeatureSet
from croft.simulate import random_features as make_set


def fit_seconds(train: FeatureSet, method: str, epochs: int, device: str, **kw) -> float:
    t0 = time.perf_counter()
    M.fit(method, train, None, device=device, epochs=epochs, selection="last", **kw)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {args.device}"
    )
    setup1 = {"energy_reduction": "setup1", "lambda1": 5.0, "lambda2": 5.0}
    shapes = {
        "setup2 (C=7, 16-shot, D=512)": (make_set(7, 16, 512, 8), {}),
        "setup1-like (C=400, 4-shot, D=512)": (make_set(400, 4, 512, 2), setup1),
    }
    variants = [
        ("croft official gen_step=1", {"gen_step": 1}),
        ("croft official gen_step=5", {"gen_step": 5}),
        ("croft paper", {"variant": "paper", "lambda2": 1.0}),
    ]
    print(f"{'shape':<36} {'method':<28} {'s/epoch':>9} {'x CE':>6}")
    for shape, (train, croft_kw) in shapes.items():
        fit_seconds(train, "ce_adapter", 1, args.device)  # warm-up
        fit_seconds(train, "croft", 1, args.device, **croft_kw)
        times: dict[str, list[float]] = {"ce_adapter": []} | {v[0]: [] for v in variants}
        for _ in range(args.repeats):  # interleaved, so that both see the same machine load
            times["ce_adapter"].append(fit_seconds(train, "ce_adapter", args.epochs, args.device))
            for label, kw in variants:
                t = fit_seconds(train, "croft", args.epochs, args.device, **{**croft_kw, **kw})
                times[label].append(t)
        ce = statistics.median(times["ce_adapter"])
        for label, ts in times.items():
            t = statistics.median(ts)
            print(f"{shape:<36} {label:<28} {t:>9.4f} {t / ce:>6.2f}")


if __name__ == "__main__":
    main()
