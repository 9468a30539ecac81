"""``croft demo``: the world study's short form on world v3 (run end to end on the small
``study-v3-tiny`` world), its agreement with configs/world_study_v3.yaml, and the verdict's
rule for the best baseline."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

import croft.methods as M
import croft.protocols.world_demo as wd
from croft.cli.main import main
from croft.experiments import load_experiment
from croft.verdict import best_baseline, verdict_lines

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "world_study_v3.yaml"


# ------------------------------------------------------------------ one source of truth
def test_demo_config_agrees_with_the_study_yaml(tmp_path) -> None:
    """The demo's data and protocol fields are the study's (paths aside), its rows are the
    study's rows with the same options, and its runs are points of the study's grids: for
    every key a study row grids, the demo's value (gridded or default) is a study point,
    with one exception fixed before the study ran and said in the demo's docstring: the
    paper variant's lambda1 stays at its default 2 (the study grids 0, 5, 15)."""
    study = load_experiment(CONFIG)
    demo = wd.demo_config(tmp_path / "world", range(1, 6))
    demo.check()
    for key in (
        "protocol", "held_out", "extra_targets", "templates", "shots", "sampling",
        "val_per_class", "views", "crop_scale", "ood_transform", "conventions",
        "knn_k", "precision", "view_seed", "device",
    ):  # fmt: skip
        assert getattr(demo, key) == getattr(study, key), key
    assert demo.seeds == study.seeds[:5] and len(study.seeds) == 10  # the demo: 5 of 10
    assert demo.train_view() == study.train_view()
    assert demo.data.layout == study.data.layout and demo.data.options == study.data.options
    # the study's scores, plus training-free detectors that change no fit or selection
    assert set(demo.scores) - set(study.scores) == {"mahalanobis", "vim"}
    assert {"energy", "knn"} <= set(study.scores) & set(demo.scores)

    def ood(cfg) -> list:  # each open set with its root relative to the data root
        rel = [Path(o.root).relative_to(cfg.data.root).as_posix() for o in cfg.ood]
        return [(o.name, r, o.layout, o.options) for o, r in zip(cfg.ood, rel, strict=True)]

    assert ood(demo) == ood(study)
    assert ood(demo)[0] == ("matched", "ood_classes/{held_out}", "folder", {"ood": True})
    weights = "assets/world_v2/open_clip_model.safetensors"
    assert demo.backbone.endswith(weights) and study.backbone.endswith(weights)
    rows = {m.label: m for m in study.methods}
    for m in wd.demo_methods(full=True, prompt_learners=True):
        ref = rows[m.label]
        assert (m.method, m.options) == (ref.method, ref.options), m.label
        for key, values in m.grid.items():
            assert set(values) <= set(ref.grid[key]), (m.label, key)
        cfg = M.make_config(M.METHODS.get(m.method).config_cls, dict(m.options))
        for key in set(ref.grid) - set(m.grid):  # the study grids it, the demo does not
            value = m.options.get(key, getattr(cfg, key))
            if (m.label, key) == ("croft_paper", "lambda1"):
                assert value == 2.0 and value not in ref.grid[key]  # the said exception
                continue
            assert value in ref.grid[key], (m.label, key, value)
    # the reduced lr grid: x1 and x4, i.e. the study's first two points
    lr_sgd, lr_adamw, epochs = wd.demo_rates()
    assert rows["ce_adapter"].grid["lr"][:2] == list(lr_sgd)
    assert rows["tip_adapter_f"].grid["lr"][:2] == list(lr_adamw)
    assert epochs == 30 and len(demo.seeds) == wd.SEEDS


def test_the_lr_grid_is_the_scale_aware_rule() -> None:
    """The demo's written-out rates are croft's rule (``lr_scaling: logit_scale``) at the
    shipped v2 tiny CLIP's logit scale, as the study config writes them (7 decimals; its
    AdamW x4 rate is 4 x the rounded x1 rate, 1.3e-5 relative above the rule)."""
    from croft.methods.loop import effective_lr

    s = wd.logit_scale()
    assert s == pytest.approx(17.994251, rel=1e-6)
    lr_sgd, lr_adamw, _ = wd.demo_rates()
    for mult, sgd, adamw in zip(wd.LR_MULTIPLIERS, lr_sgd, lr_adamw, strict=True):
        for method, lr, opts in [
            ("ce_adapter", sgd, {"lr": mult * wd.LR_OFFICIAL_SGD}),
            ("tip_adapter_f", adamw, {"lr": mult * wd.LR_OFFICIAL_ADAMW, "optimizer": "adamw"}),
        ]:
            cfg = M.make_config(
                M.METHODS.get(method).config_cls, {**opts, "lr_scaling": "logit_scale"}
            )
            assert lr == pytest.approx(effective_lr(cfg, s), rel=2e-5), (method, mult)
    lines = wd.lr_lines(s)
    assert "s = 17.994" in lines[0] and "0.0617678" in lines[1] and "0.0222296" in lines[2]
    labels = [m.label for m in wd.demo_methods(full=False)]
    assert labels == ["zeroshot", "ce_adapter", "croft", "croft_paper"]
    croft = wd.demo_methods(full=False)[2]
    assert croft.grid == {
        "lr": list(lr_sgd), "lambda1": [15.0], "lambda2": [0.0, 10.0, 1000.0]
    }  # fmt: skip


# ------------------------------------------------------------------------- end to end
@pytest.mark.usefixtures("isolated_cache")
def test_cli_demo_core_on_study_tiny_prints_the_verdict(tmp_path, monkeypatch, capsys) -> None:
    """``croft demo --core`` through the CLI on the small study world (one style, 2 seeds):
    the lr rule, the table with sketch apart, and the paired verdict with intervals."""
    run = functools.partial(wd.run_world_demo, preset="study-v3-tiny", held_out=("photo",))
    monkeypatch.setattr(wd, "run_world_demo", run)
    monkeypatch.setattr(wd, "SEEDS", 2)
    out = tmp_path / "demo"
    assert main(["demo", "--core", "--quiet", "--seed", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "the backbone's logit scale s = 17.994" in text and "x4: 0.2470714" in text
    header = text.split("mean ± std over held-out styles x seeds", 1)[1].splitlines()[1]
    assert header.split()[:6] == ["method", "held-out", "acc", "sketch", "acc", "matched"]
    verdict = [
        x
        for x in text.splitlines()
        if x.startswith("- ") and ": croft vs " in x
        and not x.startswith("- within the noise") and " comparisons (" not in x
    ]  # fmt: skip
    assert any(
        x.startswith("- held-out accuracy: croft vs zeroshot: ") and "95% CI [" in x and "n=2" in x
        for x in verdict
    ), text
    assert any(x.startswith("- matched, energy auroc: croft vs ce_adapter: ") for x in verdict)
    assert any(x.startswith("- textures, energy fpr95_id_pos: croft vs ") for x in verdict)
    assert not any("pooled" in x for x in verdict)  # in the report, not the verdict
    words = ("better", "worse", "no significant difference", "(n.s. after Holm)")
    assert all(x.endswith(words) for x in verdict), [x for x in verdict if not x.endswith(words)]
    # the cluster interval (1 held-out style: 1 cluster) and the small-n caution
    assert all("in 1 held-out domains (caution: only 2 pairs in 1 clusters" in x for x in verdict)
    assert any(
        x.startswith("- held-out accuracy: croft_paper vs ce_adapter: ") for x in text.splitlines()
    )
    assert "- primary: held-out accuracy: croft vs ce_adapter: " in text
    assert "which comparisons are within the noise" in text and "- within the noise on " in text
    assert any(x.startswith("croft_paper vs ce_adapter ") for x in text.splitlines())  # table
    assert "pooled energy AUROC" in header  # the pooled open set, as in report.md
    assert "- croft: 0 of 2 runs kept its initialisation" in text
    runs = sorted(out.rglob("metrics.json"))  # seeds 3, 4 x (zs, ce 2, croft 6, paper 6)
    assert len(runs) == 2 * 15 and {p.parent.name for p in runs} == {"photo_seed3", "photo_seed4"}
    rec = json.loads(runs[-1].read_text())
    assert rec["ood_sets"] == ["matched", "textures", "pooled"]
    assert rec["shifted_sets"] == ["sketch"]
    assert set(rec["detection"]["matched"]) == {"energy", "knn", "mahalanobis", "vim"}
    cfg = json.loads((out / "config.resolved.json").read_text())
    assert cfg["backbone"].endswith("world_v2/open_clip_model.safetensors")
    assert (out / "report" / "report.md").is_file()
    assert rec["world_seed"] == 0  # the study's world, unless --world-seed says otherwise


@pytest.mark.usefixtures("isolated_cache")
def test_cli_demo_world_seed_generates_and_labels_another_world(tmp_path, monkeypatch) -> None:
    from croft import world

    seen = {}
    real = world.generate_world

    def spy(root, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.update(kw, root=root)
        return real(root, **kw)

    monkeypatch.setattr(world, "generate_world", spy)
    run = functools.partial(wd.run_world_demo, preset="study-v3-tiny", held_out=("photo",))
    monkeypatch.setattr(wd, "run_world_demo", run)
    monkeypatch.setattr(wd, "SEEDS", 1)
    out = tmp_path / "demo"
    argv = ["demo", "--core", "--quiet", "--world-seed", "2", "--out", str(out)]
    assert main(argv) == 0
    assert seen["seed"] == 2 and Path(seen["root"]).name == "study-v3-tiny-seed2"
    recs = [json.loads(p.read_text()) for p in out.rglob("metrics.json")]
    assert recs and {r["world_seed"] for r in recs} == {2}


@pytest.mark.usefixtures("isolated_cache")
def test_world_demo_every_row_on_study_tiny(tmp_path) -> None:
    """Every default row runs with the study's options (one task), and the verdict names a
    best baseline that is not a CRoFT row."""
    res = wd.run_world_demo(
        tmp_path / "demo", seeds=(1,), progress=False, preset="study-v3-tiny", held_out=("pixel",)
    )
    header, rows = res["summary"]
    labels = [r[0].rstrip("†‡") for r in rows]
    assert labels == [
        "zeroshot", "ce_adapter", "croft", "croft_paper", "linear_probe", "clip_adapter",
        "tip_adapter", "tip_adapter_f", "wise",
    ]  # fmt: skip
    assert header[:3] == ["method", "held-out acc", "sketch acc"]
    assert float(rows[0][1]) > 100 / 7, "zero-shot on pixel should beat chance"
    best = [x for x in res["verdict"] if x.startswith("- best baseline: ")]
    assert len(best) == 1 and not best[0].startswith("- best baseline: croft")
    name = best[0].split()[3]
    assert any(x.startswith(f"- held-out accuracy: croft vs {name}: ") for x in res["verdict"])
    trained = {line.split(":")[0] for line in res["training"]}
    assert {"ce_adapter", "croft", "croft_paper", "clip_adapter", "tip_adapter_f"} <= trained


@pytest.mark.slow
@pytest.mark.usefixtures("isolated_cache")
def test_full_demo_from_empty_caches(tmp_path, capsys) -> None:
    """``croft demo`` as a user runs it: 4 styles x 5 seeds, every default row (~2-7 min)."""
    assert main(["demo", "--quiet", "--out", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert len(list((tmp_path / "demo").rglob("metrics.json"))) == 20 * 22
    assert "- held-out accuracy: croft vs zeroshot: " in text and "n=20" in text
    assert "- best baseline: " in text


# ----------------------------------------------------------------------------- verdict
def _rec(label, method, acc, auroc, val, dom, seed):
    det = {"energy": {"auroc": auroc, "fpr95_id_pos": 1 - auroc}}
    rec = {"label": label, "test_domain": dom, "seed": seed, "accuracy": acc + 0.01 * seed}
    rec.update(val_accuracy=val, detection={"held_out_classes": det})
    return rec if method is None else {**rec, "method": method}


def test_verdict_has_intervals_and_picks_the_best_baseline_on_validation() -> None:
    pairs = [(d, s) for d in ("photo", "sketch") for s in (1, 2, 3)]
    recs = []
    for d, s in pairs:
        recs += [
            _rec("croft", None, 0.90, 0.7, 0.90, d, s),
            _rec("zeroshot", None, 0.80, 0.8, 0.80, d, s),
            _rec("probe", None, 0.95, 0.6, 0.70, d, s),  # best on TEST, worse on validation
            _rec("tip", None, 0.85, 0.6, 0.85, d, s),  # best other row on validation
        ]
    lines = verdict_lines(recs)
    assert (  # the cluster bootstrap over the 2 held-out domains, with the small-n caution
        "- held-out accuracy: croft vs zeroshot: +10.0 points, 95% CI [+10.0, +10.0], n=6 in "
        "2 held-out domains (caution: only 6 pairs in 2 clusters, the interval is rough), "
        "Holm p<0.001: better" in lines
    )
    assert any(line.startswith("- held-out accuracy: croft vs tip:") for line in lines)
    assert "- best baseline: tip (by" in "\n".join(lines)  # never chosen on the test set
    assert any(line.startswith("- held-out accuracy: croft vs probe:") for line in lines)
    assert any(
        "held_out_classes, energy auroc: croft vs zeroshot: -10.0" in x and "worse" in x
        for x in lines
    )


def test_the_best_baseline_is_never_a_croft_row() -> None:
    """croft_paper and an ablation (method croft) beat every baseline on validation; the
    best baseline is still chosen among the baselines only, by validation accuracy."""
    recs = []
    for d, s in [(d, s) for d in ("photo", "pixel") for s in (1, 2)]:
        recs += [
            _rec("croft", "croft", 0.90, 0.7, 0.90, d, s),
            _rec("croft_paper", "croft", 0.99, 0.9, 0.99, d, s),
            _rec("croft_generator_only", "croft", 0.98, 0.9, 0.98, d, s),
            _rec("zeroshot", "zeroshot", 0.80, 0.8, 0.60, d, s),
            _rec("ce_adapter", "ce_adapter", 0.85, 0.7, 0.97, d, s),
            _rec("tip_adapter_f", "tip_adapter_f", 0.80, 0.7, 0.93, d, s),
            _rec("linear_probe", "linear_probe", 0.95, 0.7, 0.92, d, s),  # best on test
        ]
    assert best_baseline(recs, exclude=["croft", "zeroshot", "ce_adapter"]) == "tip_adapter_f"
    assert best_baseline(recs) == "ce_adapter"  # among every non-CRoFT row
    assert best_baseline([r for r in recs if r["method"] == "croft"]) is None
    lines = verdict_lines(recs)
    pairs = [x.split(": croft vs ")[1] for x in lines if ": croft vs " in x]
    refs = list(dict.fromkeys(x.split(":")[0] for x in pairs))
    assert refs == ["zeroshot", "ce_adapter", "tip_adapter_f", "linear_probe"]  # every baseline
    assert "- best baseline: tip_adapter_f (by mean source-validation accuracy" in "\n".join(lines)
    assert "a tie within the validation noise" not in "\n".join(lines)  # 1 point, every pair
    only = verdict_lines(recs, ood_sets=["textures"])  # an open set not in the records
    assert not any("held_out_classes" in x for x in only) and len(only) == 2 + 4
    assert only[1].startswith("- 4 comparisons (cluster bootstrap: held-out domains resampled")
