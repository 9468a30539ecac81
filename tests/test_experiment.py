"""``croft run``: a Setup-II-shaped experiment on generated image folders, end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from croft.cli.main import main
from croft.errors import CroftError
from croft.experiments import expand_methods, load_experiment, read_runs
from croft.report import collect_runs, select_records

DOMAINS, CLASSES = ("art", "cartoon", "photo", "sketch"), ("cat", "dog", "fish")


pytestmark = pytest.mark.usefixtures("isolated_cache")


def _image(path: Path, colour: tuple[int, int, int], g: torch.Generator) -> None:
    arr = (torch.rand(24, 24, 3, generator=g) * 60).to(torch.uint8)
    arr[6:18, 6:18] = torch.tensor(colour, dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.numpy()).save(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """4 domains x 3 classes x 6 images, 2 OOD folders, a random tiny checkpoint, a YAML."""
    from croft.backbones import TINY_VIT
    from croft.backbones.openclip import open_clip_module

    root = tmp_path_factory.mktemp("exp")
    g = torch.Generator().manual_seed(0)
    colours = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fish": (40, 40, 200)}
    for d in DOMAINS:
        for c in CLASSES:
            for k in range(6):
                _image(root / "data" / d / c / f"{k}.png", colours[c], g)
    for ood in ("textures", "objects"):
        for c in ("a", "b"):
            for k in range(5):
                _image(root / ood / c / f"{k}.png", (120, 120, 40), g)
    torch.manual_seed(0)
    torch.save(open_clip_module().create_model(TINY_VIT).state_dict(), root / "tiny.pt")
    (root / "exp.yaml").write_text(
        f"""
name: tiny_setup2
backbone: openclip:{TINY_VIT}:tiny.pt
data: {{root: data, layout: domainbed}}
held_out: [art, photo]
ood:
  - {{name: textures, root: textures, layout: folder, options: {{ood: true}}}}
  - {{name: objects, root: objects, layout: folder, options: {{ood: true}}}}
shots: 2
views: 2
seeds: [1]
batch_size: 16
progress: false
methods:
  - {{label: zeroshot, method: zeroshot}}
  - {{label: croft, method: croft, options: {{epochs: 2, lambda2: [0.0, 10.0]}}}}
"""
    )
    return root


def test_run_report_and_resume(world, tmp_path, capsys) -> None:
    cfg = world / "exp.yaml"
    out = tmp_path / "runs"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    done = sorted(out.rglob("metrics.json"))
    # 2 held-out domains x 1 seed x (zeroshot + 2 grid points)
    assert len(done) == 6
    labels = {p.parent.parent.name for p in done}
    assert labels == {"zeroshot", "croft[lambda2=0.0]", "croft[lambda2=10.0]"}
    report = (out / "report" / "report.md").read_text()
    assert "croft <- croft[lambda2=" in report
    assert (out / "report" / "accuracy.csv").is_file()
    assert (out / "report" / "detection_energy.tex").is_file()
    assert (out / "report" / "plots" / "energy_distributions.png").is_file()
    if importlib.util.find_spec("pandas") is not None:  # results.csv pivots to every table
        from report_pivot import assert_results_csv_reproduces_report

        assert assert_results_csv_reproduces_report(out / "report") >= 3
    rec = collect_runs(out)[0]
    assert set(rec["detection"]) == {"textures", "objects"}
    assert rec["val_accuracy"] is not None
    printed = capsys.readouterr().out
    assert "accuracy:" in printed and "6 runs" in printed
    # the verdict as the report computes it, with the small-n caution (2 pairs, 2 domains)
    verdict = printed.split("\nverdict:\n", 1)[1]
    acc = next(x for x in verdict.splitlines() if x.startswith("- held-out accuracy: croft vs"))
    assert "n=2 in 2 held-out domains (caution: only 2 pairs in 2 clusters" in acc
    # kill simulation: one run lost its metrics.json; rerun recomputes it alone
    victim = done[2]
    victim.unlink()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--no-report"]) == 0
    assert victim.is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


def test_selection_rules_on_fixed_records() -> None:
    def rec(label, dom, val, test):
        return {
            "label": label,
            "test_domain": dom,
            "seed": 1,
            "val_accuracy": val,
            "accuracy": test,
            "detection": {},
        }

    records = [
        rec("croft[l=1]", "a", 0.9, 0.5),
        rec("croft[l=2]", "a", 0.8, 0.7),
        rec("zeroshot", "a", 0.6, 0.6),
    ]
    by_val = {r["label"]: r for r in select_records(records)}
    assert by_val["croft"]["selected_from"] == "croft[l=1]" and by_val["croft"]["accuracy"] == 0.5
    assert by_val["zeroshot"]["accuracy"] == 0.6
    oracle = {r["label"]: r for r in select_records(records, "oracle")}
    assert oracle["croft (oracle)"]["selected_from"] == "croft[l=2]"
    with pytest.raises(CroftError, match="selection rule"):
        select_records(records, "test")


def test_grid_expansion_and_config_errors(world, tmp_path) -> None:
    cfg = load_experiment(world / "exp.yaml", ["shots=3", "methods.1.options.lambda1=[1, 2]"])
    assert cfg.shots == 3
    labels = [m.label for m in expand_methods(cfg.methods)]
    assert "croft[lambda1=2,lambda2=10.0]" in labels and len(labels) == 5
    assert Path(cfg.data.root).is_absolute()
    bad = tmp_path / "bad.yaml"
    bad.write_text((world / "exp.yaml").read_text() + "shotz: 4\n")
    with pytest.raises(CroftError, match="unknown key.s. shotz"):
        load_experiment(bad)
    with pytest.raises(CroftError, match="sampling 'random'"):
        load_experiment(world / "exp.yaml", ["sampling=random"])
    with pytest.raises(CroftError, match="expected KEY=VALUE"):
        load_experiment(world / "exp.yaml", ["shots"])
    with pytest.raises(CroftError, match="does not exist"):
        load_experiment(tmp_path / "none.yaml")


def _run(cfg: Path, out: Path, *extra: str) -> int:
    return main(["run", str(cfg), "--out", str(out), "--quiet", "--no-report", *extra])


def test_changed_settings_never_return_stale_results(world, tmp_path, capsys) -> None:
    """A rerun with other shots (or another non-grid setting) into the same --out refuses
    with one line; --fresh recomputes; the same settings resume without recomputing."""
    cfg, out = world / "exp.yaml", tmp_path / "runs"
    one = ["--set", "methods=[{label: zeroshot, method: zeroshot}]", "--set", "held_out=[art]"]
    assert _run(cfg, out, *one) == 0
    (rec,) = collect_runs(out)
    first = rec["accuracy"], rec["run_key"]
    metrics = out / "runs" / "zeroshot" / "art_seed1" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    capsys.readouterr()
    for change in ("shots=3", "templates=['a drawing of a {}.']", "ood_transform=train"):
        assert _run(cfg, out, *one, "--set", change) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--fresh" in err[0] and "another --out" in err[0], err
        assert f"another {change.split('=')[0]}" in err[0]
        assert metrics.stat().st_mtime_ns == stamp  # nothing recomputed, nothing served
    # --fresh: recomputed with the new setting, and a new run key
    assert _run(cfg, out, *one, "--set", "shots=3", "--fresh") == 0
    (rec,) = collect_runs(out)
    assert rec["run_key"] != first[1]
    key = json.loads((metrics.parent / "run_key.json").read_text())
    assert key["run_key"] == rec["run_key"] and key["config"]["settings"]["shots"] == 3
    # same settings again: resumed, nothing recomputed
    stamp = metrics.stat().st_mtime_ns
    assert _run(cfg, out, *one, "--set", "shots=3") == 0
    assert metrics.stat().st_mtime_ns == stamp
    # settings outside the run key (device, batch size, seeds list) do not refuse
    assert _run(cfg, out, *one, "--set", "shots=3", "--set", "batch_size=8") == 0


def test_runs_keep_heads_selection_and_dry_run(world, tmp_path, capsys) -> None:
    import croft

    cfg, out = world / "exp.yaml", tmp_path / "runs"
    one = ["--set", "held_out=[photo]", "--set", "methods.1.options.epochs=1"]
    assert _run(cfg, out, *one, "--dry-run") == 0
    printed = capsys.readouterr().out
    assert printed.count("new ") == 3 and "3 runs planned" in printed and not out.exists()
    assert _run(cfg, out, *one) == 0
    for rec in read_runs(out):
        assert "selection" in rec.metrics and rec.metrics["head"] == "head"
        assert rec.head_dir is not None and rec.scores()["id/energy"].shape == (18,)
    rec = next(r for r in read_runs(out) if r.label.startswith("croft["))
    head = croft.load(rec.head_dir)
    assert head is not None
    (out / "runs" / "zeroshot" / "photo_seed1" / "metrics.json").unlink()
    capsys.readouterr()
    assert _run(cfg, out, *one, "--dry-run") == 0
    printed = capsys.readouterr().out
    assert printed.count("reuse ") == 2 and printed.count("resume ") == 1
    assert _run(cfg, out, *one, "--set", "shots=1", "--dry-run") == 0
    assert "refuse" in capsys.readouterr().out


def test_print_config_and_explicit_grid(world, tmp_path, capsys) -> None:
    import yaml

    sets = ["--set", "methods.1.options={epochs: 2}", "--set", "methods.1.grid={lambda2: [1, 5]}"]
    assert main(["run", str(world / "exp.yaml"), "--print-config", *sets]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["protocol"] == "lodo" and doc["shots"] == 2
    assert doc["methods"][1]["grid"] == {"lambda2": [1, 5]}
    cfg = load_experiment(world / "exp.yaml", [s for s in sets if s != "--set"])
    assert [m.label for m in expand_methods(cfg.methods)][1:] == [
        "croft[lambda2=1]",
        "croft[lambda2=5]",
    ]
    assert not tmp_path.joinpath("runs").exists()


@pytest.mark.slow  # two fresh processes (~40 s); the union order is unit-tested fast
def test_rerun_in_a_new_process_resumes_oodbench_runs(world, tmp_path) -> None:
    """With an OoD-Bench layout one image is a source image of one task and a test image
    of another; the union extraction must not depend on the string-hash seed, or a rerun in
    a new process would see other data and refuse (it did)."""
    import os
    import shutil
    import subprocess
    import sys

    from croft.data import generate_lodo_splits

    root = tmp_path / "bench"
    shutil.copytree(world / "data", root / "images")
    generate_lodo_splits(root, val_fraction=0.34, seed=1)
    from croft.backbones import TINY_VIT

    cfg = tmp_path / "bench.yaml"
    cfg.write_text(
        f"""
name: bench
backbone: openclip:{TINY_VIT}:{world / "tiny.pt"}
data: {{root: {root}, layout: oodbench}}
held_out: [art, photo]
shots: 2
views: 2
seeds: [1]
scores: [energy]
batch_size: 16
methods:
  - {{label: zeroshot, method: zeroshot}}
"""
    )
    out = tmp_path / "runs"
    argv = [sys.executable, "-m", "croft", "run", str(cfg), "--out", str(out), "--quiet"]
    argv.append("--no-report")
    stamps = None
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        now = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}
        assert len(now) == 2
        assert stamps is None or now == stamps
        stamps = now


def test_run_records_read_like_the_report(world, tmp_path) -> None:
    """RunRecord.as_dict() gives what croft.report.collect_runs gives, run for run."""
    out = tmp_path / "runs"
    one = ["--set", "held_out=[art]", "--set", "methods.1.options.epochs=1"]
    assert _run(world / "exp.yaml", out, *one) == 0
    assert [r.as_dict() for r in read_runs(out)] == collect_runs(out)


def test_run_experiment_chooses_its_threads_and_restores_them(monkeypatch) -> None:
    """The runner runs on CROFT_THREADS, else half the CPUs (at least 1), whatever the
    caller's setting, and restores the caller's after."""
    import torch

    import croft.experiments.protocols as P

    seen = []
    monkeypatch.setattr(P, "_run_experiment", lambda *a, **k: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("CROFT_THREADS", "3")
        P.run_experiment(None, "unused")  # type: ignore[arg-type]
        monkeypatch.delenv("CROFT_THREADS")
        torch.set_num_threads(2)
        for cpus in (2, 1, 8):
            monkeypatch.setattr(P.os, "cpu_count", lambda cpus=cpus: cpus)
            P.run_experiment(None, "unused")  # type: ignore[arg-type]
            assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert seen == [3, 1, 1, 4]


def test_an_option_added_later_keeps_older_run_keys_at_its_neutral_value() -> None:
    """lr_scaling joined TrainConfig after run folders existed: at "none" (what every older
    run computed) it is not in the key, so those folders are reused, not refused."""
    from croft.experiments.runkey import config_document

    old = {"lr": 0.002, "epochs": 30}
    same = config_document({}, "ce_adapter", {**old, "lr_scaling": "none"}, "photo", 1)
    assert same == config_document({}, "ce_adapter", old, "photo", 1)
    scaled = config_document({}, "ce_adapter", {**old, "lr_scaling": "logit_scale"}, "photo", 1)
    assert scaled != same and scaled["options"]["lr_scaling"] == "logit_scale"
