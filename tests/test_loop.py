"""The shared training loop: selection policies, the selection record, divergence, ctx_init."""

from __future__ import annotations

import math

import pytest
import torch

import croft.methods as M
from baseline_world import CLASSES, TinyTextTower, World, make_world
from croft.errors import CroftError
from croft.methods.base import make_config
from croft.methods.croft.fit import CroftConfig
from croft.methods.loop import KEPT_INIT_TOL, EpochSelector, TrainConfig, select_policy

RECORD_KEYS = {
    "select_epoch",
    "selected_epoch",
    "val_init",
    "val_epoch0",
    "val_selected",
    "diverged",
    "diverged_epoch",
    "param_change",
    "kept_init",
}


@pytest.fixture(scope="module")
def easy() -> World:
    """Well separated classes with exact text: zero-shot validation accuracy is 1.0."""
    return make_world(None, dim=16, noise=0.05, text_noise=0.01)


FAST = {"epochs": 3, "batch_size": 8}


def test_selector_policies_on_plain_numbers() -> None:
    accs = [0.5, 0.7, 0.7, 0.6]

    def run(policy: str, warmup: int, values: list[float | None]) -> int | None:
        sel = EpochSelector(policy, warmup)
        for e, a in enumerate(values):
            sel.offer(e, a)
        return sel.epoch

    assert run("best", 1, accs) == 1  # first best, strict improvement
    assert run("last", 1, accs) == 3
    assert run("best_after_warmup", 2, accs) == 2  # epochs 0-1 lie in the warm-up
    assert run("best_after_warmup", 2, [0.9, 0.8, 0.5, 0.6]) == 3
    assert run("best_after_warmup", 5, accs) == 1  # training ended inside the warm-up
    assert run("best", 1, [None, None]) == 1  # no validation: the last epoch


def test_old_selection_option_is_an_alias() -> None:
    assert select_policy(TrainConfig()) == "best"
    assert make_config(CroftConfig, {"selection": "val_acc"}).select_epoch == "best"
    assert make_config(CroftConfig, {"selection": "last"}).select_epoch == "last"
    with pytest.raises(CroftError, match="select_epoch"):
        make_config(CroftConfig, {"selection": "oracle"})
    with pytest.raises(CroftError, match="select_epoch"):
        TrainConfig(select_epoch="oracle").check()


def test_training_that_cannot_help_keeps_the_initialisation(easy: World) -> None:
    r = M.fit("ce_adapter", easy.train, easy.val, **FAST)
    s = r.selection
    assert set(s) == RECORD_KEYS
    assert s["val_init"] == 1.0 and s["val_epoch0"] == 1.0 and s["val_selected"] == 1.0
    assert s["selected_epoch"] == r.selected_epoch == 0
    assert s["kept_init"] is True and s["diverged"] is False and s["diverged_epoch"] is None
    assert s["select_epoch"] == "best"
    assert 0.0 <= s["param_change"] < KEPT_INIT_TOL  # one warm-up epoch at lr 1e-5
    import json

    json.dumps(s)  # the record is JSON-able (runs write it into metrics.json)


@pytest.mark.parametrize(
    ("policy", "expected"), [("last", 2), ("best_after_warmup", 1), ("best", 0)]
)
def test_selection_policies_in_a_fit(easy: World, policy: str, expected: int) -> None:
    r = M.fit("ce_adapter", easy.train, easy.val, select_epoch=policy, lr=0.1, **FAST)
    assert r.selected_epoch == r.selection["selected_epoch"] == expected
    assert r.selection["select_epoch"] == policy
    if policy != "best":  # selected after the warm-up with a real learning rate
        assert r.selection["param_change"] > KEPT_INIT_TOL
        assert r.selection["kept_init"] is False


@pytest.mark.parametrize("method", ["ce_adapter", "croft", "tip_adapter_f", "clip_adapter"])
def test_divergence_returns_the_best_finite_head(easy: World, method: str) -> None:
    lr = 1e6 if method in ("croft", "tip_adapter_f") else 1e30
    opts = {"warmup_epochs": 1} if method == "tip_adapter_f" else {}
    r = M.fit(method, easy.train, easy.val, lr=lr, **FAST, **opts)
    s = r.selection
    assert s["diverged"] is True and s["diverged_epoch"] == 1
    assert s["selected_epoch"] == 0 and len(r.history) == 1
    assert all(bool(torch.isfinite(t).all()) for t in r.head.state_dict().values())


def test_divergence_without_a_finite_head_is_one_line(easy: World) -> None:
    with pytest.raises(CroftError, match=r"diverged at epoch 0.*lower lr") as info:
        M.fit("ce_adapter", easy.train, easy.val, lr=1e30, warmup_epochs=0, **FAST)
    assert "\n" not in str(info.value)


def test_no_validation_selects_the_last_epoch(easy: World) -> None:
    r = M.fit("ce_adapter", easy.train, None, **FAST)
    assert r.selected_epoch == 2
    assert r.selection["val_init"] is None and r.selection["val_selected"] is None


# ---------------------------------------------------------------------------- ctx_init
@pytest.fixture(scope="module")
def tower() -> TinyTextTower:
    return TinyTextTower()


@pytest.mark.parametrize("method", ["coop", "cocoop", "dplclip"])
def test_ctx_init_starts_at_zero_shot_with_the_phrase(tower: TinyTextTower, method: str) -> None:
    world = make_world(tower)
    opts = {"text_tower": tower, "ctx_init": "a photo of a", "epochs": 1, "batch_size": 16}
    r = M.fit(method, world.train, world.val, lr=0.0, warmup_lr=0.0, **opts)
    with torch.no_grad():
        text = tower.encode_text([f"a photo of a {c}." for c in CLASSES]).float()
        text = torch.nn.functional.normalize(text, dim=-1)
        x = world.test.eval_features()
        zs = 100.0 * torch.nn.functional.normalize(x, dim=-1) @ text.T
        got = r.head.logits(r.head.check_features(x))
    torch.testing.assert_close(got, zs, rtol=1e-4, atol=1e-3)
    zs_val = float(
        (world.val.eval_features() @ text.T).argmax(1).eq(world.val.labels).float().mean()
    )
    assert math.isclose(r.selection["val_init"], zs_val)
    assert r.selection["kept_init"] is True
