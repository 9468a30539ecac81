"""Issue 24's attribution controls, each an option that is off by default: the CE adapter
in the paper variant's parametrisation (``residual``), the paper variant without worst-case
features (``wccf: false``), and λ2 rescaled per energy temperature (``lambda2_scaling``)."""

from __future__ import annotations

import pytest
import torch

import croft.methods as M
from croft.errors import CroftError
from croft.experiments.runkey import config_document
from croft.methods.croft.config import CEAdapterConfig
from croft.methods.croft.engine import fit_many
from croft.methods.croft.fit import CroftConfig, SingleStep
from croft.simulate import random_features as make_set

D, C, N = 8, 4, 6
TRAIN, VAL = make_set(5, 8, 12, 3, 0), make_set(5, 4, 12, 1, 2)
BASE = {"dtype": "float64", "epochs": 4, "batch_size": 8, "seed": 1}


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=torch.float64) * 3.0
    t = torch.randn(C, D, generator=g, dtype=torch.float64) * 2.0
    return x, t, torch.arange(N) % C


def _steps(cfg, steps: int = 10, scale: float = 1.0):  # noqa: ANN001, ANN202
    x, t, y = _data(4)
    member = SingleStep(cfg, D, scale)
    losses = [member.step(x, y, t) for _ in range(steps)]
    return member, losses


# ------------------------------------------------------------------ residual CE adapter
def test_residual_ce_starts_at_the_identity_like_the_plain_adapter() -> None:
    member = SingleStep(CEAdapterConfig(residual=True, dtype="float64"), D, 1.0)
    assert member.params.residual
    assert torch.equal(member.params.mats["fc_i"], torch.zeros(1, D, D, dtype=torch.float64))
    for w in member.matrices():
        assert torch.equal(w, torch.eye(D, dtype=torch.float64))  # zero-shot's head


def test_without_weight_decay_residual_ce_is_the_plain_adapter() -> None:
    """W and W − I get the same gradient: only the decay's target differs."""
    plain, _ = _steps(CEAdapterConfig(weight_decay=0.0, lr=0.2, dtype="float64"))
    resid, _ = _steps(CEAdapterConfig(weight_decay=0.0, lr=0.2, dtype="float64", residual=True))
    for a, b in zip(plain.matrices()[:2], resid.matrices()[:2], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        assert not torch.equal(a, torch.eye(D, dtype=a.dtype)), "the adapter did not move"


def test_residual_ce_decays_towards_the_identity() -> None:
    """Issue 24: ‖W − I‖/√D ≈ 1.0 for the CE adapter, ≈ 0.12 for the paper variant."""
    far = {}
    for residual in (False, True):
        cfg = CEAdapterConfig(weight_decay=0.5, lr=0.2, dtype="float64", residual=residual)
        member, _ = _steps(cfg)
        far[residual] = float((member.matrices()[0] - torch.eye(D)).norm() / D**0.5)
    assert far[False] > 0.3
    assert far[True] < 0.1


def test_residual_members_batch_with_plain_ones_and_equal_their_single_fits() -> None:
    members = [
        (TRAIN, VAL, {**BASE, "lr": 0.5, "weight_decay": 0.3}),
        (TRAIN, VAL, {**BASE, "lr": 0.5, "weight_decay": 0.3, "residual": True}),
        (TRAIN, VAL, {**BASE, "lr": 0.1, "residual": True}),
    ]
    batched = fit_many("ce_adapter", members)
    for (tr, va, opts), b in zip(members, batched, strict=True):
        s = M.fit("ce_adapter", tr, va, **opts)
        assert float((s.head.fc_i - b.head.fc_i).abs().max()) <= 1e-10
        assert s.head.meta["config"]["residual"] == opts.get("residual", False)
    assert float((batched[0].head.fc_i - batched[1].head.fc_i).abs().max()) > 1e-6


def test_residual_off_is_the_default_and_leaves_run_keys_as_they_were() -> None:
    assert CEAdapterConfig().residual is False
    old = {"lr": 0.06, "epochs": 30}
    doc = config_document({}, "ce_adapter", old, "photo", 1)
    assert config_document({}, "ce_adapter", {**old, "residual": False}, "photo", 1) == doc
    assert config_document({}, "ce_adapter", {**old, "residual": True}, "photo", 1) != doc
    plain = M.fit("ce_adapter", TRAIN, VAL, **BASE)
    off = M.fit("ce_adapter", TRAIN, VAL, **BASE, residual=False)
    assert torch.equal(plain.head.fc_i, off.head.fc_i)


# ------------------------------------------------- paper variant without worst-case features
def test_paper_without_worst_case_features_never_calls_the_generator() -> None:
    """``wccf: false``: the generator is never stepped and λ1 has no term left."""
    fits = [
        M.fit("croft", TRAIN, VAL, **BASE, variant="paper", wccf=False, lambda2=1.0, lambda1=lam)
        for lam in (0.0, 15.0)
    ]
    assert torch.equal(fits[0].head.generator, torch.eye(TRAIN.dim, dtype=torch.float64))
    assert torch.equal(fits[0].head.fc_i, fits[1].head.fc_i)
    assert torch.equal(fits[0].head.fc_t, fits[1].head.fc_t)
    assert all(h["loss1"] == 0.0 for h in fits[0].history)
    on = M.fit("croft", TRAIN, VAL, **BASE, variant="paper", lambda2=1.0, lambda1=15.0)
    assert not torch.equal(on.head.generator, fits[0].head.generator)


# ------------------------------------------------------------ λ2 rescaled per temperature
def test_lambda2_scaling_multiplies_the_penalty_by_s_squared_at_tau_one_over_s() -> None:
    s = 18.0
    tau = 1.0 / s
    common = {"variant": "paper", "energy_temperature": tau, "lr": 0.05, "dtype": "float64"}
    scaled = CroftConfig(**common, lambda2=0.1, lambda2_scaling="temperature")
    assert scaled.lambda2_effective == pytest.approx(0.1 * s * s, rel=1e-12)
    by_hand = CroftConfig(**common, lambda2=scaled.lambda2_effective)
    a, la = _steps(scaled, steps=3)
    b, lb = _steps(by_hand, steps=3)
    for x, y in zip(a.matrices(), b.matrices(), strict=True):
        assert torch.equal(x, y)
    first = la[0]
    assert first.loss2 > 0.0
    assert first.loss == pytest.approx(first.loss_ce + first.loss1 + 0.1 * s * s * first.loss2)
    plain, _ = _steps(CroftConfig(**common, lambda2=0.1), steps=3)
    assert not torch.equal(plain.matrices()[0], a.matrices()[0])


def test_lambda2_scaling_changes_nothing_at_temperature_one() -> None:
    common = {"variant": "paper", "lr": 0.05, "dtype": "float64", "lambda2": 1.0}
    a, _ = _steps(CroftConfig(**common, lambda2_scaling="temperature"), steps=3)
    b, _ = _steps(CroftConfig(**common), steps=3)
    for x, y in zip(a.matrices(), b.matrices(), strict=True):
        assert torch.equal(x, y)


def test_lambda2_scaling_is_checked() -> None:
    with pytest.raises(CroftError, match="paper variant only"):
        CroftConfig(variant="official", lambda2_scaling="temperature").check()
    with pytest.raises(CroftError, match="use one of none, temperature"):
        CroftConfig(variant="paper", lambda2_scaling="square").check()
    assert CroftConfig().lambda2_scaling == "none"
    doc = config_document({}, "croft", {"lambda2": 1.0}, "photo", 1)
    same = config_document({}, "croft", {"lambda2": 1.0, "lambda2_scaling": "none"}, "photo", 1)
    assert same == doc
