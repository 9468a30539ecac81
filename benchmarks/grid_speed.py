"""Whole grids in one program: batched against sequential fits (issue 11).

    python benchmarks/grid_speed.py [--quick] [--json OUT] [--device cpu] [--threads 1]
    python benchmarks/grid_speed.py --memory      # peak bytes per member (member_bytes)

Shapes (random features: timing does not depend on their values):

* Setup-II: C = 7, 16 shots x 3 source domains = 336 rows, D = 512, batch 32 (10 batches
  per epoch), 30 epochs, 8 views; the paper's grid of 60 official fits (gen_step = 1):
  4 held-out domains (4 training sets) x 3 seeds x 5 lambda2. Sequential time is measured
  on ``--seq-fits`` fits and scaled to 60 (each fit is independent, so this is exact up to
  noise); the batched grid runs in full.
* per member-epoch: official (gen_step = 1) against the CE-only adapter, both batched over
  the same 60 members.
* Setup-I-like: C = 400, 4 shots (1,600 rows, 50 batches per epoch), D = 512, 2 views,
  setup1 penalty: 8 members, batched against sequential over ``--setup1-epochs`` epochs.
* contention: the batched grid again beside one busy competing torch process (a matmul
  loop with torch's default threads), against the quiet run.
* threads: the batched grid epoch time with 1 and 2 torch threads.

``--quick`` shrinks epochs and members for a smoke run; ``--epochs`` sets the Setup-II
epochs (the per-member-epoch figures do not depend on it). Wall seconds and, under
``cpu_seconds``, process CPU seconds are reported: with one thread on a shared machine the
CPU seconds estimate what a quiet machine's wall time would be. ``--json OUT`` writes every figure,
including ``grid_seconds``, ``speedup_vs_sequential`` and
``official_vs_ce_per_member_epoch``, plus the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import time

import torch

import croft.methods as M
from croft.methods.batched import fit_iter, fit_many
from croft.simulate import random_features as make_set


def setup2_grid(epochs: int, domains: int, seeds: int, lambdas: list[float], dim: int = 512):
    """Members (train, val, options): one training and validation set per held-out domain."""
    sets = [(make_set(7, 48, dim, 8, d), make_set(7, 16, dim, 1, 100 + d)) for d in range(domains)]
    return [
        (tr, va, {"epochs": epochs, "seed": s, "lambda2": lam, "gen_step": 1})
        for tr, va in sets
        for s in range(1, seeds + 1)
        for lam in lambdas
    ]


CPU: dict[str, float] = {}


def timed(fn, label: str = "") -> float:  # noqa: ANN001
    """Wall seconds of ``fn()``; its process CPU seconds go to ``CPU[label]`` (load-robust
    for one thread: on a shared machine, CPU time is what a quiet run's wall time would be)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    if label:
        CPU[label] = time.process_time() - c0
    return time.perf_counter() - t0


def sequential_seconds(method: str, members, n: int, device: str, label: str) -> float:  # noqa: ANN001
    """Seconds for all ``members`` one by one, measured on the first ``n`` and scaled
    (``CPU[label]`` scaled alike)."""
    n = min(n, len(members))
    t = timed(lambda: [M.fit(method, tr, va, device=device, **o) for tr, va, o in members[:n]],
              label)  # fmt: skip
    CPU[label] *= len(members) / n
    return t * len(members) / n


def busy_loop(stop: mp.Event) -> None:  # noqa: ANN001
    """A competing torch process: matmuls on its default thread count until stopped."""
    a = torch.randn(1024, 1024)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def member_memory(members: int, dim: int) -> None:
    """Child process: train ``members`` Setup-II members for one epoch, print peak RSS (KiB)."""
    grid = setup2_grid(1, 1, members, [1000.0], dim)
    fit_many("croft", grid, threads=1)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def bounded_memory(members: int, dim: int, budget: int) -> None:
    """Child process: ``members`` one-batch members at ``dim`` under ``budget``; peak RSS."""
    sets = [make_set(7, 5, dim, 1, i) for i in range(4)]
    grid = [(sets[i % 4], None, {"epochs": 1, "seed": i, "batch_size": 32}) for i in range(members)]
    for _ in fit_iter("croft", grid, threads=1, chunk_budget_bytes=budget):
        pass  # results written elsewhere and dropped: memory must not grow with members
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def memory_report() -> dict:
    """Peak bytes per member from the RSS slope between 1 and 9 members, at two D."""
    out = {}
    for dim in (256, 512):
        peaks = []
        for g in (1, 9):
            cmd = [sys.executable, __file__, "--_member-memory", f"{g},{dim}"]
            peaks.append(
                int(subprocess.run(cmd, capture_output=True, text=True).stdout.split()[-1])
            )
        per = (peaks[1] - peaks[0]) * 1024 / 8
        out[f"bytes_per_member_d{dim}"] = per
        out[f"d2_factor_d{dim}"] = per / (4 * dim * dim)
    budget = 512 * 2**20
    for members in (16, 128):  # at D = 768 under 512 MiB: the peak must not grow with members
        cmd = [sys.executable, __file__, "--_bounded", f"{members},768,{budget}"]
        rss = int(subprocess.run(cmd, capture_output=True, text=True).stdout.split()[-1])
        out[f"peak_rss_mib_{members}_members_d768_budget512mib"] = rss / 1024
    return out


def setup1(res: dict, quick: bool, epochs: int, dev: str) -> None:
    """Setup-I-like shape (C = 400, 4 shots, D = 512): batched against sequential."""
    s1 = {"energy_reduction": "setup1", "lambda1": 5.0, "epochs": epochs}
    trains = [make_set(400, 4, 512, 2, 200 + i) for i in range(2)]
    grid = [(tr, None, {**s1, "seed": s, "lambda2": lam}) for tr in trains for s in (1, 2)
            for lam in (1.0, 5.0)][: 4 if quick else 8]  # fmt: skip
    res["setup1_members"] = len(grid)
    res["setup1_batched_seconds"] = timed(lambda: fit_many("croft", grid, device=dev), "s1")
    res["setup1_sequential_seconds"] = sequential_seconds("croft", grid, 2, dev, "s1_seq")
    res["setup1_speedup"] = res["setup1_sequential_seconds"] / res["setup1_batched_seconds"]


def contended(fn) -> float:  # noqa: ANN001
    """Wall seconds of ``fn()`` beside one busy competing torch process."""
    stop = mp.Event()
    proc = mp.Process(target=busy_loop, args=(stop,), daemon=True)
    proc.start()
    time.sleep(1.0)
    try:
        return timed(fn, "contended")
    finally:
        stop.set()
        proc.join(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: few epochs and members")
    ap.add_argument("--json", default="", help="write the figures as JSON to this file")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for batched fits")
    ap.add_argument("--seq-fits", type=int, default=3, help="sequential fits actually timed")
    ap.add_argument("--setup1-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=0, help="Setup-II epochs (default 30)")
    ap.add_argument("--skip", default="", help="comma list of: threads,contention,setup1")
    ap.add_argument("--memory", action="store_true", help="measure peak bytes per member")
    ap.add_argument("--_member-memory", default="", help=argparse.SUPPRESS)
    ap.add_argument("--_bounded", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._member_memory:
        g, dim = (int(v) for v in args._member_memory.split(","))
        member_memory(g, dim)
        return
    if args._bounded:
        g, dim, budget = (int(v) for v in args._bounded.split(","))
        bounded_memory(g, dim, budget)
        return
    if args.memory:
        print(json.dumps(memory_report(), indent=1))
        return
    torch.set_num_threads(args.threads)
    epochs, lambdas = (3, [10.0, 1000.0]) if args.quick else (30, [1.0, 10.0, 100.0, 1000.0, 1e4])
    epochs = args.epochs or epochs
    res: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "device": args.device,
        "threads": args.threads,
        "quick": args.quick,
        "load_before": os.getloadavg(),
    }
    dev = args.device
    grid = setup2_grid(epochs, 4, 3, lambdas)
    member_epochs = len(grid) * epochs
    fit_many("croft", grid[:2], device=dev, threads=args.threads)  # warm-up
    res["members"] = len(grid)
    res["epochs"] = epochs
    res["grid_seconds"] = timed(
        lambda: fit_many("croft", grid, device=dev, threads=args.threads), "grid"
    )
    ce_grid = [(tr, va, {"epochs": o["epochs"], "seed": o["seed"]}) for tr, va, o in grid]
    res["ce_grid_seconds"] = timed(
        lambda: fit_many("ce_adapter", ce_grid, device=dev, threads=args.threads), "ce"
    )
    res["official_vs_ce_per_member_epoch"] = res["grid_seconds"] / res["ce_grid_seconds"]
    res["official_ms_per_member_epoch"] = 1e3 * res["grid_seconds"] / member_epochs
    res["sequential_grid_seconds"] = sequential_seconds("croft", grid, args.seq_fits, dev, "seq")
    res["speedup_vs_sequential"] = res["sequential_grid_seconds"] / res["grid_seconds"]
    skip = set(args.skip.split(","))
    if "setup1" not in skip:
        setup1(res, args.quick, args.setup1_epochs, dev)
    if "threads" not in skip:
        other = 2 if args.threads == 1 else 1
        res[f"grid_seconds_threads{other}"] = timed(
            lambda: fit_many("croft", grid, device=dev, threads=other), f"threads{other}"
        )
    if "contention" not in skip:
        res["grid_seconds_contended"] = contended(
            lambda: fit_many("croft", grid, device=dev, threads=args.threads)
        )
        res["contention_slowdown"] = res["grid_seconds_contended"] / res["grid_seconds"]
    res["cpu_seconds"] = dict(CPU)
    res["speedup_vs_sequential_cpu"] = CPU["seq"] / CPU["grid"]
    res["official_vs_ce_per_member_epoch_cpu"] = CPU["grid"] / CPU["ce"]
    res["load_after"] = os.getloadavg()
    for k, v in res.items():
        print(f"{k:<36} {v:.3f}" if isinstance(v, float) else f"{k:<36} {v}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
