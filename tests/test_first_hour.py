"""A newcomer's first hour (issue 25): progress that reaches a log file, a ``croft fit`` that
says when it did not train, defaults that scale the learning rate, quiet pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from croft.cli.main import main
from croft.features.files import save_features
from croft.simulate import random_features

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
        "CROFT_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }


def _croft_to_file(args: list[str], tmp_path: Path, log: Path) -> int:
    """``croft ARGS > log 2>&1`` (stderr is a file, not a terminal)."""
    with log.open("w") as fh:
        res = subprocess.run(
            [sys.executable, "-m", "croft", *args],
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    return res.returncode


# ------------------------------------------------------------------ 1. progress in a log
PROGRESS_SCRIPT = """
from croft.cli.main import _install_log_handler
from croft.progress import progress
_install_log_handler()
with progress(40, "extract photo", "img", every=0.0) as bar:
    for _ in range(40):
        bar.update(1)
with progress(5, "epochs", "ep", every=1e9, leave=False) as bar:  # inner bar: no line
    for _ in range(5):
        bar.update(1)
with progress(5, "silent", "ep", enabled=False) as bar:
    bar.update(5)
"""


def test_progress_lines_reach_a_log_file(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with log.open("w") as fh:
        res = subprocess.run(
            [sys.executable, "-c", PROGRESS_SCRIPT],
            env=_env(tmp_path),
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    assert res.returncode == 0, log.read_text()
    lines = log.read_text().splitlines()
    assert lines and all(line.startswith("croft: progress: extract photo: ") for line in lines)
    assert lines[-1].startswith("croft: progress: extract photo: 40/40 (100%), ETA 0s")
    assert "img/s" in lines[-1] and len(lines) >= 2  # periodic, not only the final line


@pytest.mark.slow
def test_demo_to_a_log_file_has_progress_and_quiet_has_none(tmp_path: Path) -> None:
    log = tmp_path / "log"
    assert _croft_to_file(["demo", "--synthetic", "--out", "d"], tmp_path, log) == 0
    text = log.read_text()
    runs = [line for line in text.splitlines() if line.startswith("croft: progress: runs:")]
    assert runs and runs[-1].startswith("croft: progress: runs: 48/48 (100%)"), text[:2000]
    assert "ETA" in runs[-1] and "run/s" in runs[-1]
    quiet = tmp_path / "quiet"
    assert _croft_to_file(["demo", "--synthetic", "--out", "q", "--quiet"], tmp_path, quiet) == 0
    assert "croft: progress:" not in quiet.read_text()


# ------------------------------------------------------------------ 2. defaults that train
@pytest.fixture()
def small_files(tmp_path: Path) -> tuple[Path, Path]:
    train = save_features(random_features(4, 6, 10, 2, seed=0, scale=25.0), tmp_path / "tr.st")
    val = save_features(random_features(4, 3, 10, 1, seed=1, scale=25.0), tmp_path / "va.st")
    return train, val


def test_croft_fit_scales_the_learning_rate_by_default(small_files, tmp_path, capsys) -> None:  # noqa: ANN001
    train, val = small_files
    argv = ["fit", "--train", str(train), "--val", str(val), "--method", "ce_adapter", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "a"), "--set", "epochs=3"]) == 0
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    hist = json.loads((tmp_path / "a" / "head.json").read_text())["history"]
    assert cfg["lr_scaling"] == "logit_scale"
    peak = max(h["lr"] for h in hist)  # lr 0.002 x (100/25)^2, the cosine's first epoch
    assert peak == pytest.approx(0.002 * 16.0 * 0.5 * (1 + __import__("math").cos(0.0)), rel=1e-6)
    assert main([*argv, "--out", str(tmp_path / "b"), "--set", "lr_scaling=none"]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["lr_scaling"] == "none"
    capsys.readouterr()


def test_croft_fit_warns_when_it_keeps_the_initialisation(small_files, tmp_path, capsys) -> None:  # noqa: ANN001
    train, val = small_files
    # lr 0: nothing moves, so the selected model is the initialisation
    argv = ["fit", "--train", str(train), "--val", str(val), "--method", "croft", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "h"), "--set", "lr=0", "--set", "epochs=2"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "initialisation" in line]
    assert len(err) == 1 and err[0].startswith("croft: warning: croft: the selected model is")
    assert "select_epoch=best_after_warmup" in err[0] and "--set lr" in err[0]


def test_croft_fit_without_val_warns_there_is_no_threshold(small_files, tmp_path, capsys) -> None:  # noqa: ANN001
    train, _ = small_files
    argv = ["fit", "--train", str(train), "--method", "ce_adapter", "--quiet", "--set", "epochs=1"]
    assert main([*argv, "--out", str(tmp_path / "h")]) == 0
    err = capsys.readouterr().err
    assert "fitted without --val: the saved head has no OOD threshold" in err
    assert "ood_threshold" not in json.loads((tmp_path / "h" / "head.json").read_text())


# ------------------------------------------------------------------ 3. run-level settings
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")


def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 30, 200)).save(path)


def _data_tree(root: Path) -> Path:
    """One data folder the PACS preset reads whole: PACS/ (oodbench) beside dtd/,
    food-101/ and caltech-101/ in CoOp's layout."""
    from croft.data import generate_lodo_splits

    for dom in PACS_DOMAINS:
        for cls in PACS_CLASSES:
            for k in range(3):
                _png(root / "PACS" / "images" / dom / cls / f"{k}.png")
    generate_lodo_splits(root / "PACS", val_fraction=0.34, seed=1)
    coop = {
        "dtd": ("images", "split_zhou_DescribableTextures.json", ["banded", "woven"]),
        "food-101": ("images", "split_zhou_Food101.json", ["pizza", "sushi"]),
        "caltech-101": ("101_ObjectCategories", "split_zhou_Caltech101.json", ["ant", "chair"]),
    }
    from croft.data.coop import CALTECH101_DROPPED_FOR_PACS

    coop["caltech-101"][2].extend(sorted(CALTECH101_DROPPED_FOR_PACS))  # the filter's classes
    for folder, (images, split_file, classes) in coop.items():
        entries = []
        for label, cls in enumerate(classes):
            for i in range(3):
                _png(root / folder / images / cls / f"image_{i:04d}.jpg")
                entries.append([f"{cls}/image_{i:04d}.jpg", label, cls])
        split = {"train": entries[0::3], "val": entries[1::3], "test": entries[2::3]}
        (root / folder / split_file).write_text(json.dumps(split))
    return root


def test_one_data_root_makes_the_pacs_preset_check_pass(
    tmp_path, tiny_ckpts, capsys, monkeypatch
) -> None:  # noqa: ANN001, E501
    from croft.backbones import TINY_VIT

    data = _data_tree(tmp_path / "datasets")
    preset = str(CONFIGS / "setup2_pacs.yaml")
    local = ["--set", f"backbone=openclip:{TINY_VIT}:{tiny_ckpts[0]}", "--set", "device=cpu"]
    assert main(["run", preset, "--check", "--set", f"data_root={data}", *local]) == 0
    assert capsys.readouterr().out.strip().endswith("setup2_pacs: OK")
    monkeypatch.setenv("CROFT_DATA", str(data))  # the environment instead of --set
    assert main(["run", preset, "--check", *local]) == 0
    capsys.readouterr()
    monkeypatch.setenv("CROFT_DATA", str(tmp_path / "elsewhere"))
    assert main(["run", preset, "--check", *local]) == 1
    out = capsys.readouterr().out
    for i, name in enumerate(("dtd", "food101", "caltech101")):  # each line names its key
        assert f"ood {name} ({tmp_path / 'elsewhere'}, layout coop; fix ood.{i}.root or " in out


def test_methods_and_seeds_filter_a_run_and_dry_run_counts_per_method(tmp_path, capsys) -> None:  # noqa: ANN001
    data = _data_tree(tmp_path / "datasets")
    argv = ["run", str(CONFIGS / "setup2_pacs.yaml"), "--set", f"data_root={data}", "--dry-run"]
    argv += ["--out", str(tmp_path / "out")]
    assert main([*argv, "--methods", "Croft,zeroshot", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("new ")]
    assert len(lines) == 4 * (5 + 1)  # 4 held-out domains x (croft's 5 lambda2 + zeroshot)
    assert all("_seed2" in line and ("/croft[" in line or "/zeroshot/" in line) for line in lines)
    assert "  croft: 20 runs" in out and "  zeroshot: 4 runs" in out
    assert main([*argv, "--methods", "crof"]) == 2
    err = capsys.readouterr().err
    assert "no method labelled 'crof' (did you mean 'croft'?)" in err


def test_run_level_defaults_reach_every_method_that_has_the_option(capsys) -> None:  # noqa: ANN001
    from croft.experiments import load_experiment

    preset = CONFIGS / "setup2_pacs.yaml"
    cfg = load_experiment(preset, ["defaults.lr_scaling=logit_scale", "defaults.epochs=3"])
    rows = {m.label: m.options for m in cfg.methods}
    assert rows["zeroshot"] == {}  # zero-shot trains nothing: it has neither option
    for label in ("ce_adapter", "croft", "croft_paper", "clip_adapter", "coop"):
        assert rows[label]["lr_scaling"] == "logit_scale" and rows[label]["epochs"] == 3
    assert main(["run", str(preset), "--set", "lr_scaling=logit_scale", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown key(s) lr_scaling; lr_scaling is a method option" in err
    assert "--set defaults.lr_scaling=" in err and len(err.splitlines()) == 1
    assert main(["run", str(preset), "--set", "defaults.lamda2=1", "--print-config"]) == 2
    assert "defaults.lamda2 is an option of none of the listed methods" in capsys.readouterr().err


# ------------------------------------------------------------------ small items
def test_broken_pipe_exits_quietly(capsys) -> None:  # noqa: ANN001
    import argparse

    from croft.cli.main import _dispatch

    def writes_into_a_closed_pipe(args: argparse.Namespace) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    assert _dispatch(argparse.Namespace(func=writes_into_a_closed_pipe)) == 141
    assert capsys.readouterr().err == ""


def test_croft_eval_piped_to_head_prints_no_error(small_files, tmp_path) -> None:  # noqa: ANN001
    train, val = small_files
    fit = ["fit", "--train", str(train), "--method", "zeroshot", "--quiet"]
    assert main([*fit, "--out", str(tmp_path / "h")]) == 0
    cmd = f'"{sys.executable}" -m croft eval "{tmp_path / "h"}" --id "{val}" | head -1'
    res = subprocess.run(["bash", "-c", cmd], env=_env(tmp_path), capture_output=True, text=True)
    assert res.returncode == 0 and "Broken pipe" not in res.stderr and res.stdout.strip()


def test_did_you_mean_and_case_insensitive_methods(small_files, tmp_path, capsys) -> None:  # noqa: ANN001
    import croft.methods as M
    from croft.errors import CroftError

    train, val = small_files
    with pytest.raises(CroftError, match=r"unknown option 'lamda2' \(did you mean 'lambda2'\?\)"):
        M.make_config(M.METHODS.get("croft").config_cls, {"lamda2": 1.0})
    unknown = r"unknown method 'crofts'; known: .*; did you mean 'croft'\?$"
    with pytest.raises(CroftError, match=unknown):
        M.METHODS.get("crofts")
    assert M.METHODS.get("CE_Adapter") is M.METHODS.get("ce_adapter")
    argv = ["fit", "--train", str(train), "--method", "ZeroShot", "--out", str(tmp_path / "z")]
    assert main(argv) == 0
    capsys.readouterr()


def test_eval_with_an_ood_file_as_id_says_use_ood(tmp_path, capsys) -> None:  # noqa: ANN001
    import dataclasses

    import torch

    fs = random_features(4, 6, 10, 1, seed=0, scale=25.0)
    ood = dataclasses.replace(
        fs, labels=torch.full_like(fs.labels, -1), class_names=[], text_features=None
    )
    train = save_features(fs, tmp_path / "train.safetensors")
    ood_file = save_features(ood, tmp_path / "textures.safetensors")
    fit = ["fit", "--train", str(train), "--method", "zeroshot", "--quiet"]
    assert main([*fit, "--out", str(tmp_path / "h")]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "h"), "--id", str(ood_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "this is an OOD feature file" in err
    assert "--ood NAME=FILE" in err


def test_list_heads_and_layouts_print_plain_whole_sentences(capsys) -> None:  # noqa: ANN001
    assert main(["list", "heads"]) == 0
    heads = capsys.readouterr().out.splitlines()[1:]
    assert heads and all("``" not in line and line.rstrip().endswith(".") for line in heads)
    assert any(line.split()[0] == "clip_adapter" and "bias-free linears." in line for line in heads)
    assert main(["list", "layouts"]) == 0
    oodbench = next(ln for ln in capsys.readouterr().out.splitlines() if "oodbench" in ln)
    assert "[images/]DOMAIN/CLASS/ + test_on_DOMAIN.json" in oodbench


def test_readme_names_where_the_demo_writes_its_report() -> None:
    from croft.cli.main import build_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    out = build_parser().parse_args(["demo"]).out  # the default --out
    assert out == "croft-out/demo" and f"`{out}/report/`" in readme
    src = (Path(SRC) / "croft" / "protocols" / "world_demo.py").read_text()
    assert 'inside(out, "report")' in src  # where the report really goes


def test_help_options_give_every_shared_option_a_meaning(capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit):
        main(["fit", "--method", "croft", "--help-options"])
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "best_after_warmup" in rows["select_epoch"] and not rows["select_epoch"].endswith("-")
    assert "< 0: the backbone's" in rows["logit_scale"]


def test_data_check_guesses_the_layout(tmp_path, capsys) -> None:  # noqa: ANN001
    data = _data_tree(tmp_path / "datasets")
    for k in range(2):
        _png(tmp_path / "flat" / "cat" / f"{k}.png")
        _png(tmp_path / "bed" / "photo" / "cat" / f"{k}.png")
    main(["data", "check", str(data / "PACS")])
    assert f"layout oodbench: {data / 'PACS'}" in capsys.readouterr().out
    assert main(["data", "check", str(data / "dtd")]) == 2  # coop, but which dataset
    assert "layout 'coop' needs dataset= (--dataset)" in capsys.readouterr().err
    for root, layout in ((tmp_path / "flat", "folder"), (tmp_path / "bed", "domainbed")):
        assert main(["data", "check", str(root)]) == 0
        assert f"layout {layout}: {root}" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["data", "check", str(tmp_path / "empty")]) == 2
    assert "cannot tell its layout" in capsys.readouterr().err
