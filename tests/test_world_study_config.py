"""configs/world_study.yaml and what it needs from ``croft run``: per-fold open sets
(``{held_out}`` in an ``ood`` root), extra target domains, the crop-scale key; checked on
a generated ``study-tiny`` world (the config itself is validated, never run in full)."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from croft.cli.main import main
from croft.errors import CroftError
from croft.experiments import load_experiment
from croft.world import generate_world, tiny_clip_checkpoint

pytestmark = pytest.mark.usefixtures("isolated_cache")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "world_study.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("w") / "world_study"
    generate_world(root, "study-tiny", seed=0)
    return root


def _study_config(world: Path, tmp_path: Path, **replace: str) -> Path:
    """configs/world_study.yaml pointed at ``world`` and the shipped v2 tiny CLIP."""
    text = CONFIG.read_text().replace("../world_study", str(world))
    weights = "../src/croft/assets/world_v2/open_clip_model.safetensors"
    text = text.replace(weights, str(tiny_clip_checkpoint("study")))
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "world_study.yaml"
    path.write_text(text)
    return path


def test_study_config_matches_the_design(world, tmp_path, capsys) -> None:
    cfg = load_experiment(_study_config(world, tmp_path))
    assert cfg.held_out == ["photo", "painting", "cartoon", "pixel"]
    assert cfg.extra_targets == ["sketch"] and cfg.seeds == [1, 2, 3, 4, 5]
    assert (cfg.shots, cfg.views, cfg.val_per_class) == (16, 8, 0)
    assert cfg.train_view().crop_scale == (0.7, 1.0)
    assert [o.name for o in cfg.ood] == ["matched", "textures", "pooled"]
    assert cfg.ood[0].per_fold and not cfg.ood[1].per_fold
    assert set(cfg.scores) == {"energy", "knn", "mcm", "msp", "max_logit"}
    rows = {m.label: m for m in cfg.methods}
    assert list(rows)[:3] == ["zeroshot", "linear_probe", "ce_adapter"]
    s = 17.994251  # the v2 tiny CLIP's logit scale: the scale-aware rule's numbers
    sgd = [m * 0.002 * (100 / s) ** 2 for m in (1, 4, 16)]  # {1, 4, 16} x 0.002 x (100/s)^2
    for label in ("ce_adapter", "croft", "croft_paper", "croft_generator_only", "clip_adapter"):
        assert rows[label].grid["lr"] == pytest.approx(sgd, rel=1e-5), label
        assert rows[label].options["epochs"] == 30, label  # the same step budget
    adamw = [m * 0.001 * (100 / s) for m in (1, 4, 16)]  # AdamW: x (100/s)
    assert rows["tip_adapter_f"].grid["lr"] == pytest.approx(adamw, rel=2e-5)  # s rounded: 17.994
    # the design's grids: lambda1 and lambda2 include 0; the paper variant's temperature
    assert rows["croft"].grid["lambda1"] == [0.0, 5.0, 15.0]
    assert rows["croft"].grid["lambda2"] == [0.0, 1.0, 10.0, 100.0, 1000.0]
    assert rows["croft_paper"].grid["lambda2"] == [0.0, 0.01, 0.1, 1.0, 10.0]
    assert rows["croft_paper"].grid["energy_temperature"] == pytest.approx([1.0, 1 / s], rel=1e-5)
    assert rows["croft_generator_only"].options["lambda2"] == 0.0
    assert rows["croft_penalty_only"].options["wccf"] is False
    assert main(["run", str(_study_config(world, tmp_path)), "--check"]) == 0
    assert "world_study: OK" in capsys.readouterr().out


def test_check_names_a_missing_per_fold_open_set(world, tmp_path, capsys) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(world, broken)
    shutil.rmtree(broken / "ood_classes" / "pixel")
    assert main(["run", str(_study_config(broken, tmp_path)), "--check"]) == 1
    out = capsys.readouterr()
    assert "ood matched" in out.out + out.err and "ood_classes/pixel" in out.out + out.err


def test_bad_per_fold_and_extra_target_keys(world, tmp_path) -> None:
    with pytest.raises(CroftError, match="needs a name"):
        load_experiment(_study_config(world, tmp_path, **{"name: matched, ": ""}))
    path = _study_config(world, tmp_path)
    with pytest.raises(CroftError, match="also held_out"):
        load_experiment(path, ["extra_targets=[photo]"])
    with pytest.raises(CroftError, match="crop_scale"):
        load_experiment(path, ["crop_scale=[0.7, 1.5]"])


def test_per_fold_open_set_and_extra_target_in_a_run(world, tmp_path) -> None:
    """Zero-shot on two folds: each fold's 'matched' set is its own style's held-out
    classes, and every fold scores the sketch extra target (shifted_accuracy)."""
    import json

    path = _study_config(world, tmp_path)
    out = tmp_path / "out"
    sets = ["held_out=[photo, pixel]", "seeds=[1]", "views=1", "shots=2", "scores=[energy]"]
    sets += ["methods=[{label: zeroshot, method: zeroshot}]"]
    argv = ["run", str(path), "--out", str(out), "--quiet"]
    assert main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
    # the report's extra-target table says what it holds (not "Setup-I")
    header = (out / "report" / "extra_targets_accuracy.csv").read_text().splitlines()[0]
    stems = ("held_out", "sketch", "extra_avg")  # snake_case, mean/std/n per cell
    assert header == ",".join(["row", *(f"{c}_{k}" for c in stems for k in ("mean", "std", "n"))])
    if importlib.util.find_spec("pandas") is not None:  # the extra-target table pivots too
        from report_pivot import assert_results_csv_reproduces_report

        assert assert_results_csv_reproduces_report(out / "report") >= 3
    assert not (out / "report" / "setup1_accuracy.csv").exists()
    energies = {}
    for dom in ("photo", "pixel"):
        rdir = out / "runs" / "zeroshot" / f"{dom}_seed1"
        metrics = json.loads((rdir / "metrics.json").read_text())
        assert metrics["ood_sets"] == ["matched", "textures", "pooled"]
        assert metrics["shifted_sets"] == ["sketch"] and metrics["shifted_n"] == {"sketch": 21}
        scores = np.load(rdir / "scores.npz")
        energies[dom] = scores["ood/matched/energy"]
        assert len(energies[dom]) == 6  # 6 held-out classes x 1 image, in this style
        assert len(scores["ood/pooled/energy"]) == 6 * 5  # every style
    assert not np.allclose(energies["photo"], energies["pixel"])


def test_v3_study_config_is_the_v2_one_with_its_world_and_seeds(world, tmp_path) -> None:
    """configs/world_study_v3.yaml changes only the world folder, the name and the seeds
    (10, gate G6 on world v3): every row, grid, rate and protocol key is the v2 study's,
    plus the four attribution controls added after the study (issue 24), last."""
    v2 = load_experiment(_study_config(world, tmp_path))
    text = CONFIG.with_name("world_study_v3.yaml").read_text()
    text = text.replace("../world_study_v3", str(world)).replace(
        "../src/croft/assets/world_v2/open_clip_model.safetensors",
        str(tiny_clip_checkpoint("study")),
    )
    path = tmp_path / "world_study_v3.yaml"
    path.write_text(text)
    v3 = load_experiment(path)
    assert v3.name == "world_study_v3" and v3.seeds == list(range(1, 11))
    controls = ["ce_adapter_residual", "croft_paper_no_wcf", "croft_paper_worst_case",
                "croft_paper_l2_rescaled"]  # fmt: skip
    assert [m.label for m in v3.methods[-4:]] == controls
    assert replace(v3, name=v2.name, seeds=v2.seeds, methods=v3.methods[:-4]) == v2
