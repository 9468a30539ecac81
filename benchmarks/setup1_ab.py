"""Setup-I shape, batched against sequential fits, old against new sources, interleaved.

    OMP_NUM_THREADS=1 python benchmarks/setup1_ab.py --src old=OLD/src,new=NEW/src \
        [--rounds 4] [--members 4] [--epochs 1] [--json OUT]

The members are ``grid_speed.py``'s Setup-I grid (C = 400, 4 shots: 1,600 rows, 50
batches per epoch, D = 512, ``setup1`` penalty); each round runs one process per source
(``PYTHONPATH``) that fits the members batched (``fit_many``) and one member on its own
(scaled by the member count), in alternating order. Per run: wall, user and system CPU
seconds and minor page faults of each part, and the sequential/batched ratios (> 1: the
batched engine is faster). On a shared machine compare the ratios within a round.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def child(members: int, epochs: int, order: str) -> dict:
    """One process: the batched and the sequential part in ``order`` ("bs" or "sb")."""
    import torch

    import croft.methods as M
    from croft.methods.croft.engine import fit_many
    from croft.simulate import random_features as make_set

    torch.set_num_threads(1)
    s1 = {"energy_reduction": "setup1", "lambda1": 5.0, "epochs": epochs}
    trains = [make_set(400, 4, 512, 2, 200 + i) for i in range(2)]
    grid = [(tr, None, {**s1, "seed": s, "lambda2": lam}) for tr in trains for s in (1, 2)
            for lam in (1.0, 5.0)][:members]  # fmt: skip
    parts = {
        "b": lambda: fit_many("croft", grid),
        "s": lambda: M.fit("croft", grid[0][0], None, **grid[0][2]),
    }
    res: dict = {"load": os.getloadavg()[0]}
    for key in order:
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        parts[key]()
        r1, scale = resource.getrusage(resource.RUSAGE_SELF), members if key == "s" else 1
        res[key] = {
            "wall": (time.perf_counter() - t0) * scale,
            "cpu": (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * scale,
            "sys": (r1.ru_stime - r0.ru_stime) * scale,
            "faults": (r1.ru_minflt - r0.ru_minflt) * scale,
        }
    res["wall_ratio"] = res["s"]["wall"] / res["b"]["wall"]
    res["cpu_ratio"] = res["s"]["cpu"] / res["b"]["cpu"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, help="name=PATH[,name=PATH...] (PYTHONPATH)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--json", default="")
    ap.add_argument("--_child", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child:
        print(json.dumps(child(a.members, a.epochs, a._child)))
        return
    srcs = dict(item.split("=", 1) for item in a.src.split(","))
    runs: dict[str, list[dict]] = {k: [] for k in srcs}
    for r in range(a.rounds):
        for name, src in srcs.items():
            env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
            cmd = [sys.executable, __file__, "--src", a.src, "--members", str(a.members),
                   "--epochs", str(a.epochs), "--_child", "bs" if r % 2 == 0 else "sb"]  # fmt: skip
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            d = json.loads(out.stdout.strip().splitlines()[-1])
            runs[name].append(d)
            print(f"round {r} {name}: load {d['load']:.1f}, sequential/batched wall "
                  f"{d['wall_ratio']:.3f} cpu {d['cpu_ratio']:.3f}; batched faults "
                  f"{d['b']['faults']}, sys {d['b']['sys']:.2f} s", flush=True)  # fmt: skip
    summary = {
        name: {k: statistics.median(d[k] for d in rs) for k in ("wall_ratio", "cpu_ratio")}
        | {"batched_faults": statistics.median(d["b"]["faults"] for d in rs)}
        for name, rs in runs.items()
    }
    print(json.dumps(summary, indent=1))
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump({"summary": summary, "runs": runs}, fh, indent=1)


if __name__ == "__main__":
    main()
