"""Whole grids through the batched engine (issue 11): ``croft run`` / ``run_grid`` give the
same runs batched and sequential, ``--shard K/N`` splits a grid into disjoint parts whose
union is the unsharded run, and an interrupted batched grid resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from croft.cli.main import main
from croft.errors import CroftError
from croft.experiments.runner import parse_shard, run_grid, shard_of
from croft.experiments.task import Task
from croft.protocols.demo import demo_methods
from croft.simulate import SimConfig, Simulator
from test_experiment import world  # noqa: F401  (the generated Setup-II-shaped experiment)

pytestmark = pytest.mark.usefixtures("isolated_cache")
SKIP = ("fit_seconds", "head", "run_key")  # wall time; the head's file name; data part


def _run(cfg: Path, out: Path, *extra: str) -> int:
    return main(["run", str(cfg), "--out", str(out), "--quiet", "--no-report", *extra])


def _metrics(out: Path) -> dict[str, dict]:
    """``{run folder relative to out: metrics}`` of every finished run below ``out``."""
    return {
        str(p.parent.relative_to(out)): json.loads(p.read_text())
        for p in sorted(out.rglob("metrics.json"))
    }


def _max_diff(a: object, b: object) -> float:
    """Largest absolute difference between two metrics documents (equal structure and
    non-numbers required)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b)
        return max((_max_diff(a[k], b[k]) for k in a if k not in SKIP), default=0.0)
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        return max((_max_diff(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b))  # type: ignore[arg-type]
    assert a == b
    return 0.0


@pytest.mark.parametrize(("dtype", "tol"), [("float64", 1e-10), ("float32", 1e-4)])
def test_run_batched_equals_sequential(world, tmp_path, monkeypatch, dtype, tol) -> None:  # noqa: F811
    """The same experiment with ``fit_engine`` batched and sequential: the same runs and
    metrics (float64: to 1e-10; float32: to the engine's rounding, well under 1e-4)."""
    import croft.methods.croft.engine as B

    members: list[int] = []
    real = B.fit_iter

    def counting(method, members_, **kw):  # noqa: ANN001, ANN202
        members.append(len(members_))
        return real(method, members_, **kw)

    monkeypatch.setattr(B, "fit_iter", counting)
    cfg = world / "exp.yaml"
    opts = ["--set", f"methods.1.options.dtype={dtype}", "--set", "methods.1.options.epochs=3"]
    got = {}
    for engine in ("sequential", "batched"):
        out = tmp_path / engine
        assert _run(cfg, out, *opts, "--set", f"fit_engine={engine}") == 0
        got[engine] = _metrics(out)
    assert members == [4]  # batched: the 4 croft runs (2 domains x 2 lambda2) in one call
    assert len(got["batched"]) == 6 and set(got["batched"]) == set(got["sequential"])
    diff = max(_max_diff(got["sequential"][k], got["batched"][k]) for k in got["batched"])
    assert diff <= tol, diff
    # the engine is not part of the run key: switching it resumes, never refuses
    stamp = (tmp_path / "batched" / "runs").stat().st_mtime_ns
    assert _run(cfg, tmp_path / "batched", *opts, "--set", "fit_engine=sequential") == 0
    assert (tmp_path / "batched" / "runs").stat().st_mtime_ns == stamp
    with pytest.raises(CroftError, match="fit_engine 'fast'"):
        from croft.experiments import load_experiment

        load_experiment(cfg, ["fit_engine=fast"])


def test_shards_union_equals_unsharded(world, tmp_path, capsys) -> None:  # noqa: F811
    """N = 3 shards into one --out give exactly the unsharded run's folders and metrics;
    a shard reruns only its own part; --dry-run names each run's part; croft report over
    one folder or a parent of several merges the parts."""
    cfg = world / "exp.yaml"
    full = tmp_path / "full"
    assert _run(cfg, full) == 0
    want = _metrics(full)
    capsys.readouterr()
    assert _run(cfg, tmp_path / "x", "--shard", "2/3", "--dry-run") == 0
    printed = capsys.readouterr().out
    assert sum(f"[{k}/3]" in printed for k in (1, 2, 3)) >= 2 and "part 2/3 of 6 runs" in printed
    parts: dict[int, dict] = {}
    for k in (1, 2, 3):
        own = tmp_path / f"shard{k}"
        assert _run(cfg, own, "--shard", f"{k}/3") == 0
        parts[k] = _metrics(own)
        for folder in parts[k]:
            assert shard_of(_config_key(own / folder), 3) == k
        assert _run(cfg, tmp_path / "merged", "--shard", f"{k}/3") == 0
    assert sum(len(p) for p in parts.values()) == len(want)
    union = {f: m for p in parts.values() for f, m in p.items()}
    assert set(union) == set(want)
    assert max(_max_diff(union[f], want[f]) for f in want) <= 1e-4
    assert set(_metrics(tmp_path / "merged")) == set(want)
    # a shard's rerun touches only its own part (everything reused); the parts follow run
    # keys' hashes, so with 6 runs a part may be empty: use the first non-empty one
    k = min(k for k in parts if parts[k])
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "merged").rglob("metrics.json")}
    assert _run(cfg, tmp_path / "merged", "--shard", f"{k}/3") == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # --fresh with --shard discards and redoes only its own part's folders
    assert _run(cfg, tmp_path / "merged", "--shard", f"{k}/3", "--fresh") == 0
    mine = {tmp_path / "merged" / f / "metrics.json" for f in parts[k]}
    assert mine and len(mine) < len(stamps)
    assert all(p.is_file() for p in stamps)
    assert {p for p in stamps if p.stat().st_mtime_ns != stamps[p]} == mine
    # croft report over a parent of separate shard outputs merges them
    capsys.readouterr()
    parent = tmp_path / "parent"
    parent.mkdir()
    for k in (1, 2, 3):
        (tmp_path / f"shard{k}").rename(parent / f"shard{k}")
    assert main(["report", str(parent), "--no-plots", "--out", str(tmp_path / "rep")]) == 0
    assert f"report of {len(want)} runs" in capsys.readouterr().out
    assert _run(cfg, tmp_path / "y", "--shard", "4/3") == 2


def _config_key(rdir: Path) -> str:
    return json.loads((rdir / "run_key.json").read_text())["config_key"]


def test_parse_shard() -> None:
    assert parse_shard(None) is None and parse_shard("1/1") == (1, 1) and parse_shard("3/4")
    for bad in ("0/2", "3/2", "2", "a/b", "1/0"):
        with pytest.raises(CroftError, match="use K/N with 1 <= K <= N"):
            parse_shard(bad)


SIM = SimConfig(dim=32, classes=5, unseen_classes=4, shots=8, test_per_class=30, domains=3)


def _tasks() -> list[Task]:
    sim = Simulator(SIM)
    out = []
    for seed in (1, 2):
        for dom in range(SIM.domains):
            t = sim.lodo(dom, seed)
            out.append(Task(t.test_domain, seed, t.train, t.val, t.test, t.ood_sets))
    return out


def test_interrupted_batched_grid_leaves_complete_runs_and_resumes(tmp_path) -> None:
    """Stopping a batched grid after a few written runs leaves only complete runs (and
    run keys); the rerun fits the rest and ends with the uninterrupted run's metrics."""
    methods = demo_methods()
    ref = run_grid(_tasks(), methods, tmp_path / "ref", scores=("energy",), fit_engine="batched")
    seen = []

    def stop(rec: dict) -> None:
        seen.append(rec)
        if len(seen) == 9:
            raise KeyboardInterrupt

    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_grid(_tasks(), methods, out, scores=("energy",), fit_engine="batched", on_result=stop)
    done = list(out.rglob("metrics.json"))
    assert len(done) == 9
    for path in done:  # every finished run is complete
        assert {p.name for p in path.parent.iterdir()} >= {"scores.npz", "config.json", "head"}
    again = run_grid(_tasks(), methods, out, scores=("energy",), fit_engine="batched")
    assert len(again) == len(ref) == len(_tasks()) * len(methods)
    # float32: chunks of another composition may round differently
    assert max(_max_diff(a, b) for a, b in zip(ref, again, strict=True)) <= 1e-4
    seq = run_grid(_tasks(), methods, tmp_path / "seq", scores=("energy",), fit_engine="sequential")
    assert [r["label"] for r in seq] == [r["label"] for r in ref]  # same order, task x method
    assert max(_max_diff(a, b) for a, b in zip(ref, seq, strict=True)) <= 1e-4
