"""The verdict on constructed records: every baseline compared, the best-baseline tie
wording, the family's size and primary, Holm's column, the caution at small n and the
cluster factor (croft.verdict)."""

from __future__ import annotations

import numpy as np
import pytest

from croft.errors import CroftError
from croft.verdict import baseline_ties, compare, verdict, verdict_lines

STYLES = ("photo", "painting", "cartoon", "pixel")


def _recs(val_noise: float, world_seeds: tuple[int | None, ...] = (None,)) -> list[dict]:
    """4 styles x 5 seeds (x world seeds): croft; zeroshot; ce_adapter; tip_adapter_f and
    linear_probe with nearly equal validation accuracy (their gap 0.1 points on average,
    per-pair noise ``val_noise``); clip_adapter far below on validation."""
    rng = np.random.default_rng(0)
    recs = []
    for w in world_seeds:
        for d in STYLES:
            for s in range(1, 6):
                base = {"test_domain": d, "seed": s}
                if w is not None:
                    base["world_seed"] = w
                noise = float(rng.normal(0, val_noise))
                for label, method, acc, val in (
                    ("croft", "croft", 0.80, 0.90),
                    ("croft_paper", "croft", 0.82, 0.91),
                    ("zeroshot", "zeroshot", 0.70, 0.60),
                    ("ce_adapter", "ce_adapter", 0.75, 0.95),
                    ("tip_adapter_f", "tip_adapter_f", 0.85, 0.838 + noise),
                    ("linear_probe", "linear_probe", 0.84, 0.837 - noise),
                    ("clip_adapter", "clip_adapter", 0.60, 0.50),
                ):
                    det = {"energy": {"auroc": acc - 0.1, "fpr95_id_pos": 1.1 - acc}}
                    recs.append(
                        {
                            **base,
                            "label": label,
                            "method": method,
                            "accuracy": acc + float(rng.normal(0, 0.01)),
                            "val_accuracy": val,
                            "detection": {"matched": det},
                        }
                    )
    return recs


def test_a_tie_on_validation_is_worded_as_a_tie_and_names_every_tied_baseline() -> None:
    recs = _recs(val_noise=0.02)  # 2-point noise per pair, a 0.1-point gap: a tie
    lines = verdict_lines(recs)
    best = next(x for x in lines if x.startswith("- best baseline: "))
    pick = best.split()[3]
    assert pick in ("tip_adapter_f", "linear_probe")
    other = "linear_probe" if pick == "tip_adapter_f" else "tip_adapter_f"
    assert "a tie within the validation noise" in best
    assert f"read the verdict against each of {pick}, {other}" in best
    assert "clip_adapter" not in best  # 35 points below on validation: not in the tie
    # CRoFT is compared with every baseline, the tied ones included
    for ref in ("zeroshot", "ce_adapter", "tip_adapter_f", "linear_probe", "clip_adapter"):
        assert any(x.startswith(f"- held-out accuracy: croft vs {ref}: ") for x in lines), ref


def test_a_clear_pick_is_not_called_a_tie() -> None:
    recs = _recs(val_noise=0.0)  # the same 0.1-point gap in every pair: no noise, no tie
    best = next(x for x in verdict_lines(recs) if x.startswith("- best baseline: "))
    assert best.startswith("- best baseline: tip_adapter_f (by mean source-validation")
    assert "tie" not in best
    assert baseline_ties(recs, "tip_adapter_f", exclude=["croft", "zeroshot", "ce_adapter"]) == []


def test_family_size_primary_and_holm() -> None:
    recs = _recs(val_noise=0.0)
    primary = {"a": "croft", "b": "ce_adapter", "metric": "accuracy"}
    v = verdict(recs, ["croft", "croft_paper"], ood_sets=["matched"], primary=primary)
    # 2 subjects x 5 references x (accuracy, matched auroc, matched fpr95)
    assert len(v.comparisons) == 2 * 5 * 3
    header = next(x for x in v.lines if " comparisons (" in x)
    assert header.startswith("- 30 comparisons (cluster bootstrap: held-out domains resampled")
    assert header.endswith("primary: croft vs ce_adapter, held-out accuracy")
    first = v.lines[v.lines.index(header) + 1]
    assert first.startswith("- primary: held-out accuracy: croft vs ce_adapter: +5.")
    assert "n=20 in 4 held-out domains, Holm p" in first and "caution" not in first
    assert v.primary is not None and v.primary.other == "ce_adapter"
    assert all(c.holm_p is not None and c.holm_p >= (c.diff.p or 0) for c in v.comparisons)
    paper = [x for x in v.lines if x.startswith("- held-out accuracy: croft_paper vs ")]
    assert len(paper) == 5  # the paper variant has its verdict too
    none = verdict(recs, "croft")
    assert "no primary comparison named" in next(x for x in none.lines if " comparisons (" in x)


def test_iid_is_a_named_option_and_world_seeds_are_the_top_factor() -> None:
    recs = _recs(val_noise=0.01, world_seeds=(0, 1, 2))
    key = ("accuracy", "", "")
    c = compare(recs, "croft", "ce_adapter", key)
    i = compare(recs, "croft", "ce_adapter", key, bootstrap="iid")
    assert c is not None and i is not None
    assert (c.n, c.clusters, c.method) == (60, 3, "cluster") and i.clusters == 0
    assert c.mean == pytest.approx(i.mean)
    line = next(x for x in verdict_lines(recs) if "croft vs ce_adapter" in x)
    assert "n=60 in 3 world seeds (caution: only 3 clusters, the interval is rough)" in line
    iid = verdict_lines(recs, bootstrap="iid")
    assert any("(i.i.d. pair bootstrap;" in x for x in iid)
    with pytest.raises(CroftError, match="bootstrap 'pairs'"):
        compare(recs, "croft", "ce_adapter", key, bootstrap="pairs")


def test_small_n_carries_a_caution() -> None:
    recs = [r for r in _recs(0.0) if r["seed"] <= 2 and r["test_domain"] in STYLES[:2]]
    lines = verdict_lines(recs)
    acc = next(x for x in lines if x.startswith("- held-out accuracy: croft vs zeroshot: "))
    assert "n=4 in 2 held-out domains (caution: only 4 pairs in 2 clusters" in acc


def _doc(**extra) -> dict:  # noqa: ANN003
    return {
        "name": "x",
        "backbone": "openclip:tiny:weights.safetensors",
        "data": {"root": "world", "layout": "oodbench"},
        "methods": [{"label": "croft", "method": "croft"}, {"label": "ce", "method": "ce_adapter"}],
        **extra,
    }


def test_the_config_names_the_primary_and_it_is_not_part_of_the_run_key() -> None:
    from croft.experiments.loading import build_config

    plain = build_config(_doc(), "x.yaml")
    cfg = build_config(_doc(primary={"a": "croft", "b": "ce", "metric": "accuracy"}), "x.yaml")
    cfg.check()
    assert cfg.primary == {"a": "croft", "b": "ce", "metric": "accuracy"}
    assert cfg.run_settings() == plain.run_settings()  # naming a primary reruns nothing
    bad = build_config(_doc(primary={"a": "croft", "b": "probe", "metric": "accuracy"}), "x")
    with pytest.raises(CroftError, match="primary.b: 'probe' is not a method label"):
        bad.check()
    with pytest.raises(CroftError, match="primary: name the comparison as"):
        build_config(_doc(primary={"a": "croft", "metric": "accuracy"}), "x").check()
