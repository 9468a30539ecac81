"""The world seed as a study factor (issue 24): ``world_seeds`` in an experiment config,
``{world_seed}`` in its roots, one run folder per world, ``world_seed`` in every record,
and the report's selection and verdict per world (the cluster bootstrap over worlds)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from croft.cli.main import main
from croft.errors import CroftError
from croft.experiments import load_experiment
from croft.experiments.worlds import per_world
from croft.report import select_records
from croft.world import generate_world, tiny_clip_checkpoint

pytestmark = pytest.mark.usefixtures("isolated_cache")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "world_study.yaml"


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("worlds")
    for seed in (0, 1):
        generate_world(base / f"seed{seed}", "study-tiny", seed=seed)
    return base


def _config(worlds: Path, tmp_path: Path, listed: str = "world_seeds: [0, 1]\n") -> Path:
    text = re.sub(r"root: (\.\./world_study[^,}\"]*)", r'root: "\1"', CONFIG.read_text())
    text = text.replace("../world_study", str(worlds / "seed{world_seed}"))
    weights = "../src/croft/assets/world_v2/open_clip_model.safetensors"
    text = text.replace(weights, str(tiny_clip_checkpoint("study"))) + listed
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_per_world_fills_every_root_and_leaves_run_keys_alone(worlds, tmp_path) -> None:
    cfg = load_experiment(_config(worlds, tmp_path))
    assert cfg.world_seeds == [0, 1] and cfg.world_seed is None
    split = per_world(cfg, tmp_path / "out")
    assert [o.name for _, o in split] == ["world0", "world1"]
    for seed, (c, _) in enumerate(split):
        assert c.world_seed == seed and c.data.root == str(worlds / f"seed{seed}")
        assert all("{world_seed}" not in o.root for o in c.ood)
        assert c.ood[0].root.endswith(f"seed{seed}/ood_classes/{{held_out}}")
        assert "world_seed" not in c.run_settings() and "world_seeds" not in c.run_settings()
    plain = dataclasses.replace(cfg, world_seeds=[])
    assert per_world(plain, tmp_path) == [(plain, tmp_path)]
    assert per_world(split[1][0], tmp_path) == [(split[1][0], tmp_path)]  # one world's own


def test_world_seed_keys_are_checked(worlds, tmp_path) -> None:
    with pytest.raises(CroftError, match="lists no world_seeds"):
        load_experiment(_config(worlds, tmp_path, listed=""))
    with pytest.raises(CroftError, match="each seed once"):
        load_experiment(_config(worlds, tmp_path, listed="world_seeds: [1, 1]\n"))
    fixed = _config(worlds, tmp_path)
    with pytest.raises(CroftError, match="would read the same folder"):
        load_experiment(fixed, [f"data.root={worlds / 'seed0'}"])


def test_runs_on_two_worlds_carry_their_world_seed_and_pair_within_it(worlds, tmp_path,
                                                                      capsys) -> None:  # fmt: skip
    out = tmp_path / "out"
    sets = ["held_out=[photo]", "seeds=[1]", "views=1", "shots=2", "scores=[energy]"]
    textures = f"{worlds}/seed{{world_seed}}/ood_textures"
    sets += ["extra_targets=[]", f"ood=[{{name: textures, root: '{textures}', layout: folder, "
             "options: {ood: true}}]"]  # fmt: skip
    sets += ["methods=[{label: zeroshot, method: zeroshot}, {label: croft, method: croft, "
             "options: {epochs: 1, lambda2: 0.0}, grid: {lambda1: [0.0, 5.0]}}]"]  # fmt: skip
    sets += ["primary={a: croft, b: zeroshot, metric: accuracy}"]
    argv = ["run", str(_config(worlds, tmp_path)), "--out", str(out), "--quiet"]
    assert main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
    recs = []
    for seed in (0, 1):
        for path in sorted((out / f"world{seed}" / "runs").rglob("metrics.json")):
            rec = json.loads(path.read_text())
            assert rec["world_seed"] == seed
            recs.append(rec)
    assert len(recs) == 2 * 3  # per world: zero-shot + 2 grid points
    picked = select_records(recs)
    assert sorted((r["label"], r["world_seed"]) for r in picked) == [
        ("croft", 0), ("croft", 1), ("zeroshot", 0), ("zeroshot", 1)]  # fmt: skip
    printed = capsys.readouterr().out
    assert "2 world seeds" in printed.split("\nverdict:\n", 1)[1]
    assert (out / "report" / "report.md").is_file()
    assert not (out / "world0" / "report").exists()
    # the report over the worlds' folders names the primary every world's config names
    # (no config.resolved.json above them), and results.csv says which world a row is from
    report = (out / "report" / "report.md").read_text()
    assert "primary: croft vs zeroshot" in report and "no primary comparison" not in report
    import pandas as pd

    tidy = pd.read_csv(out / "report" / "results.csv")
    assert list(tidy.columns[:5]) == ["row", "label", "method", "world_seed", "test_domain"]
    acc = tidy[(tidy.metric == "accuracy") & (tidy.split == "test") & (tidy.row == "zeroshot")]
    assert sorted(acc.world_seed) == [0, 1]
