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

* issue 22: ``gflops_official_step`` (the matmul FLOPs torch's profiler counts in one
  official batched fit, over the grid's wall time per member-step; ``_cpu``: over its
  process CPU time) and ``fraction_of_matmul_peak`` (``_cpu`` against the same matmul
  shapes timed alone, contiguous, in CPU time, in this run: ``matmul_peak_gflops``); the
  grid with 1 and 2 one-thread worker processes
  (``spawn``; each fits every other member, as ``croft run --workers-fit 2`` splits runs)
  quiet and beside a busy process, interleaved A/B over ``--rounds``; the Setup-I
  batched/sequential ratio; DPLCLIP fit and predict on the demo's shapes through the
  shipped tiny CLIP, the shared-prefix path against the full-length one, interleaved.

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
from croft.methods.croft.engine import fit_iter, fit_many
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


MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")


def matmul_profile(dev: str, threads: int) -> tuple[float, list[tuple[str, list, int, float]]]:
    """Matmul MFLOP per official member-step (profiler, one epoch of 4 members) and the
    matmuls' ``(op, input shapes, calls per member-step, MFLOP per call)``."""
    from torch.profiler import ProfilerActivity, profile

    grid = setup2_grid(1, 1, 2, [10.0, 1000.0])
    steps = len(grid) * 10  # 1 epoch, 10 batches
    with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True) as prof:
        fit_many("croft", grid, device=dev, threads=threads)
    ops = [
        (e.key, e.input_shapes, e.count / steps, e.flops / e.count / 1e6)
        for e in prof.key_averages(group_by_input_shape=True)
        if e.flops and e.key in MATMULS
    ]
    return sum(c * f for _, _, c, f in ops), ops


def _operands(op: str, shapes: list) -> list[torch.Tensor] | None:
    dims = [list(x) for x in shapes if isinstance(x, (list, tuple)) and len(x) in (2, 3)]
    if op in ("aten::mm", "aten::bmm") and len(dims) >= 2:
        return [torch.randn(*dims[0]), torch.randn(*dims[1])]
    if op in ("aten::addmm", "aten::baddbmm") and len(dims) >= 2:
        # (input, mat1, mat2[, out]): the engine's baddbmm(out=) lists its output last
        a, b = (dims[1], dims[2]) if len(dims) >= 3 else (dims[-2], dims[-1])
        out = [*a[:-1], b[-1]]
        return [torch.randn(*out), torch.randn(*a), torch.randn(*b)]
    return None


def matmul_peak(ops: list, min_seconds: float = 0.05) -> float:
    """GFLOP/s of the same matmul shapes alone (contiguous random operands, this thread
    count), weighted as in the step: total FLOPs over the summed time per shape (process
    CPU time, so a loaded machine does not lower it; meant for one thread)."""
    fns = {"aten::mm": torch.mm, "aten::bmm": torch.bmm,
           "aten::addmm": torch.addmm, "aten::baddbmm": torch.baddbmm}  # fmt: skip
    flops = seconds = 0.0
    for op, shapes, calls, mflop in ops:
        args = _operands(op, shapes)
        if args is None:
            continue
        fn = fns[op]
        try:
            fn(*args)
        except RuntimeError:  # a recorded shape list this reconstruction does not cover
            continue
        n, t0 = 0, time.process_time()  # CPU time: what a quiet machine's wall time would be
        while (t := time.process_time() - t0) < min_seconds:
            fn(*args)
            n += 1
        flops += calls * mflop * 1e6
        seconds += calls * t / n
    return flops / seconds / 1e9


def worker_fit(epochs: int, lambdas: list[float], part: int, parts: int, dev: str) -> None:
    """Child process: one torch thread, every ``parts``-th member of the grid from ``part``."""
    torch.set_num_threads(1)
    grid = setup2_grid(epochs, 4, 3, lambdas)[part::parts]
    fit_many("croft", grid, device=dev, threads=1)


def workers_grid(workers: int, epochs: int, lambdas: list[float], dev: str) -> float:
    """Wall seconds of the grid over ``workers`` spawned one-thread processes (start-up and
    imports included, as ``croft run`` pays them); one worker: in this process."""
    if workers == 1:
        return timed(lambda: fit_many("croft", setup2_grid(epochs, 4, 3, lambdas), device=dev,
                                      threads=1))  # fmt: skip
    ctx = mp.get_context("spawn")
    t0 = time.perf_counter()
    procs = [ctx.Process(target=worker_fit, args=(epochs, lambdas, k, workers, dev))
             for k in range(workers)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise RuntimeError(f"a grid worker failed: {[p.exitcode for p in procs]}")
    return time.perf_counter() - t0


def workers_report(res: dict, rounds: int, epochs: int, lambdas: list[float], dev: str) -> None:
    """The grid with 1 and 2 workers, quiet and beside a busy process, interleaved A/B:
    per round 1, 2 workers quiet then 1, 2 contended; the medians."""
    runs: dict[str, list[float]] = {k: [] for k in ("w1", "w2", "w1_busy", "w2_busy")}
    for _ in range(rounds):
        for w in (1, 2):
            runs[f"w{w}"].append(workers_grid(w, epochs, lambdas, dev))
        for w in (1, 2):
            runs[f"w{w}_busy"].append(contended(lambda w=w: workers_grid(w, epochs, lambdas, dev)))
    med = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
    res["workers_epochs"] = epochs
    res["workers_rounds"] = runs
    res["grid_seconds_workers1"] = med["w1"]
    res["grid_seconds_workers2"] = med["w2"]
    res["grid_seconds_workers1_busy"] = med["w1_busy"]
    res["grid_seconds_workers2_busy"] = med["w2_busy"]
    res["workers2_speedup"] = med["w1"] / med["w2"]
    res["workers2_speedup_busy"] = med["w1_busy"] / med["w2_busy"]


#: DPLCLIP variants timed interleaved: (key suffix, shared-prefix path, validation options)
VARIANTS = (
    ("_full_length", False, {}),
    ("", True, {}),
    ("_val_subsample", True, {"val_every": 5, "val_max": 70}),
)


def dplclip_report(res: dict, rounds: int, epochs: int) -> None:
    """DPLCLIP on the world demo's shapes (7 classes, 3 source styles x 16 shots, 8 views,
    210 validation and 3,003 test images, n_ctx 4) through the shipped tiny CLIP: fit and
    predict, shared-prefix path against the full-length one, interleaved."""
    from croft.backbones import load_backbone
    from croft.methods.prompts import prompting
    from croft.world import TINY_CLIP_ARCH, tiny_clip_checkpoint
    from croft.world.config import WorldConfig

    bb = load_backbone(f"openclip:{TINY_CLIP_ARCH}:{tiny_clip_checkpoint('study')}")
    names = list(WorldConfig().id_classes)

    def fs(per: int, views: int, seed: int, doms: int):  # noqa: ANN202
        f = make_set(len(names), per, bb.dim, views, seed, scale=bb.logit_scale)
        f.class_names, f.domains = list(names), torch.arange(len(f.labels)) % doms
        f.domain_names = [f"d{i}" for i in range(doms)]
        return f

    train, val, test = fs(48, 8, 1, 3), fs(30, 1, 2, 3), fs(429, 1, 3, 1)
    times: dict[str, list[float]] = {}
    preds = {}
    old = prompting.SHARED_PREFIX
    try:
        for _ in range(rounds):
            for tag, shared, val_opts in VARIANTS:
                prompting.SHARED_PREFIX = shared
                torch.manual_seed(0)
                t0 = time.perf_counter()
                opts = {"epochs": epochs, "n_ctx": 4, "text_tower": bb, "lr": 0.03, **val_opts}
                result = M.fit("dplclip", train, val, **opts)
                t1 = time.perf_counter()
                with torch.no_grad():
                    logits = result.head.logits(test.features)
                fit, pred = t1 - t0, time.perf_counter() - t1
                times.setdefault(f"fit{tag}", []).append(fit)
                times.setdefault(f"predict{tag}", []).append(pred)
                preds[tag] = logits.argmax(1)
    finally:
        prompting.SHARED_PREFIX = old
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    res["dplclip_epochs"] = epochs
    res["dplclip_rounds"] = times
    for k, v in med.items():
        res[f"dplclip_{k}_seconds"] = v
    res["dplclip_speedup"] = (med["fit_full_length"] + med["predict_full_length"]) / (
        med["fit"] + med["predict"]
    )
    res["dplclip_same_predictions"] = bool(torch.equal(preds[""], preds["_full_length"]))
    # the named validation option (every 5th epoch, 70 of 210 images): not exact by design
    res["dplclip_speedup_val_subsample"] = (med["fit_full_length"] + med["predict_full_length"]) / (
        med["fit_val_subsample"] + med["predict_val_subsample"]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: few epochs and members")
    ap.add_argument("--json", default="", help="write the figures as JSON to this file")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for batched fits")
    ap.add_argument("--seq-fits", type=int, default=3, help="sequential fits actually timed")
    ap.add_argument("--setup1-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=0, help="Setup-II epochs (default 30)")
    ap.add_argument(
        "--skip", default="", help="comma list of: threads,contention,setup1,flops,workers,dplclip"
    )
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds (workers, DPLCLIP)")
    ap.add_argument("--workers-epochs", type=int, default=0, help="epochs of the workers grid")
    ap.add_argument("--dplclip-epochs", type=int, default=30)
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

    def save() -> None:  # after every section: a run cut short keeps what it measured
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(res, fh, indent=1)

    save()
    if "setup1" not in skip:
        setup1(res, args.quick, args.setup1_epochs, dev)
        res["setup1_batched_vs_sequential"] = res["setup1_speedup"]  # > 1: batched faster
        save()
    if "flops" not in skip:
        mflop, ops = matmul_profile(dev, args.threads)
        res["mflop_official_step"] = mflop
        gflop = mflop * member_epochs * 10 / 1e3  # the grid's matmul work
        res["gflops_official_step"] = gflop / res["grid_seconds"]  # wall
        res["gflops_official_step_cpu"] = gflop / CPU["grid"]  # CPU time: load-robust
        res["matmul_peak_gflops"] = matmul_peak(ops) if dev == "cpu" else float("nan")
        # both in CPU time (one thread): the step's matmul rate against the shapes alone
        res["fraction_of_matmul_peak"] = res["gflops_official_step_cpu"] / res["matmul_peak_gflops"]
        save()
    if "workers" not in skip:
        workers_report(res, args.rounds, args.workers_epochs or epochs, lambdas, dev)
        save()
    if "dplclip" not in skip:
        dplclip_report(res, args.rounds, 3 if args.quick else args.dplclip_epochs)
        save()
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
