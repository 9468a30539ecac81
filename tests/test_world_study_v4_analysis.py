"""The v4 analysis scripts on known answers: the controls script's family of 16 and its
per-world signs (benchmarks/world_study_controls.py --family v4), and H4's within-slice
Spearman medians (benchmarks/world_study_diagnose.py, docs/world-study.md "World v4")."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _record(label: str, world: int, style: str, acc: float, auroc: float) -> dict:
    return {
        "label": label, "world_seed": world, "test_domain": style, "seed": 1,
        "accuracy": acc, "detection": {"matched": {"energy": {"auroc": auroc}}},
    }  # fmt: skip


def _records(gain_by_world: dict[int, float]) -> list[dict]:
    """Every row of v4's family; croft beats ce_adapter by ``gain_by_world[w]`` (a fraction)
    on accuracy, everything else ties."""
    rows = ("zeroshot", "ce_adapter", "croft", "croft_paper", "ce_adapter_residual",
            "croft_paper_no_wcf", "croft_paper_worst_case", "croft_paper_l2_rescaled")  # fmt: skip
    out = []
    for w, gain in gain_by_world.items():
        for i, style in enumerate(("photo", "painting", "cartoon", "pixel")):
            for label in rows:
                acc = 0.6 + 0.01 * i + (gain if label == "croft" else 0.0)
                out.append(_record(label, w, style, acc, 0.8))
    return out


def test_the_v4_family_is_sixteen_with_the_primary_first_and_worlds_apart() -> None:
    mod = _load("world_study_controls")
    comps = mod.V4_FIRST + mod.COMPARISONS
    chosen = _records({0: 0.02, 1: 0.03, 2: -0.01})
    rows = mod.family(chosen, comps)
    assert len(rows) == 16 and [r["name"] for r in rows[:4]] == ["H1", "H1", "H2", "H2"]
    h2 = next(r for r in rows if r["name"] == "H2" and r["metric"] == "held-out acc")
    assert h2["cluster"]["mean"] == pytest.approx(100 * (0.02 + 0.03 - 0.01) / 3)
    assert h2["cluster"]["clusters"] == 3  # clusters are the worlds
    worlds = mod.per_world(chosen, comps)
    assert worlds["H2"]["held-out acc"]["same_sign"] is False  # world 2 goes the other way
    assert worlds["H2"]["held-out acc"]["worlds"]["2"]["mean"] == pytest.approx(-1.0)
    # one world: no per-world section (its own interval is the study's)
    assert mod.per_world(_records({0: 0.02}), comps) == {}
    text = mod.markdown(mod.means(chosen), rows, {}, {}, worlds)
    assert "a family of 16" in text and "signs differ" in text


def _diag_rows(x: float, src: float, held: float, acc: float) -> list[dict]:
    base = {"x": x, "other": ""}
    return [
        {**base, "group": "train:photo", "other": "train:cartoon", "quantity": "hessian_cosine",
         "value": src},
        {**base, "group": "train:photo", "other": "train:pixel", "quantity": "hessian_cosine",
         "value": src + 0.02},
        {**base, "group": "train:cartoon", "other": "heldout", "quantity": "hessian_cosine",
         "value": -5.0},  # a held-out pair is not a source pair
        {**base, "group": "heldout", "quantity": "hessian_cosine_to_train", "value": held},
        {**base, "group": "heldout", "quantity": "accuracy", "value": acc},
    ]  # fmt: skip


def test_h4_takes_spearman_within_each_slice_and_the_median_over_slices() -> None:
    mod = _load("world_study_diagnose")
    lambdas = (0.0, 1.0, 10.0, 100.0)
    up = [r for i, x in enumerate(lambdas) for r in _diag_rows(x, 0.1 * i, 0.2 * i, 0.5 + i)]
    # alignment rises with lambda2 but accuracy falls
    down = [r for i, x in enumerate(lambdas) for r in _diag_rows(x, 0.1 * i, 0.2 * i, 0.9 - i)]
    assert mod.source_alignment(up, 10.0) == pytest.approx(0.21)
    per = {(0, "croft", "photo"): up, (1, "croft", "photo"): up, (2, "croft", "pixel"): down,
           (0, "croft_paper", "photo"): down}  # fmt: skip
    got = mod.h4(per, "croft")
    assert set(got["slices"]) == {"w0 photo", "w1 photo", "w2 pixel"}
    assert got["a_source_vs_lambda2"] == {"median": 1.0, "n": 3, "positive": 3}
    assert got["b_heldout_vs_accuracy"] == {"median": 1.0, "n": 3, "positive": 2}
    assert mod.h4(per, "croft_paper")["b_heldout_vs_accuracy"]["median"] == -1.0
    assert mod.name_of((None, "croft", "photo")) == "photo"  # a one-world study


def test_the_study_tables_pair_within_worlds_and_cluster_over_them(monkeypatch) -> None:
    """benchmarks/world_study.py on several worlds: (world, style, seed) pairs (the same
    style and seed in two worlds are two pairs), the cluster interval over worlds."""
    monkeypatch.syspath_prepend(str(BENCH))  # it imports its sibling world_study_shortcut
    mod = _load("world_study")
    chosen = _records({0: 0.02, 1: 0.03, 2: -0.01})
    for r in chosen:
        r["val_accuracy"] = r["accuracy"]
    xa = mod.by_pair(chosen, "croft", mod.METRICS["held-out acc"])
    assert len(xa) == 12 and (2, "pixel", 1) in xa
    d = mod.paired(xa, mod.by_pair(chosen, "ce_adapter", mod.METRICS["held-out acc"]))
    assert d.method == "cluster" and d.clusters == 3
    one = [r for r in chosen if r["world_seed"] == 0]
    d1 = mod.paired(mod.by_pair(one, "croft", mod.METRICS["held-out acc"]),
                    mod.by_pair(one, "ce_adapter", mod.METRICS["held-out acc"]))  # fmt: skip
    assert d1.method == "iid" and d1.mean == pytest.approx(2.0)
    table = mod.by_style_table(chosen)
    assert "| croft − ce_adapter | held-out acc | +1.3 | +1.3 | +1.3 | +1.3 |" in table
