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


def make_set(classes: int, shots: int, dim: int, views: int, seed: int = 0) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    return FeatureSet(
        features=torch.randn(classes * shots, views, dim, generator=g),
        labels=torch.arange(classes).repeat_interleave(shots),
        class_names=[f"c{i}" for i in range(classes)],
        text_features=torch.randn(classes, dim, generator=g),
        logit_scale=100.0,
    )


def time_per_epoch(train: FeatureSet, method: str, epochs: int, repeats: int, device: str, **kw):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        M.fit(method, train, None, device=device, epochs=epochs, selection="last", **kw)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / epochs)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {args.device}"
    )
    shapes = {
        "setup2 (C=7, 16-shot, D=512)": (make_set(7, 16, 512, 8), {}),
        "setup1-like (C=400, 4-shot, D=512)": (
            make_set(400, 4, 512, 2),
            {"energy_reduction": "setup1", "lambda1": 5.0, "lambda2": 5.0},
        ),
    }
    rows = []
    for shape, (train, croft_kw) in shapes.items():
        ce = time_per_epoch(train, "ce_adapter", args.epochs, args.repeats, args.device)
        rows.append((shape, "ce_adapter", ce, 1.0))
        for label, kw in [
            ("croft official gen_step=1", {"gen_step": 1}),
            ("croft official gen_step=5", {"gen_step": 5}),
            ("croft paper", {"variant": "paper", "lambda2": 1.0}),
        ]:
            t = time_per_epoch(
                train, "croft", args.epochs, args.repeats, args.device, **{**croft_kw, **kw}
            )
            rows.append((shape, label, t, t / ce))
    print(f"{'shape':<36} {'method':<28} {'s/epoch':>9} {'x CE':>6}")
    for shape, label, t, ratio in rows:
        print(f"{shape:<36} {label:<28} {t:>9.4f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
