"""``croft demo`` end to end on the built-in world (the small 'tiny' preset, core rows)."""

from __future__ import annotations

import json

import pytest

from croft.protocols.world_demo import run_world_demo
from croft.verdict import verdict_lines

pytestmark = pytest.mark.usefixtures("isolated_cache")


def test_world_demo_runs_images_to_report(tmp_path) -> None:
    out = tmp_path / "demo"
    res = run_world_demo(
        out, seeds=(1,), full=False, progress=False, preset="tiny", held_out=("sketch", "photo")
    )
    runs = sorted(out.rglob("metrics.json"))
    # 2 held-out styles x 1 seed x (zeroshot, ce_adapter, 3 + 3 CRoFT grid points)
    assert len(runs) == 2 * 8
    rec = json.loads(runs[0].read_text())
    assert set(rec["detection"]) == {"held_out_classes", "textures"}
    assert set(rec["detection"]["textures"]) == {"energy", "knn"}
    cfg = json.loads((out / "config.resolved.json").read_text())
    assert cfg["backbone"].startswith("openclip:croft-world-rn-tiny:")
    header, rows = res["tables"]["accuracy"]
    assert header == ["method", "photo", "sketch", "avg"]
    # rows carry the report's training-status marks (e.g. † kept the initialisation) now
    # that runs record their selection; the tiny world's short fits may earn them
    labels = [r[0].rstrip("†‡") for r in rows]
    marked = [r[0].rstrip("†‡") for r in rows if r[0].endswith(("†", "‡"))]
    assert all(any(m in note for note in res["marks"]) for m in marked), res["marks"]
    assert {"zeroshot", "ce_adapter", "croft", "croft_paper"} == set(labels)
    zs = next(r for r in rows if r[0] == "zeroshot")
    assert float(zs[1].split()[0]) > 100 / 7, "zero-shot on photo should beat chance"
    assert any(
        line.startswith("- held-out accuracy: croft vs zeroshot:") and "CI [" in line
        for line in res["verdict"]
    ), res["verdict"]
    trained = {line.split(":")[0] for line in res["training"]}
    assert {"ce_adapter", "croft", "croft_paper"} <= trained  # every trained method says
    assert (out / "report" / "plots" / "energy_distributions.png").is_file()


def test_verdict_has_intervals_and_picks_the_best_baseline_on_validation() -> None:
    def rec(label, acc, auroc, val, dom, seed):
        det = {"energy": {"auroc": auroc, "fpr95_id_pos": 1 - auroc}}
        return {
            "label": label,
            "test_domain": dom,
            "seed": seed,
            "accuracy": acc + 0.01 * seed,
            "val_accuracy": val,
            "detection": {"held_out_classes": det},
        }

    pairs = [(d, s) for d in ("photo", "sketch") for s in (1, 2, 3)]
    recs = []
    for d, s in pairs:
        recs += [
            rec("croft", 0.90, 0.7, 0.90, d, s),
            rec("zeroshot", 0.80, 0.8, 0.80, d, s),
            rec("probe", 0.95, 0.6, 0.70, d, s),  # best on TEST, worse on validation
            rec("tip", 0.85, 0.6, 0.85, d, s),  # best other row on validation
        ]
    lines = verdict_lines(recs)
    assert (
        "- held-out accuracy: croft vs zeroshot: +10.0 points, 95% CI [+10.0, +10.0], n=6: better"
        in lines
    )
    assert any(line.startswith("- held-out accuracy: croft vs tip:") for line in lines)
    assert not any("vs probe" in line for line in lines)  # never chosen on the test set
    assert any(
        "held_out_classes, energy auroc: croft vs zeroshot: -10.0" in x and "worse" in x
        for x in lines
    )
