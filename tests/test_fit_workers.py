"""Fit worker processes (``--workers-fit``): same runs as one process, errors come back."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from croft.cli.main import main
from croft.errors import CroftError
from croft.experiments.protocols import run_experiment
from croft.experiments.runner import shard_of
from croft.experiments.workers import fit_workers, run_in_workers, worker_shards

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """3 domains x 3 classes x 5 images, one OOD folder, a random tiny checkpoint, a YAML
    with batched (CRoFT, CE adapter) and sequential (zero-shot, linear probe) methods."""
    from croft.backbones import TINY_VIT
    from croft.backbones.openclip import open_clip_module

    root = tmp_path_factory.mktemp("workers")
    g = torch.Generator().manual_seed(0)
    colours = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fish": (40, 40, 200)}
    for d in ("art", "photo", "sketch"):
        for c, rgb in colours.items():
            for k in range(5):
                arr = (torch.rand(24, 24, 3, generator=g) * 60).to(torch.uint8)
                arr[6:18, 6:18] = torch.tensor(rgb, dtype=torch.uint8)
                (root / "data" / d / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr.numpy()).save(root / "data" / d / c / f"{k}.png")
    for k in range(4):
        arr = (torch.rand(24, 24, 3, generator=g) * 255).to(torch.uint8)
        (root / "textures" / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.numpy()).save(root / "textures" / "a" / f"{k}.png")
    torch.manual_seed(0)
    torch.save(open_clip_module().create_model(TINY_VIT).state_dict(), root / "tiny.pt")
    (root / "exp.yaml").write_text(
        f"""
name: tiny_workers
backbone: openclip:{TINY_VIT}:tiny.pt
data: {{root: data, layout: domainbed}}
held_out: [art, photo]
ood:
  - {{name: textures, root: textures, layout: folder, options: {{ood: true}}}}
shots: 2
views: 2
seeds: [1]
batch_size: 16
progress: false
methods:
  - {{label: zeroshot, method: zeroshot}}
  - {{label: linear_probe, method: linear_probe}}
  - {{label: ce, method: ce_adapter, options: {{epochs: 2}}}}
  - {{label: croft, method: croft, options: {{epochs: 2}}, grid: {{lambda2: [0.0, 10.0]}}}}
"""
    )
    return root


def _runs(out: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(out.rglob("metrics.json")):
        rec = json.loads(path.read_text())
        rec.pop("fit_seconds")
        scores = np.load(path.parent / "scores.npz")
        found[str(path.parent.relative_to(out))] = (rec, {k: scores[k] for k in scores.files})
    return found


@pytest.mark.slow  # ~35 s on 2 busy cores: two spawned interpreters, two full runs
def test_two_workers_write_the_same_runs_as_one(world: Path, tmp_path: Path) -> None:
    from croft.experiments import load_experiment

    cfg = world / "exp.yaml"
    one, two = tmp_path / "one", tmp_path / "two"
    assert (
        main(["run", str(cfg), "--out", str(one), "--quiet", "--no-report", "--workers-fit", "1"])
        == 0
    )
    finished = []
    run_in_workers(
        run_experiment, load_experiment(cfg, []), two, 2, on_result=lambda: finished.append(1)
    )
    a, b = _runs(one), _runs(two)
    assert len(a) == 2 * 5 and a.keys() == b.keys()
    assert len(finished) == 10  # every run's progress reached the parent
    for name in a:
        assert a[name][0] == b[name][0], name  # every metric, exactly
        for k, v in a[name][1].items():
            np.testing.assert_array_equal(v, b[name][1][k], err_msg=f"{name} {k}")
    # a rerun reuses every run (and starts no worker: nothing is left to fit)
    before = {p: p.stat().st_mtime_ns for p in two.rglob("metrics.json")}
    assert (
        main(["run", str(cfg), "--out", str(two), "--quiet", "--no-report", "--workers-fit", "2"])
        == 0
    )
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


def test_a_worker_error_is_the_same_one_line_error(world: Path, tmp_path: Path) -> None:
    from croft.experiments import load_experiment

    cfg = load_experiment(world / "exp.yaml", [])
    cfg.backbone = cfg.backbone.replace("tiny.pt", "missing.pt")  # fails inside each worker
    with pytest.raises(CroftError, match="weight file not found: .*missing.pt"):
        run_in_workers(run_experiment, cfg, tmp_path / "out", 2)


def test_worker_count(monkeypatch) -> None:
    from croft.provenance import available_cpus

    monkeypatch.delenv("CROFT_FIT_WORKERS", raising=False)
    assert fit_workers() == available_cpus()
    assert fit_workers(device="cuda") == 1
    assert fit_workers(8, runs=3) == 3 and fit_workers(runs=0) == 1
    monkeypatch.setenv("CROFT_FIT_WORKERS", "3")
    assert fit_workers() == 3 and fit_workers(2) == 2
    monkeypatch.setenv("CROFT_FIT_WORKERS", "two")
    with pytest.raises(CroftError, match="CROFT_FIT_WORKERS='two'"):
        fit_workers()
    with pytest.raises(CroftError, match="--workers-fit 0"):
        fit_workers(0)


@pytest.mark.parametrize("outer", [None, (1, 1), (2, 3), (4, 4)])
def test_worker_shards_split_exactly_their_part(outer) -> None:  # noqa: ANN001
    rng = random.Random(0)
    keys = [f"{rng.getrandbits(64):016x}" for _ in range(300)]
    shards = worker_shards(3, outer)
    for key in keys:
        hits = [s for s in shards if shard_of(key, s[1]) == s[0]]
        mine = outer is None or shard_of(key, outer[1]) == outer[0]
        assert len(hits) == (1 if mine else 0)


_ORPHAN_SCRIPT = """
import os, sys, time
from pathlib import Path


def slow_run(cfg, out, **kw):
    Path(out, f"pid-{kw['shard'][0]}").write_text(str(os.getpid()))
    time.sleep(120)


if __name__ == "__main__":
    from croft.experiments.workers import run_in_workers

    run_in_workers(slow_run, None, sys.argv[1], 2)
"""


def test_workers_exit_when_their_parent_is_killed(tmp_path) -> None:
    """``croft run`` killed (SIGKILL: no finally, no handler) leaves no fit worker writing
    into its output folder: each exits within about a second of being orphaned."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env)
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("pid-*"))) < 2:
            assert parent.poll() is None and time.monotonic() < deadline, "workers never began"
            time.sleep(0.2)
        pids = [int(p.read_text()) for p in tmp_path.glob("pid-*")]
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # a zombie awaiting its (new) parent's reap counts as gone
        stat = Path(f"/proc/{pid}/stat")
        return not (stat.is_file() and stat.read_text().split(")")[-1].split()[0] == "Z")

    deadline = time.monotonic() + 15
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in pids if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"fit workers {left} outlived their killed parent"
