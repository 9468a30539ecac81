"""``croft demo`` end to end on the built-in world (the small 'tiny' preset, core rows)."""

from __future__ import annotations

import json

import pytest

from croft.protocols.world_demo import run_world_demo, verdict

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
    assert any(line.startswith("- held-out-style accuracy: CRoFT") for line in res["verdict"])
    assert (out / "report" / "plots" / "energy_distributions.png").is_file()


def test_verdict_states_wins_and_losses() -> None:
    def rec(label, acc, auroc):
        det = {"energy": {"auroc": auroc, "fpr95_id_pos": 1 - auroc}}
        det["knn"] = det["energy"]
        return {
            "label": label,
            "accuracy": acc,
            "detection": {"held_out_classes": det, "textures": det},
        }

    lines = verdict(
        [rec("croft", 0.9, 0.7), rec("zeroshot", 0.8, 0.8), rec("ce_adapter", 0.95, 0.6)]
    )
    assert "- held-out-style accuracy: CRoFT beats zeroshot (90.0 vs 80.0)" in lines
    assert "- held-out-style accuracy: CRoFT does not beat ce_adapter (90.0 vs 95.0)" in lines
    assert any("does not beat zeroshot on AUROC (70.0 vs 80.0)" in x for x in lines)
    assert any("beats ce_adapter on AUROC (70.0 vs 60.0)" in x for x in lines)
