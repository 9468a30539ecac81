"""The scale-aware learning-rate rule (``lr_scaling: logit_scale``): known factors, fits
identical to giving the scaled rate by hand (sequential and batched), and bad values."""

from __future__ import annotations

import pytest
import torch

import croft.methods as M
from croft.errors import CroftError
from croft.methods.croft.engine import fit_many
from croft.methods.loop import effective_lr
from croft.simulate import random_features

S = 25.0  # logit scale of the features below: (100 / 25)^2 = 16, 100 / 25 = 4
TRAIN = random_features(4, 6, 10, 2, seed=0, scale=S)
VAL = random_features(4, 3, 10, 1, seed=1, scale=S)
BASE = {"dtype": "float64", "epochs": 3, "batch_size": 8, "warmup_epochs": 1}


@pytest.mark.parametrize(
    ("options", "scale", "expected"),
    [
        ({"lr": 0.002}, 25.0, 0.002),  # default: as given
        ({"lr": 0.002, "lr_scaling": "logit_scale"}, 25.0, 0.032),  # SGD: (100/s)^2
        ({"lr": 0.002, "lr_scaling": "logit_scale"}, 100.0, 0.002),  # CLIP's scale: unchanged
        ({"lr": 0.001, "lr_scaling": "logit_scale", "optimizer": "adamw"}, 25.0, 0.004),
    ],
)
def test_effective_lr_known_factors(options: dict, scale: float, expected: float) -> None:
    method = "tip_adapter_f" if options.get("optimizer") == "adamw" else "ce_adapter"
    cfg = M.make_config(M.METHODS.get(method).config_cls, options)
    assert effective_lr(cfg, scale) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("method", ["ce_adapter", "croft"])
def test_scaled_fit_equals_the_hand_scaled_rate(method: str) -> None:
    scaled = M.fit(method, TRAIN, VAL, **BASE, lr=0.002, lr_scaling="logit_scale")
    by_hand = M.fit(method, TRAIN, VAL, **BASE, lr=0.002 * (100.0 / S) ** 2)
    for k in ("fc_i", "fc_t"):
        assert torch.equal(getattr(scaled.head, k), getattr(by_hand.head, k))
    peak = [h["lr"] for h in scaled.history][1]  # epoch 1: the first after the warm-up
    assert peak == pytest.approx(0.032, rel=1e-12)
    assert scaled.history[0]["lr"] == pytest.approx(1e-5)  # the warm-up rate is not scaled


def test_batched_members_resolve_the_rule_like_single_fits() -> None:
    members = [
        (TRAIN, VAL, {**BASE, "lr": 0.002, "lr_scaling": "logit_scale", "seed": 1}),
        (TRAIN, VAL, {**BASE, "lr": 0.002 * 16.0, "seed": 1}),
        (TRAIN, VAL, {**BASE, "lr": 0.002, "seed": 1}),
    ]
    out = fit_many("ce_adapter", members)
    assert torch.allclose(out[0].head.fc_i, out[1].head.fc_i, atol=1e-12)
    assert not torch.allclose(out[0].head.fc_i, out[2].head.fc_i, atol=1e-6)
    single = M.fit("ce_adapter", TRAIN, VAL, **members[0][2])
    assert torch.allclose(out[0].head.fc_i, single.head.fc_i, atol=1e-10)


def test_unknown_scaling_is_one_line() -> None:
    with pytest.raises(CroftError, match="lr_scaling 'scaled': use one of none, logit_scale"):
        M.fit("ce_adapter", TRAIN, VAL, **BASE, lr_scaling="scaled")
