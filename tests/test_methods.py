"""Methods on features: known answers, selection, save/load, and CRoFT vs zero-shot."""

from __future__ import annotations

import pytest
import torch

import croft.methods as M
from croft.errors import CroftError
from croft.evaluation import evaluate
from croft.methods.croft.fit import CroftConfig, lr_at_epoch
from croft.methods.text import class_text_features
from croft.simulate import SimConfig, Simulator


def test_croft_at_init_equals_zero_shot(small_task) -> None:
    """Identity adapters: CRoFT's logits are zero-shot CLIP's (docs/authors-step.md#forward)."""
    zs = M.fit("zeroshot", small_task.train).head
    init = M.fit("croft", small_task.train, epochs=1, lr=0.0, warmup_lr=0.0).head
    x = small_task.test.features
    torch.testing.assert_close(init.logits(x), zs.logits(x), rtol=1e-4, atol=1e-4)


def test_template_ensemble_normalises_then_averages() -> None:
    t = torch.tensor([[[3.0, 0.0], [0.0, 1.0]]])  # one class, two templates
    got = class_text_features(t, ensemble=True)
    torch.testing.assert_close(got, torch.tensor([[2**-0.5, 2**-0.5]]))
    torch.testing.assert_close(class_text_features(t, ensemble=False), torch.tensor([[3.0, 0.0]]))


def test_lr_schedule_matches_the_authors() -> None:
    """docs/authors-step.md#schedule: 1e-5, then 2e-3, ..., 2e-3·(1+cos(28π/30))/2 at epoch 29."""
    cfg = CroftConfig()
    assert lr_at_epoch(cfg, 0) == pytest.approx(1e-5)
    assert lr_at_epoch(cfg, 1) == pytest.approx(2e-3)
    assert lr_at_epoch(cfg, 2) == pytest.approx(1.9945e-3, rel=1e-4)
    assert lr_at_epoch(cfg, 29) == pytest.approx(2.185e-5, rel=1e-3)


def test_best_validation_epoch_is_selected(small_task) -> None:
    res = M.fit("ce_adapter", small_task.train, small_task.val, epochs=6, lr=0.05)
    accs = [h["val_acc"] for h in res.history]
    assert res.selected_epoch == accs.index(max(accs))
    with torch.no_grad():
        acc = (res.head.predict(small_task.val.features) == small_task.val.labels).float().mean()
    assert float(acc) == pytest.approx(max(accs))


@pytest.mark.parametrize(
    "options",
    [{}, {"variant": "paper", "lambda2": 1.0}, {"energy_reduction": "setup1", "gen_step": 2}],
)
def test_croft_runs_in_float64_and_saves_and_loads(small_task, tmp_path, options) -> None:
    res = M.fit("croft", small_task.train, small_task.val, epochs=3, dtype="float64", **options)
    head = res.head
    assert head.fc_i.dtype == torch.float64
    M.save_head(head, tmp_path / "h", note="x")
    back = M.load_head(tmp_path / "h")
    x = small_task.test.features
    torch.testing.assert_close(back.logits(x), head.logits(x), rtol=0, atol=0)
    assert back.meta["method"] == "croft" and back.meta["note"] == "x"
    assert back.meta["config"]["variant"] == options.get("variant", "official")


def test_load_refuses_mismatched_dimension_or_classes(small_task, tmp_path) -> None:
    M.save_head(M.fit("zeroshot", small_task.train).head, tmp_path / "zs")
    with pytest.raises(CroftError, match="expects 32-d features but the features are 64-d"):
        M.load_head(tmp_path / "zs", expect_dim=64)
    with pytest.raises(CroftError, match="head has 5 classes but the data has 7"):
        M.load_head(tmp_path / "zs", expect_classes=7)
    with pytest.raises(CroftError, match="no head.json"):
        M.load_head(tmp_path)


def test_bad_options_are_one_line() -> None:
    with pytest.raises(CroftError, match="unknown option 'lamda2'"):
        M.fit("croft", None, lamda2=1)
    with pytest.raises(CroftError, match="variant 'clean'"):
        M.make_config(CroftConfig, {"variant": "clean"})
    with pytest.raises(CroftError, match="option lr='fast' is not a valid float"):
        M.make_config(CroftConfig, {"lr": "fast"})
    with pytest.raises(CroftError, match="unknown method 'crofts'"):
        M.fit("crofts", None)
    assert M.make_config(CroftConfig, {"wccf": "false", "gen_step": "3"}).wccf is False


def test_training_rejects_an_empty_class(small_task) -> None:
    train = small_task.train.subset(small_task.train.labels != 2)
    with pytest.raises(CroftError, match="class 'class_2' has no training example"):
        M.fit("croft", train, epochs=1)


def test_croft_beats_zero_shot_on_the_simulator() -> None:
    """Fixed seeds: held-out-domain accuracy above zero-shot; energy AUROC above chance."""
    sim = Simulator(SimConfig())
    gains, aurocs = [], []
    for dom in range(2):
        task = sim.lodo(dom, seed=1)
        zs = M.fit("zeroshot", task.train).head
        cr = M.fit("croft", task.train, task.val, lr=0.01).head
        ev_zs = evaluate(zs, task.test, task.ood_sets, scores=["energy"])
        ev_cr = evaluate(cr, task.test, task.ood_sets, scores=["energy"])
        gains.append(ev_cr.accuracy - ev_zs.accuracy)
        aurocs.append(ev_cr.detection["unseen_classes"]["energy"]["auroc"])
    assert min(gains) > 0.01, gains
    assert min(aurocs) > 0.7, aurocs


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("variant", ["official", "paper"])
def test_croft_trains_in_half_precision(small_task, dtype, variant) -> None:
    res = M.fit("croft", small_task.train, small_task.val, epochs=2, dtype=dtype, variant=variant)
    assert res.head.fc_i.dtype == getattr(torch, dtype)
    logits = res.head.logits(small_task.test.features)
    assert logits.dtype == getattr(torch, dtype) and bool(torch.isfinite(logits).all())
    assert all(h["loss"] == h["loss"] for h in res.history)  # no NaN


def test_evaluate_with_shared_fitted_detectors(small_task) -> None:
    import numpy as np

    from croft.evaluation import fit_detectors

    task = small_task
    head = M.fit("zeroshot", task.train).head
    scores, params = ["energy", "knn"], {"knn": {"k": 2}}
    plain = evaluate(
        head, task.test, task.ood_sets, scores=scores, score_params=params, bank=task.train
    )
    dets = fit_detectors(head, scores, params, task.train)
    shared = evaluate(head, task.test, task.ood_sets, detectors=dets)
    assert shared.detection == plain.detection
    for key, value in plain.per_sample.items():
        np.testing.assert_array_equal(shared.per_sample[key], value)
    with pytest.raises(CroftError, match="knn score needs a bank"):
        fit_detectors(head, scores, params, None)
