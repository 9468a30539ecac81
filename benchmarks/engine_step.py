"""Per member-step time and GFLOP/s of the batched engine's steps (issue 22).

    python benchmarks/engine_step.py [--json OUT] [--steps 20] [--shapes setup2,setup1,ce]
    python benchmarks/engine_step.py --ab OLD_SRC NEW_SRC [--rounds 5]   # interleaved A/B

One *member-step* is one batch of one member; a step of ``G`` stacked members counts ``G``.
Shapes (random features; timing does not depend on their values):

* ``setup2``: official step, G = 8, D = 512, C = 7, batch 32, gen_step 1, covariate rows,
  ``setup2`` penalty (the Setup-II grid's member-step);
* ``setup1``: official step, C = 400, ``setup1`` penalty, batched G = 8 against G = 1
  (sequential) member-steps: ``setup1_batched_vs_sequential`` > 1 means batching wins;
* ``ce``: the CE-only adapter step, G = 8, D = 512, C = 7.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on one step
(matmuls of forward and backward). ``--ab`` runs this script alternately with
``PYTHONPATH=OLD_SRC`` and ``NEW_SRC`` (``--rounds`` times each, one process per run) and
prints each key's median new/old time ratio, so the load of a shared machine hits both
sides alike. The engine's opt-in allocator setting (``tune_allocator``, ``CROFT_MALLOC_TUNE=1``)
is applied as ``fit_chunk`` applies it. The entry points used
(:func:`step_seconds`, :func:`step_flops`) only need
``croft.methods.croft.steps.{STEPS, BatchedParams, Structure}`` and
``croft.methods.croft.chunk.hyper``, which every version of the engine has.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

SHAPES = {
    # name: (variant, members, dim, classes, batch, reduction)
    "setup2": ("official", 8, 512, 7, 32, "setup2"),
    "setup1": ("official", 8, 512, 400, 32, "setup1"),
    "setup1_seq": ("official", 1, 512, 400, 32, "setup1"),
    "ce": ("ce", 8, 512, 7, 32, "setup2"),
}


def make_state(variant: str, members: int, dim: int, classes: int, batch: int, reduction: str,
               dtype: torch.dtype = torch.float32, seed: int = 0):  # fmt: skip  # noqa: ANN201
    """``(step, args)``: call ``step(*args)`` for one batched step of ``members`` members."""
    from croft.methods.base import make_config
    from croft.methods.croft.chunk import hyper
    from croft.methods.croft.fit import CroftConfig
    from croft.methods.croft.steps import STEPS, BatchedParams, Structure

    g = torch.Generator().manual_seed(seed)
    cfgs = [make_config(CroftConfig, {"lambda2": 10.0 * (i + 1)}) for i in range(members)]
    dev = torch.device("cpu")
    hp = hyper(cfgs, [100.0] * members, dtype, dev)
    hp.values["lr"] = torch.full((members,), 1e-3, dtype=dtype)
    residual = variant == "paper"
    params = BatchedParams.create(members, dim, dtype, dev, residual)
    struct = Structure("ce") if variant == "ce" else Structure(variant, True, 1, True, reduction)
    x = torch.randn(members, batch, dim, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (members, batch), generator=g)
    t = torch.randn(members, classes, dim, generator=g, dtype=dtype)
    return STEPS[variant], (params, x, y, t, hp, struct)


def step_seconds(shape: str, steps: int = 20, warmup: int = 3) -> float:
    """Median seconds per member-step of ``shape`` (median over ``steps`` timed steps)."""
    spec = SHAPES[shape]
    step, args = make_state(*spec)
    for _ in range(warmup):
        step(*args)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / spec[1]


def step_flops(shape: str) -> float:
    """Matmul FLOPs of one member-step of ``shape`` (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = SHAPES[shape]
    step, args = make_state(*spec)
    step(*args)
    with FlopCounterMode(display=False) as counter:
        step(*args)
    return counter.get_total_flops() / spec[1]


def measure(shapes: list[str], steps: int) -> dict[str, float]:
    torch.set_num_threads(1)
    res: dict[str, float] = {"load_before": os.getloadavg()[0]}
    try:  # the engine's allocator setting, as fit_chunk applies it (absent before issue 22)
        from croft.methods.croft.chunk import tune_allocator

        res["malloc_tuned"] = float(tune_allocator(torch.device("cpu")))
    except ImportError:
        res["malloc_tuned"] = 0.0
    for shape in shapes:
        names = [shape, "setup1_seq"] if shape == "setup1" else [shape]
        for name in names:
            sec = step_seconds(name, steps)
            flops = step_flops(name)
            res[f"{name}_ms_per_member_step"] = 1e3 * sec
            res[f"{name}_mflop_per_member_step"] = flops / 1e6
            res[f"{name}_gflops"] = flops / sec / 1e9
        if shape == "setup1":
            res["setup1_batched_vs_sequential"] = (
                res["setup1_seq_ms_per_member_step"] / res["setup1_ms_per_member_step"]
            )
    res["load_after"] = os.getloadavg()[0]
    return res


def ab(old: str, new: str, rounds: int, args: list[str]) -> dict[str, object]:
    """Alternate runs of this script under ``old`` and ``new`` sources; median ratios."""
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for _ in range(rounds):
        for side, src in (("old", old), ("new", new)):
            env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
            out = subprocess.run([sys.executable, __file__, "--print", *args], env=env,
                                 check=True, capture_output=True, text=True).stdout  # fmt: skip
            runs[side].append(json.loads(out.strip().splitlines()[-1]))
    keys = [k for k in runs["new"][0] if k.endswith("ms_per_member_step") or "vs_seq" in k]
    summary: dict[str, object] = {"rounds": rounds}
    for k in keys:
        o = statistics.median(r[k] for r in runs["old"])
        n = statistics.median(r[k] for r in runs["new"])
        summary[k] = {"old": round(o, 3), "new": round(n, 3), "new_over_old": round(n / o, 3)}
    for k in runs["new"][0]:
        if k.endswith("mflop_per_member_step") or k.endswith("gflops"):
            o = statistics.median(r[k] for r in runs["old"])
            n = statistics.median(r[k] for r in runs["new"])
            summary[k] = {"old": round(o, 1), "new": round(n, 1)}
    loads = [r["load_before"] for side in runs.values() for r in side]
    summary["load_min_max"] = [min(loads), max(loads)]
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--shapes", default="setup2,setup1,ce")
    ap.add_argument("--json", default="")
    ap.add_argument("--ab", nargs=2, metavar=("OLD_SRC", "NEW_SRC"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--print", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ab:
        res: dict = ab(a.ab[0], a.ab[1], a.rounds, ["--steps", str(a.steps), "--shapes", a.shapes])
    else:
        res = measure(a.shapes.split(","), a.steps)
    text = json.dumps(res, indent=None if a.print else 2)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
