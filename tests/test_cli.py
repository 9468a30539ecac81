"""The feature-level CLI: fit, eval, list, demo; usage errors exit 2 with one line."""

from __future__ import annotations

import json

import pytest

from croft.cli.main import main
from croft.features import save_features


@pytest.fixture()
def files(small_task, tmp_path):
    paths = {}
    for name in ("train", "val", "test"):
        paths[name] = save_features(getattr(small_task, name), tmp_path / f"{name}.safetensors")
    paths["ood"] = save_features(small_task.ood, tmp_path / "ood.safetensors")
    paths["noise"] = save_features(small_task.noise, tmp_path / "noise.safetensors")
    return paths


def test_fit_then_eval(files, tmp_path, capsys) -> None:
    head = tmp_path / "head"
    argv = ["fit", "--train", str(files["train"]), "--val", str(files["val"]), "--quiet"]
    argv += ["--out", str(head), "--set", "epochs=4", "--set", "variant=paper"]
    assert main(argv) == 0
    meta = json.loads((head / "head.json").read_text())
    assert meta["method"] == "croft" and meta["config"]["variant"] == "paper"
    assert meta["config"]["epochs"] == 4 and len(meta["history"]) == 4
    assert meta["ood_threshold"]["score"] == "energy"
    assert meta["selection"]["select_epoch"] == "best"
    assert meta["selection"]["selected_epoch"] == meta["selected_epoch"]
    # the paper variant's own default λ2 (issue 14; the official keeps 1000)
    assert json.loads((head / "config.json").read_text())["lambda2"] == 1.0
    out = tmp_path / "m.json"
    argv = ["eval", str(head), "--id", str(files["test"]), "--ood", f"unseen={files['ood']}"]
    argv += ["--ood", str(files["noise"]), "--bank", str(files["train"]), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "accuracy on test.safetensors" in printed and "AUROC" in printed
    metrics = json.loads(out.read_text())
    assert set(metrics["detection"]) == {"unseen", "noise"}
    assert set(metrics["detection"]["unseen"]) == {"energy", "mcm", "msp", "max_logit", "knn"}
    assert 0.5 < metrics["detection"]["unseen"]["energy"]["auroc"] <= 1.0
    assert 0.0 <= metrics["accuracy"] <= 1.0


def _one_line_error(argv, capsys, match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("croft: error: ") and "\n" not in err, err
    assert match in err, err


def test_usage_errors(files, tmp_path, capsys) -> None:
    base = ["fit", "--train", str(files["train"]), "--out", str(tmp_path / "h"), "--quiet"]
    _one_line_error(base + ["--set", "lamda1=3"], capsys, "unknown option 'lamda1'")
    _one_line_error(base + ["--set", "lr"], capsys, "expected KEY=VALUE")
    _one_line_error(base + ["--method", "nope"], capsys, "unknown method 'nope'")
    missing = ["fit", "--train", str(tmp_path / "x.safetensors"), "--out", str(tmp_path / "h")]
    _one_line_error(missing, capsys, "does not exist")
    _one_line_error(
        ["eval", str(tmp_path), "--id", str(files["test"]), "--ood", str(files["ood"])],
        capsys,
        "no head.json",
    )
    assert main(base + ["--set", "epochs=1"]) == 0
    capsys.readouterr()
    # no --ood is no longer an error (issue 12): accuracy only
    assert main(["eval", str(tmp_path / "h"), "--id", str(files["test"])]) == 0
    assert "accuracy only" in capsys.readouterr().out
    _one_line_error(
        [
            "eval",
            str(tmp_path / "h"),
            "--id",
            str(files["test"]),
            "--ood",
            str(files["ood"]),
            "--scores",
            "knn",
        ],
        capsys,
        "needs --bank",
    )


def test_list(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("croft", "ce_adapter", "zeroshot", "energy", "knn", "mcm"):
        assert f"  {name} " in out


def test_demo_grid_resumes(tmp_path) -> None:
    from croft.protocols.demo import run_synthetic_demo
    from croft.simulate import SimConfig

    sim = SimConfig(dim=16, classes=3, unseen_classes=2, domains=2, shots=4, test_per_class=10)
    out = tmp_path / "demo"
    first = run_synthetic_demo(out, seeds=(1,), sim=sim, progress=False)
    done = sorted((out / "runs").rglob("metrics.json"))
    assert len(done) == 4 * 2
    for name in ("config.json", "env.json", "scores.npz"):
        assert (done[0].parent / name).is_file()
    # a run killed before its metrics.json: the rerun recomputes only that one
    victim = done[3]
    victim.unlink()
    stamp = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("metrics.json")}
    second = run_synthetic_demo(out, seeds=(1,), sim=sim, progress=False)
    assert victim.is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())
    assert second["summary"] == first["summary"]
    assert "croft_official" in (out / "report" / "report.md").read_text()


def test_list_shows_every_registry(capsys):
    from croft.cli.main import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for heading, entry in [
        ("methods:", "croft"),
        ("scores", "knn"),
        ("head types", "adapter"),
        ("backbone kinds", "openai"),
        ("dataset layouts", "oodbench"),
        ("experiment protocols", "lodo"),
    ]:
        block = out.split(heading, 1)[1]
        assert f"  {entry} " in block.split("\n\n")[0] or f"  {entry}" in block
    assert main(["list", "protocols"]) == 0
    only = capsys.readouterr().out
    assert "imagenet" in only and "methods:" not in only
