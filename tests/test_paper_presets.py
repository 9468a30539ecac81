"""The paper's presets: every baseline and the authors' full λ sweeps, under both
evaluation conventions, on a generated PACS-shaped tree."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from croft.cli.main import main
from croft.data import generate_lodo_splits
from croft.experiments import expand_methods, load_experiment

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
BASELINES = (
    "zeroshot",
    "ce_adapter",
    "clip_adapter",
    "tip_adapter",
    "tip_adapter_f",
    "coop",
    "cocoop",
    "dplclip",
    "linear_probe",
    "wise",
    "wise_a05",
)


def _pacs_tree(root: Path, per_class: int) -> Path:
    g = torch.Generator().manual_seed(0)
    for d, dom in enumerate(PACS_DOMAINS):
        for c, cls in enumerate(PACS_CLASSES):
            for k in range(per_class):
                arr = (torch.rand(24, 24, 3, generator=g) * 60).to(torch.uint8)
                arr[6:18, 6:18] = torch.tensor([30 * c + 20, 60 * d, 200 - 25 * c])
                path = root / "images" / dom / cls / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr.numpy()).save(path)
    generate_lodo_splits(root, val_fraction=0.34, seed=1)
    return root


@pytest.mark.parametrize("name", ["setup2_pacs", "setup2_vlcs", "setup1_imagenet"])
def test_presets_hold_every_baseline_and_the_authors_sweeps(name: str) -> None:
    cfg = load_experiment(CONFIGS / f"{name}.yaml")
    labels = [m.label for m in cfg.methods]
    assert set(BASELINES) <= set(labels)
    assert labels[2] == "croft"  # docs refer to methods.2 (gen_step per shot count)
    grid = cfg.methods[2].grid
    sweeps = {
        "setup2_pacs": {"lambda2": [1000.0, 100.0, 10.0, 1.0, 0.0]},
        "setup2_vlcs": {"lambda1": [15.0, 5.0, 0.0], "lambda2": [1000.0, 100.0, 10.0, 1.0, 0.0]},
        "setup1_imagenet": {"lambda1": [1.0, 5.0, 10.0, 15.0, 20.0], "lambda2": [1.0, 5.0, 10.0]},
    }[name]
    for key, values in sweeps.items():
        assert set(values) <= set(grid[key]), (key, grid)
    assert cfg.conventions == "croft"
    authors = load_experiment(CONFIGS / f"{name}.yaml", ["conventions=authors"])
    conv = authors.evaluation_conventions()
    assert conv.name == "authors" and conv.id_positives == "correct"
    assert (conv.detection_ratio == 0.5) is (name != "setup1_imagenet")
    assert authors.run_settings()["conventions"] != cfg.run_settings()["conventions"]


def test_pacs_check_lists_every_baseline_and_the_full_sweep(tmp_path: Path, capsys) -> None:
    root = _pacs_tree(tmp_path / "PACS", 3)
    argv = ["run", str(CONFIGS / "setup2_pacs.yaml"), "--check", "--set", f"data.root={root}"]
    assert main(argv) == 1  # the OOD datasets and the weights are still missing
    out = capsys.readouterr().out
    assert "data (" not in out, out  # PACS itself passes
    assert "conventions: croft" in out
    for label in BASELINES:
        assert f"  {label}: " in out
    for lam in ("1000.0", "100.0", "10.0", "1.0", "0.0"):
        assert f"croft[lambda2={lam}]" in out
    assert "croft_paper[lambda2=0.1]" in out
    assert "methods: 13 rows, 20 runs per task" in out


def _wide_labels(path: Path) -> list[str]:
    with path.open() as f:
        rows = list(csv.reader(f))
    return [r[0] for r in rows[1:] if r and r[0]]


@pytest.mark.slow
@pytest.mark.usefixtures("isolated_cache")
def test_pacs_preset_runs_every_method_under_both_conventions(tmp_path: Path) -> None:
    """One held-out domain, one seed, tiny backbone, 1 epoch per trained row (~1-2 min)."""
    from croft.backbones import TINY_VIT
    from croft.backbones.openclip import open_clip_module

    root = _pacs_tree(tmp_path / "PACS", 4)
    oods = []
    g = torch.Generator().manual_seed(1)
    for name in ("dtd", "food101"):
        for c in ("a", "b"):
            for k in range(4):
                arr = (torch.rand(24, 24, 3, generator=g) * 255).to(torch.uint8)
                path = tmp_path / name / c / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr.numpy()).save(path)
        oods.append(
            f"{{name: {name}, root: {tmp_path / name}, layout: folder, options: {{ood: true}}}}"
        )
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    torch.save(open_clip_module().create_model(TINY_VIT).state_dict(), ckpt)
    cfg = load_experiment(CONFIGS / "setup2_pacs.yaml")
    sets = [
        f"data.root={root}",
        f"backbone=openclip:{TINY_VIT}:{ckpt}",
        f"ood=[{', '.join(oods)}]",
        "device=cpu",
        "held_out=[photo]",
        "seeds=[1]",
        "shots=2",
        "views=1",
        "val_per_class=2",
        "batch_size=32",
        "workers=0",
        "progress=false",
    ]
    for i, m in enumerate(cfg.methods):  # one epoch each; 4 context tokens fit TINY_VIT
        if m.method in (
            "ce_adapter",
            "croft",
            "clip_adapter",
            "tip_adapter_f",
            "coop",
            "cocoop",
            "dplclip",
        ):
            sets.append(f"methods.{i}.options.epochs=1")
        if m.method in ("coop", "dplclip"):
            sets.append(f"methods.{i}.options.n_ctx=4")
        if m.method == "wise":
            sets.append(f"methods.{i}.options.base_options={{epochs: 1}}")
    n_runs = len(expand_methods(cfg.methods))
    tables = {}
    for conv in ("croft", "authors"):
        out = tmp_path / f"runs_{conv}"
        argv = ["run", str(CONFIGS / "setup2_pacs.yaml"), "--out", str(out), "--quiet"]
        for s in [*sets, f"conventions={conv}"]:
            argv += ["--set", s]
        assert main(argv) == 0
        done = sorted(out.rglob("metrics.json"))
        assert len(done) == n_runs == 20
        rec = json.loads(done[0].read_text())
        assert rec["conventions"]["name"] == conv and rec["val_nll"] is not None
        report = out / "report"
        labels = _wide_labels(report / "accuracy.csv")
        assert set(labels) == {m.label for m in cfg.methods}, labels  # one row per method
        md = (report / "report.md").read_text()
        assert f"[conventions: {conv}]" in md
        tables[conv] = (report / "detection_energy.csv").read_text()
        head = json.loads(next(out.glob("runs/croft[[]*/photo_seed1/head/head.json")).read_text())
        assert head["spec"]["det_ratio"] == (0.5 if conv == "authors" else None)
    assert "fpr95_paper" in tables["authors"].splitlines()[0] + tables["authors"].splitlines()[1]
    assert "fpr95_id_pos" in tables["croft"].splitlines()[0] + tables["croft"].splitlines()[1]
    knn_sweep = sorted(
        p.name for p in (tmp_path / "runs_authors" / "report").glob("detection_knn@*.csv")
    )
    assert "detection_knn@5.csv" in knn_sweep
