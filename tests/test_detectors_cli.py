"""Fitted detectors through the run grid and the CLI: states saved with each run's head,
``croft eval`` reusing them or fitting on --bank with generic --param values, and
``croft list scores -v``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from croft.cli.main import main
from croft.detector_states import load_states
from croft.experiments.grid import MethodRun
from croft.experiments.runner import run_grid
from croft.experiments.task import Task
from croft.features import save_features
from croft.simulate import SimConfig, Simulator

SIM = SimConfig(dim=32, classes=5, unseen_classes=4, shots=8, test_per_class=30, domains=3)
SCORES = ["energy", {"name": "knn", "k": 3}, "mahalanobis", {"name": "vim", "dim": 8}]


@pytest.fixture(scope="module")
def run(tmp_path_factory):  # noqa: ANN201
    t = Simulator(SIM).lodo(0, 1)
    task = Task(t.test_domain, 1, t.train, t.val, t.test, t.ood_sets)
    out = tmp_path_factory.mktemp("grid")
    (rec,) = run_grid([task], [MethodRun("zs", "zeroshot", {})], out, scores=SCORES)
    return out, rec, task


def test_run_records_labels_and_saves_states_with_the_head(run) -> None:  # noqa: ANN001
    out, rec, task = run
    assert rec["scores"] == ["energy", "knn", "mahalanobis", "vim"]
    assert set(next(iter(rec["detection"].values()))) == {"energy", "knn", "mahalanobis", "vim"}
    (head_dir,) = out.rglob("head.json")
    states = load_states(head_dir.parent, dim=SIM.dim)
    assert sorted(states) == ["knn", "mahalanobis", "vim"]
    assert states["knn"].params == {"k": 3} and states["knn"].state.tensors["bank"].shape[0] == len(
        task.train
    )


def test_eval_reuses_saved_states_or_fits_on_bank(run, tmp_path, capsys) -> None:  # noqa: ANN001
    out, rec, task = run
    head = next(out.rglob("head.json")).parent
    test = save_features(task.test, tmp_path / "test.safetensors")
    ood_name, ood = next(iter(task.ood_sets.items()))
    oodf = save_features(ood, tmp_path / "ood.safetensors")
    train = save_features(task.train, tmp_path / "train.safetensors")
    base = ["eval", str(head), "--id", str(test), "--ood", f"{ood_name}={oodf}"]
    m1, m2 = tmp_path / "saved.json", tmp_path / "bank.json"
    assert main([*base, "--scores", "energy,knn,mahalanobis,vim", "--out", str(m1)]) == 0
    assert main([*base, "--scores", "knn,mahalanobis,vim", "--bank", str(train),
                 "--param", "knn.k=3", "--param", "vim.dim=8", "--out", str(m2)]) == 0  # fmt: skip
    saved = json.loads(m1.read_text())["detection"][ood_name]
    fitted = json.loads(m2.read_text())["detection"][ood_name]
    for name in ("knn", "mahalanobis", "vim"):
        assert saved[name] == rec["detection"][ood_name][name], name  # the run's numbers
        np.testing.assert_allclose(fitted[name]["auroc"], saved[name]["auroc"], atol=1e-9)
    capsys.readouterr()
    assert main([*base, "--param", "knn=3"]) == 2
    assert "write SCORE.PARAM=VALUE" in capsys.readouterr().err


def test_list_scores_verbose(capsys) -> None:  # noqa: ANN001
    assert main(["list", "scores", "-v"]) == 0
    out = capsys.readouterr().out
    for name in ("energy", "msp", "max_logit", "mcm", "knn", "mahalanobis", "vim", "neglabel"):
        assert f"  {name} " in out, name
    assert "k=1, squared=False" in out and "dim=0; fitted on ID features and logits" in out
    assert "n_negatives=10000, eta=0.05, groups=100" in out and "ridge=0.0" in out


def test_report_tables_per_score_label(run, tmp_path) -> None:  # noqa: ANN001
    out, _, _ = run
    assert main(["report", str(out), "--out", str(tmp_path / "rep"), "--no-plots"]) == 0
    for name in ("energy", "knn", "mahalanobis", "vim"):
        assert (tmp_path / "rep" / f"detection_{name}.csv").is_file(), name
