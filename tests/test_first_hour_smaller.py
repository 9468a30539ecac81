"""A newcomer's first hour (issue 25), more small items: ``croft list backbones`` names the
architectures, ``croft run --dry-run`` estimates the fit time per method from the
benchmarks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from croft.cli.main import main
from test_first_hour import CONFIGS, _data_tree

ROOT = Path(__file__).resolve().parents[1]


def test_list_backbones_names_the_architectures(capsys) -> None:  # noqa: ANN001
    from croft.backbones import TINY_VIT
    from croft.backbones.archs import list_architectures

    assert main(["list", "backbones"]) == 0
    out = capsys.readouterr().out
    assert "openclip:ARCH:PATH" in out and "hf:DIR" in out and "openai:PATH" in out
    assert "open_clip architectures" in out
    # croft's own family: the tiny ViT, and the world's tiny CLIP once a test registered it
    assert re.search(rf"croft \(\d+\): .*{re.escape(TINY_VIT)}", out), out
    lines = out.splitlines()
    assert len(lines) < 40 and all(len(line) < 200 for line in lines[:-1])  # concise
    if "ViT-B-16" in list_architectures():  # open_clip's shipped configs are installed
        vit = next(line for line in lines if line.strip().startswith("ViT ("))
        assert "ViT-B-16, ViT-B-32" in vit and "ViT-L-14" in vit and "(+" in vit
        assert re.search(r"  RN \(\d+\): RN50, RN50x4", out)
        assert "-quickgelu" not in out.replace("NAME-quickgelu", "")
        assert "roberta-ViT-B-32*" in out  # a hub text tower, marked
    assert main(["list", "backbones", "-v"]) == 0
    every = capsys.readouterr().out
    for name in list_architectures():
        if not name.endswith("-quickgelu"):
            assert re.search(rf"[ :,]{re.escape(name)}\*?(,|$)", every, re.M), name


def test_fit_cost_table_cites_benchmarks_md() -> None:
    from croft.experiments.estimate import FIT_COSTS, fit_seconds

    bench = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    for name, cost in FIT_COSTS.items():
        for number in re.findall(r"(\d+(?:\.\d+)?) (?:s|ms)\b", cost.basis):
            assert number in bench, (name, number)
    croft = FIT_COSTS["croft"]
    assert croft.seconds == pytest.approx(20.9e-3 * 11 * 30)
    assert fit_seconds("croft", {"epochs": 3}) == pytest.approx(croft.seconds / 10)
    assert fit_seconds("croft", {"variant": "paper"}) == FIT_COSTS["croft/paper"].seconds
    assert fit_seconds("zeroshot", {}) == 0.0 and fit_seconds("no_such_method", {}) is None
    import croft.methods as M

    assert {e.name for e in M.METHODS} <= set(FIT_COSTS)  # every built-in method has a figure


def test_dry_run_estimates_the_time_per_method(tmp_path, capsys) -> None:  # noqa: ANN001
    from croft.experiments.estimate import FIT_COSTS, format_seconds

    data = _data_tree(tmp_path / "datasets")
    argv = ["run", str(CONFIGS / "setup2_pacs.yaml"), "--set", f"data_root={data}", "--dry-run",
            "--out", str(tmp_path / "out"), "--seeds", "1",
            "--methods", "croft,croft_paper,zeroshot,coop"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = {ln.split(":")[0].strip(): ln for ln in out.splitlines() if ln.startswith("  ")}
    per_fit = format_seconds(FIT_COSTS["croft"].seconds)
    assert rows["croft"].startswith("  croft: 20 runs, 20 to fit, ~")
    assert f"(~{per_fit} a fit)" in rows["croft"]
    assert f"(~{format_seconds(FIT_COSTS['croft/paper'].seconds)} a fit)" in rows["croft_paper"]
    assert "~0 s" in rows["zeroshot"] and "*" in rows["coop"]
    total = next(ln for ln in out.splitlines() if "estimated fit time" in ln)
    assert "benchmark machine" in total and "an estimate" in total and "BENCHMARKS.md" in total
    seconds = 20 * FIT_COSTS["croft"].seconds + 16 * FIT_COSTS["croft/paper"].seconds
    seconds += 4 * FIT_COSTS["coop"].seconds
    assert total.startswith(f"~{format_seconds(seconds)} ")
    assert "tiny text tower" in out  # the prompt learners' caveat
    # a run-level epochs setting scales the epoch-based figures
    assert main([*argv, "--set", "defaults.epochs=3"]) == 0
    rows = {ln.split(":")[0].strip(): ln for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("  ")}  # fmt: skip
    assert f"(~{format_seconds(FIT_COSTS['croft'].seconds / 10)} a fit)" in rows["croft"]
