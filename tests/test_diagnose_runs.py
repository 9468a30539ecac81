"""``croft diagnose`` on run folders written by ``croft run`` (no feature files): a tiny
λ2 sweep on a generated ``study-tiny`` world, diagnosed through the CLI and checked
against the diagnose API on the very feature sets the fits read (captured while
``croft run`` ran), plus the one-line errors."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import croft.experiments.runner as runner
from croft.cli.main import main
from croft.diagnose import DiagnoseOptions, diagnose_heads
from croft.experiments import diagnose_runs
from croft.methods import load_head
from croft.world import generate_world, tiny_clip_checkpoint

LAMBDA2 = (0.0, 10.0, 100.0)
LABELS = [f"croft[lambda2={v}]" for v in LAMBDA2]
FAST = ["--probes", "4", "--power-iters", "5", "--quiet"]
OPTIONS = DiagnoseOptions(probes=4, power_iters=5)
CONFIG = """\
name: diag_runs
backbone: openclip:croft-world-rn-tiny:{weights}
data: {{root: {world}, layout: oodbench}}
held_out: [photo, pixel]
extra_targets: [sketch]
ood:
  - {{name: matched, root: "{world}/ood_classes/{{held_out}}", layout: folder,
     options: {{ood: true}}}}
  - {{name: textures, root: {world}/ood_textures, layout: folder, options: {{ood: true}}}}
shots: 2
views: 2
crop_scale: [0.7, 1.0]
seeds: [1]
scores: [energy]
methods:
  - {{label: zeroshot, method: zeroshot}}
  - {{label: croft, method: croft, options: {{epochs: 2, lr: 0.25}},
     grid: {{lambda2: [0.0, 10.0, 100.0]}}}}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):  # noqa: ANN201
    """``(out, tasks, cache)``: a finished ``croft run`` and the Task objects its fits read."""
    base = tmp_path_factory.mktemp("diag_runs")
    world = base / "world"
    generate_world(world, "study-tiny", seed=0)
    yaml = base / "exp.yaml"
    yaml.write_text(CONFIG.format(world=world, weights=tiny_clip_checkpoint("study")))
    tasks = {}
    original = runner.run_one

    def capture(run, task, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        tasks[(task.test_domain, task.seed)] = task
        return original(run, task, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CROFT_CACHE_DIR", str(base / "cache"))
        mp.setattr(runner, "run_one", capture)
        out = base / "out"
        assert main(["run", str(yaml), "--out", str(out), "--quiet", "--no-report"]) == 0
        yield out, tasks, base / "cache"


def _runs(out: Path, dom: str = "photo", labels=LABELS) -> list[str]:  # noqa: ANN001
    return [str(out / "runs" / label / f"{dom}_seed1") for label in labels]


def _cache_files(cache: Path) -> set[str]:
    return {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()}


def test_cli_diagnoses_a_lambda2_sweep_of_run_folders(study, tmp_path, capsys) -> None:
    out, tasks, cache = study
    before = _cache_files(cache)
    diag = tmp_path / "diag"
    argv = ["diagnose", *_runs(out), "--x", "lambda2", "--out", str(diag), *FAST]
    assert main(argv) == 0
    assert "hessian_trace" in capsys.readouterr().out
    assert _cache_files(cache) == before  # every feature came from the store: nothing new
    doc = json.loads((diag / "diagnostics.json").read_text())
    assert doc["x"] == "lambda2" and doc["task"] == {"held_out": "photo", "seed": 1}
    assert set(doc["heads"]) == set(LABELS)
    assert doc["sets"]["heldout"] == {"kind": "heldout", "rows": 21}
    assert {k: v["kind"] for k, v in doc["sets"].items()} == {
        "heldout": "heldout",
        "sketch": "shifted",
        "matched": "ood",
        "textures": "ood",
    }
    with open(diag / "diagnostics.csv") as fh:
        table = list(csv.DictReader(fh))
    assert {(r["head"], float(r["x"])) for r in table} == set(zip(LABELS, LAMBDA2, strict=True))
    hess = {r["group"] for r in table if r["quantity"] == "hessian_trace"}
    sources = {"train:cartoon", "train:painting", "train:pixel"}  # photo held out, sketch extra
    assert hess == sources | {"heldout", "sketch"}
    energy = {r["group"] for r in table if r["quantity"] == "energy_grad_norm_mean"}
    assert energy == sources | {"train", "heldout", "sketch", "matched", "textures"}

    # known answer: the diagnose API on the feature sets the fits themselves read
    task = tasks[("photo", 1)]
    runs = zip(LABELS, _runs(out), strict=True)
    heads = {label: load_head(Path(p) / "head") for label, p in runs}
    sets = {"heldout": task.test, "sketch": task.shifted["sketch"], **task.ood_sets}
    want, x_name = diagnose_heads(heads, task.train, sets, OPTIONS, x_key="lambda2")
    got = doc["rows"]
    assert x_name == "lambda2" and len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert {k: g[k] for k in ("head", "x", "group", "other", "quantity", "n")} == {
            k: w[k] for k in ("head", "x", "group", "other", "quantity", "n")
        }
        for k in ("value", "spread"):
            if math.isnan(w[k]):
                assert g[k] is None
            else:
                assert g[k] == pytest.approx(w[k], rel=1e-9, abs=1e-12), (g, k)


def test_library_rebuilds_the_fitted_task_and_matches_the_cli(study, tmp_path) -> None:
    out, tasks, _ = study
    from croft.experiments.diagnose_runs import load_resolved, rebuild_task

    task = rebuild_task(load_resolved(out), "pixel", 1)
    fitted = tasks[("pixel", 1)]
    for name in ("train", "test"):
        a, b = getattr(task, name), getattr(fitted, name)
        assert torch.equal(a.features, b.features) and torch.equal(a.labels, b.labels)
    assert torch.equal(task.train.domains, fitted.train.domains)
    assert task.train.features.shape[1] == 2  # both training views, view 0 diagnosed
    for name, fs in fitted.ood_sets.items():
        assert torch.equal(task.ood_sets[name].features, fs.features)
    runs = _runs(out, "pixel", LABELS[:2])
    res = diagnose_runs(runs, OPTIONS, x_key="lr")
    argv = ["diagnose", *runs, "--x", "lr", "--out", str(tmp_path / "d"), "--no-plots", *FAST]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "d" / "diagnostics.json").read_text())
    assert res.x_name == "lr" == doc["x"] and {r["x"] for r in res.rows} == {0.25}
    assert res.meta["train"]["domains"] == ["cartoon", "painting", "photo"]
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
             for r in res.rows]  # fmt: skip
    assert clean == doc["rows"]
    assert {k: doc[k] for k in res.meta} == json.loads(json.dumps(res.meta))


def _one_line_error(argv, capsys, match: str) -> None:  # noqa: ANN001
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("croft: error: ") and "\n" not in err, err
    assert match in err, err


def test_run_folder_errors(study, tmp_path, capsys) -> None:
    out, _, _ = study
    o = ["--out", str(tmp_path / "o"), *FAST]
    one = _runs(out)[:1]
    _one_line_error(
        ["diagnose", *one, *_runs(out, "pixel")[:1], *o], capsys, "different tasks (photo_seed1"
    )
    _one_line_error(["diagnose", *one, *one, *o], capsys, "given twice")
    zs = _runs(out, labels=["zeroshot"])
    _one_line_error(["diagnose", *one, *zs, *o], capsys, "a 'zeroshot' head cannot be diagnosed")
    _one_line_error(["diagnose", *one, "--set", "a=b.st", *o], capsys, "--set applies with --train")
    fit_dir = tmp_path / "fitted"
    shutil.copytree(Path(one[0]) / "head", fit_dir)
    _one_line_error(["diagnose", *one, str(fit_dir), *o], capsys, "not a run folder of 'croft run'")
    # a run folder copied without its experiment's config.resolved.json
    lone = tmp_path / "lone" / "runs" / LABELS[0] / "photo_seed1"
    shutil.copytree(one[0], lone)
    _one_line_error(["diagnose", str(lone), *o], capsys, "no config.resolved.json in")
    flat = tmp_path / "flat" / "photo_seed1"
    shutil.copytree(one[0], flat)
    _one_line_error(["diagnose", str(flat), *o], capsys, "not inside an experiment folder")
    # the experiment's config rewritten after the run: another seed list, other held-out domains
    resolved = json.loads((out / "config.resolved.json").read_text())
    shutil.copy(out / "config.resolved.json", lone.parents[2] / "config.resolved.json")
    _one_line_error(["diagnose", *one, str(lone), *o], capsys, "different experiments")
    (lone.parents[2] / "config.resolved.json").write_text(json.dumps({**resolved, "seeds": [2]}))
    _one_line_error(["diagnose", str(lone), *o], capsys, "is not a task of the experiment's")
    (lone.parents[2] / "config.resolved.json").write_text(
        json.dumps({**resolved, "held_out": ["photo"]})
    )
    _one_line_error(["diagnose", str(lone), *o], capsys, "differs from the data this run")
    (lone.parents[2] / "config.resolved.json").write_text("{not json")
    _one_line_error(["diagnose", str(lone), *o], capsys, "not valid JSON")


def test_a_run_without_a_stored_data_key_is_diagnosed_with_a_warning(study, tmp_path) -> None:
    """Nothing to check the rebuilt features against: say so, do not skip silently."""
    out, _, _ = study
    exp = tmp_path / "exp"
    src = Path(_runs(out)[0])
    dst = exp / "runs" / LABELS[0] / "photo_seed1"
    shutil.copytree(src, dst)
    shutil.copy(out / "config.resolved.json", exp / "config.resolved.json")
    key = json.loads((dst / "run_key.json").read_text())
    key.pop("data_key")
    (dst / "run_key.json").write_text(json.dumps(key))
    with pytest.warns(UserWarning, match="holds no data key"):
        res = diagnose_runs([dst], OPTIONS)
    assert res.rows


def test_a_whole_output_folder_diagnoses_each_tasks_selected_run(study, tmp_path, capsys):
    """``croft diagnose OUT_DIR``: per (held-out, seed) the run the report keeps (chosen on
    source validation), written to OUT_DIR/diagnose/<held_out>_seed<k>/."""
    from croft.report import collect_runs, select_records

    out = tmp_path / "out"
    shutil.copytree(study[0], out)
    assert main(["diagnose", str(out), "--no-plots", *FAST]) == 0
    assert "diagnosing 2 task(s), 2 run(s)" in capsys.readouterr().out
    kept = {
        (r["test_domain"], r["seed"]): r["selected_from"]
        for r in select_records(collect_runs(out))
        if r["label"] == "croft"
    }
    for dom in ("photo", "pixel"):
        doc = json.loads((out / "diagnose" / f"{dom}_seed1" / "diagnostics.json").read_text())
        assert doc["task"] == {"held_out": dom, "seed": 1}
        assert list(doc["heads"]) == [kept[(dom, 1)]]  # zero-shot (not an adapter) left out

    # --select: shell patterns on labels, e.g. the whole lambda2 grid of each task
    diag = tmp_path / "grid"
    argv = ["diagnose", str(out), "--select", "croft[*", "--out", str(diag), "--no-plots"]
    assert main([*argv, *FAST]) == 0
    for dom in ("photo", "pixel"):
        doc = json.loads((diag / f"{dom}_seed1" / "diagnostics.json").read_text())
        assert set(doc["heads"]) == set(LABELS)
    capsys.readouterr()
    _one_line_error(["diagnose", str(out), "--select", "coop*", *FAST], capsys, "matches no")
    _one_line_error(["diagnose", *_runs(out), "--select", "x", *FAST], capsys, "--select applies")
    _one_line_error(["diagnose", *_runs(out), *FAST], capsys, "give --out DIR")
