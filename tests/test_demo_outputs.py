"""Demos are configs (issue 21): ``croft demo --synthetic`` and ``croft demo`` write the
files ``croft run`` writes for the same experiment (one runner, one report), and ``croft
diagnose`` reads their output folders as a whole."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

import croft.protocols.world_demo as wd
from croft.cli.main import main
from croft.protocols import demo

SMALL = {"dim": 16, "classes": 3, "unseen_classes": 2, "domains": 2, "shots": 4}
SMALL_SIM = {**SMALL, "test_per_class": 10}
FAST = ["--probes", "4", "--power-iters", "5", "--quiet", "--no-plots"]


def _files(out: Path) -> set[str]:
    """Every file below ``out`` (the per-run and report files; diagnose/ left out)."""
    return {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.relative_to(out).parts[0] != "diagnose"
    }


def test_synthetic_demo_writes_what_croft_run_writes_and_diagnose_reads_it(
    tmp_path, capsys
) -> None:
    from croft.simulate import SimConfig

    out = tmp_path / "demo"
    res = demo.run_synthetic_demo(out, seeds=(1,), sim=SimConfig(**SMALL_SIM), progress=False)
    sets = [f"simulator.{k}={v}" for k, v in SMALL_SIM.items()]
    argv = ["run", str(demo.DEMO_CONFIG), "--set", "seeds=[1]", "--quiet"]
    argv += [x for s in sets for x in ("--set", s)]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    files = _files(out)
    assert files == _files(tmp_path / "run")
    for name in ("results.csv", "runs.csv", "report.md", "report.html"):
        assert f"report/{name}" in files, name
    assert "config.resolved.json" in files and any(f.startswith("report/plots/") for f in files)
    assert len([f for f in files if f.endswith("/metrics.json")]) == res["runs"] == 4 * 2
    resolved = json.loads((out / "config.resolved.json").read_text())
    assert resolved["protocol"] == "synthetic" and resolved["simulator"]["dim"] == 16
    # the same runs: equal run keys, equal numbers
    for f in (f for f in files if f.endswith("/run_key.json")):
        ours, theirs = (json.loads((d / f).read_text()) for d in (out, tmp_path / "run"))
        assert ours["run_key"] == theirs["run_key"], f
    # the demo's summary is the report's: the tables croft run prints
    for name, (_header, rows) in res["tables"].items():
        assert f"\n{name}:\n" in printed and all(r[0] in printed for r in rows)
    assert main(["diagnose", str(out), *FAST]) == 0
    written = sorted((out / "diagnose").rglob("diagnostics.json"))
    assert [p.parent.name for p in written] == ["domain_0_seed1", "domain_1_seed1"]
    doc = json.loads(written[0].read_text())
    assert doc["task"] == {"held_out": "domain_0", "seed": 1}
    assert sorted(doc["heads"]) == ["ce_adapter", "croft_official", "croft_paper"]


def test_cli_synthetic_demo_prints_the_report(tmp_path, capsys, monkeypatch) -> None:
    from croft.simulate import SimConfig

    run = functools.partial(demo.run_synthetic_demo, sim=SimConfig(**SMALL_SIM))
    monkeypatch.setattr(demo, "run_synthetic_demo", run)
    out = tmp_path / "d"
    assert main(["demo", "--synthetic", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "\naccuracy:\n" in text and "\nverdict:\n" in text and "- croft_official: " in text
    assert f"report: {out / 'report' / 'report.md'}" in text
    assert len(list((out / "runs").rglob("metrics.json"))) == 4 * 2 * demo.SEEDS


@pytest.mark.usefixtures("isolated_cache")
def test_world_demo_writes_what_croft_run_writes(tmp_path, capsys) -> None:
    """The world demo (--core, one style, one seed, the small study world) and ``croft run``
    of the config it resolved write the same files with the same run keys; ``croft
    diagnose`` reads the demo's folder."""
    out = tmp_path / "demo"
    wd.run_world_demo(
        out, seeds=(1,), full=False, progress=False, preset="study-v3-tiny", held_out=("photo",)
    )
    again = tmp_path / "run"
    assert main(["run", str(out / "config.resolved.json"), "--out", str(again), "--quiet"]) == 0
    capsys.readouterr()
    files = _files(out)
    assert files == _files(again)
    assert {"config.resolved.json", "report/results.csv", "report/report.html"} <= files
    keys = [f for f in files if f.endswith("/run_key.json")]
    assert len(keys) == 15
    for f in keys:
        ours, theirs = (json.loads((d / f).read_text()) for d in (out, again))
        assert ours["run_key"] == theirs["run_key"], f
    assert main(["diagnose", str(out), *FAST]) == 0
    doc = json.loads((out / "diagnose" / "photo_seed1" / "diagnostics.json").read_text())
    assert doc["task"] == {"held_out": "photo", "seed": 1} and len(doc["heads"]) == 3


def test_the_demo_method_lists_live_in_the_packaged_configs() -> None:
    """One list per demo: the rows (and the world demo's subjects) are the YAML's; no
    demo module builds rows or holds a list (or tuple) of row labels."""
    import ast

    import yaml

    syn = yaml.safe_load(demo.DEMO_CONFIG.read_text())
    assert [m.label for m in demo.demo_methods()] == [m["label"] for m in syn["methods"]]
    world = yaml.safe_load(wd.DEMO_CONFIG.read_text())
    core = world["demo"]["core"]
    assert [m.label for m in wd.demo_methods(full=False)] == core
    assert set(world["demo"]["subjects"]) <= {m["label"] for m in world["methods"]}
    labels = {m["label"] for m in syn["methods"]} | {m["label"] for m in world["methods"]}
    for module in (demo, wd):
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and len(node.elts) > 1:
                values = [getattr(e, "value", None) for e in node.elts]
                assert not set(values) <= labels, (module.__name__, node.lineno, values)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("MethodRun", "MethodGrid"), module.__name__


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("shots", 4, "shots applies to the image protocols only"),
        ("backbone", "openclip:RN50:/w.pt", "backbone applies to the image protocols only"),
        ("held_out", ["domain_9"], "held_out 'domain_9': use one of domain_0"),
        ("simulator", {"dims": 3}, "simulator: unknown key"),
    ],
)
def test_synthetic_config_refuses_what_does_not_apply(key, value, match) -> None:  # noqa: ANN001
    from croft.errors import CroftError
    from croft.experiments.loading import build_config, read_document

    doc = {**read_document(demo.DEMO_CONFIG), key: value}
    with pytest.raises(CroftError, match=match):
        build_config(doc, "demo").check()


def test_croft_run_checks_and_plans_the_synthetic_config(tmp_path, capsys) -> None:
    assert main(["run", str(demo.DEMO_CONFIG), "--check"]) == 0
    assert "synthetic_demo: OK" in capsys.readouterr().out
    assert main(["run", str(demo.DEMO_CONFIG), "--dry-run", "--out", str(tmp_path / "o")]) == 0
    assert "48 runs planned" in capsys.readouterr().out and not (tmp_path / "o").exists()
