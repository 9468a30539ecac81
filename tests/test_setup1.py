"""Setup-I (``protocol: imagenet``) on a generated ImageNet-shaped tree, end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from croft.cli.main import main
from croft.data.imagenet import imagenet_class_split
from croft.errors import CroftError
from croft.experiments import load_experiment
from croft.experiments.evaluate import restricted_predictions
from croft.experiments.tasks_imagenet import build_setup1_tasks
from croft.report import collect_runs

WNIDS = [f"n{i:08d}" for i in range(10)]
NAMES = [f"class{i}" for i in range(10)]
SHIFTED = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")


pytestmark = pytest.mark.usefixtures("isolated_cache")


def _images(folder: Path, label: int, n: int, g: torch.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        arr = (torch.rand(20, 20, 3, generator=g) * 60).to(torch.uint8)
        arr[5:15, 5:15] = torch.tensor([25 * label, 250 - 25 * label, 120], dtype=torch.uint8)
        Image.fromarray(arr.numpy()).save(folder / f"{k}.png")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """CoOp-style tree: imagenet (10 classes) + v2/sketch (all) + A/R (5 classes each)."""
    from croft.backbones import TINY_VIT
    from croft.backbones.openclip import open_clip_module

    root = tmp_path_factory.mktemp("setup1")
    g = torch.Generator().manual_seed(0)
    inet = root / "imagenet"
    inet.mkdir()
    (inet / "classnames.txt").write_text(
        "".join(f"{w} {n}\n" for w, n in zip(WNIDS, NAMES, strict=True))
    )
    ids = imagenet_class_split(NAMES, 1, 0.4)[0]
    ar_classes = [NAMES.index(c) for c in ids[:2]] + [i for i in range(10) if NAMES[i] not in ids][
        :3
    ]
    for i, w in enumerate(WNIDS):
        _images(inet / "images" / "train" / w, i, 4, g)
        _images(inet / "images" / "val" / w, i, 5, g)
        _images(root / "imagenetv2/imagenetv2-matched-frequency-format-val" / str(i), i, 2, g)
        _images(root / "imagenet-sketch/images" / w, i, 2, g)
        if i in ar_classes:
            _images(root / "imagenet-adversarial/imagenet-a" / w, i, 2, g)
            _images(root / "imagenet-rendition/imagenet-r" / w, i, 2, g)
    torch.manual_seed(0)
    torch.save(open_clip_module().create_model(TINY_VIT).state_dict(), root / "tiny.pt")
    shifted = {
        "v2": "imagenetv2",
        "sketch": "imagenet-sketch",
        "a": "imagenet-adversarial",
        "r": "imagenet-rendition",
    }
    lines = "\n".join(
        f"  - {{root: {d}, layout: imagenet, options: {{variant: {v}}}}}"
        for v, d in shifted.items()
    )
    (root / "exp.yaml").write_text(
        f"""
name: tiny_setup1
backbone: openclip:{TINY_VIT}:tiny.pt
protocol: imagenet
data: {{root: imagenet, layout: imagenet}}
shifted:
{lines}
templates: ["a photo of a {{}}.", "art of the {{}}."]
id_fraction: 0.4
shots: 2
val_per_class: 1
views: 2
seeds: [1]
batch_size: 16
progress: false
methods:
  - {{label: zeroshot, method: zeroshot}}
  - {{label: croft, method: croft, options: {{epochs: 2, energy_reduction: setup1}}}}
"""
    )
    return root


def test_restricted_predictions_on_fixed_logits() -> None:
    logits = torch.tensor([[5.0, 1.0, 2.0, 0.0], [0.0, 3.0, 1.0, 9.0]])
    assert restricted_predictions(logits).tolist() == [0, 3]
    assert restricted_predictions(logits, [1, 2]).tolist() == [2, 1]
    assert restricted_predictions(logits, torch.tensor([3])).tolist() == [3, 3]


def test_setup1_records_per_seed(world) -> None:
    cfg = load_experiment(world / "exp.yaml", ["seeds=[1, 2, 3]"])
    _, variants, tasks = build_setup1_tasks(cfg)
    assert sorted(variants) == sorted(SHIFTED)
    for t in tasks:
        ids = imagenet_class_split(NAMES, t.seed, 0.4)[0]
        assert t.id_classes == ids and len(ids) == 4
        assert [r.class_name for r in t.test] == [ids[r.label] for r in t.test]
        assert len(t.test) == 20 and len(t.ood) == 30 and len(t.train) == 8
        assert {r.split for r in t.val} == {"train"} and not set(t.val) & set(t.train)
        assert t.detection_id is None and not t.shifted_classes
    cfg = load_experiment(
        world / "exp.yaml",
        ["ood_draw=authors_1000", "ood_draw_size=7", "val_source=authors"]
        + ["detection_id=authors_val", "ar_protocol=200"],
    )
    (t,) = build_setup1_tasks(cfg)[2]
    assert len(t.ood) == 7 and {r.label for r in t.ood} == {-1}
    assert {r.split for r in t.val} == {"val"} and len(t.val) == 4  # val_per_class 1
    assert t.detection_id == t.val
    assert set(t.shifted_classes) == {"imagenet_a", "imagenet_r"}
    assert t.shifted_classes["imagenet_a"] == [0, 1]  # the 2 ID classes A holds


def test_setup1_run_options_and_report(world, tmp_path, capsys) -> None:
    cfg, out = world / "exp.yaml", tmp_path / "runs"
    assert main(["run", str(cfg), "--check"]) == 0
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    recs = {r["label"]: r for r in collect_runs(out)}
    assert set(recs) == {"zeroshot", "croft"}
    for lab, rec in recs.items():
        assert (out / "runs" / lab / "imagenet_seed1" / "scores.npz").is_file()
        assert (
            rec["test_domain"] == "imagenet"
            and rec["id_classes"] == imagenet_class_split(NAMES, 1, 0.4)[0]
        )
        assert set(rec["shifted_accuracy"]) == set(SHIFTED)
        assert rec["shifted_n"] == {"imagenet_v2": 8, "imagenet_sketch": 8} | {
            "imagenet_a": 4,
            "imagenet_r": 4,
        }
        assert rec["n_id"] == 20 and rec["ood_sizes"] == {"imagenet_ood": 30}
    report = (out / "report" / "report.md").read_text()
    assert "Setup-I" in report and (out / "report" / "setup1_accuracy.csv").is_file()
    assert (out / "report" / "plots" / "energy_distributions.png").is_file()
    header = (out / "report" / "setup1_accuracy.csv").read_text().splitlines()[0]
    stems = ("id", *SHIFTED, "shifted_avg")  # snake_case, mean/std/n per cell
    assert header == ",".join(["row", *(f"{c}_{k}" for c in stems for k in ("mean", "std", "n"))])
    if importlib.util.find_spec("pandas") is not None:  # the Setup-I table pivots too
        from report_pivot import assert_results_csv_reproduces_report

        assert assert_results_csv_reproduces_report(out / "report") >= 3
    # the authors' options, zeroshot only: capped OOD draw, 4/class val as detection ID set
    out2 = tmp_path / "runs2"
    sets = ["ood_draw=authors_1000", "ood_draw_size=7", "detection_id=authors_val"]
    sets += ["ar_protocol=200", "methods=[{label: zeroshot, method: zeroshot}]"]
    argv = ["run", str(cfg), "--out", str(out2), "--quiet", "--no-report"]
    assert main(argv + [x for s in sets for x in ("--set", s)]) == 0
    (rec,) = collect_runs(out2)
    assert rec["ood_sizes"] == {"imagenet_ood": 7} and rec["n_detection_id"] == 4
    assert rec["detection_id_set"] == "authors_val" and rec["n_id"] == 20
    with np.load(out2 / "runs/zeroshot/imagenet_seed1/scores.npz") as z:
        assert len(z["detection_id/energy"]) == 4 and len(z["ood/imagenet_ood/energy"]) == 7
        assert set(z["shifted/imagenet_a/pred"].tolist()) <= {0, 1}
        assert set(z["shifted/imagenet_v2/pred"].tolist()) <= {0, 1, 2, 3}
    assert json.loads((out2 / "config.resolved.json").read_text())["ar_protocol"] == "200"
    # another shot count into the same directory is refused (finished runs would be reused)
    assert main(argv + ["--set", "shots=1"] + [x for s in sets for x in ("--set", s)]) == 2
    assert "another shots" in capsys.readouterr().err


def test_setup1_check_and_config_errors(world, tmp_path, capsys) -> None:
    preset = Path(__file__).resolve().parents[1] / "configs" / "setup1_imagenet.yaml"
    argv = ["run", str(preset), "--check", "--set", f"data.root={world / 'imagenet'}"]
    for i, d in enumerate(["imagenetv2", "imagenet-sketch", "imagenet-adversarial", "missing"]):
        argv += ["--set", f"shifted.{i}.root={world / d}"]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert printed.count("shifted ") == 1 and "shifted imagenet_r" in printed
    with pytest.raises(CroftError, match="protocol 'setup3'"):
        load_experiment(world / "exp.yaml", ["protocol=setup3"])
    with pytest.raises(CroftError, match="ar_protocol '100'"):
        load_experiment(world / "exp.yaml", ["ar_protocol=100"])
    with pytest.raises(CroftError, match="layout imagenet"):
        load_experiment(world / "exp.yaml", ["data.layout=folder"])
    with pytest.raises(CroftError, match="protocol imagenet only"):
        load_experiment(world / "exp.yaml", ["protocol=lodo"])
