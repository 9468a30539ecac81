"""The paper variant on its own terms, and each of its differences from ``official``."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, vmap

from croft.methods.croft.core import adapt_image, adapt_text, per_sample_energy_grad_sq
from croft.methods.croft.fit import CroftConfig, SingleStep, paper_covariate

D, C, N = 8, 4, 6


def _data(seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=dtype) * 3.0
    t = torch.randn(C, D, generator=g, dtype=dtype) * 2.0
    wi = torch.eye(D, dtype=dtype) + 0.3 * torch.randn(D, D, generator=g, dtype=dtype)
    wt = torch.eye(D, dtype=dtype) + 0.3 * torch.randn(D, D, generator=g, dtype=dtype)
    y = torch.arange(N) % C
    return x, t, wi, wt, y


def _reference(x, t, wi, wt, ratio, ratio_text, tau):
    """Per-sample squared gradient norms via torch.func (materialises D×D per sample)."""

    def energy(wi_, wt_, xi):
        zi = adapt_image(xi[None], wi_, ratio)
        zt = adapt_text(t, wt_, ratio_text)
        return -tau * torch.logsumexp(zi @ zt.T / tau, dim=1)[0]

    gi, gt = vmap(grad(energy, argnums=(0, 1)), in_dims=(None, None, 0))(wi, wt, x)
    return (gi**2).sum((1, 2)) + (gt**2).sum((1, 2))


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_per_sample_penalty_matches_per_sample_autograd(tau: float) -> None:
    x, t, wi, wt, _ = _data()
    got = per_sample_energy_grad_sq(x, t, wi, wt, 0.2, 0.5, tau)
    want = _reference(x, t, wi, wt, 0.2, 0.5, tau)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_per_sample_penalty_is_not_the_norm_of_the_batch_sum() -> None:
    x, t, wi, wt, _ = _data(1)
    per_sample = per_sample_energy_grad_sq(x, t, wi, wt, 0.2, 0.5).sum()
    wi_, wt_ = wi.clone().requires_grad_(), wt.clone().requires_grad_()
    e = -torch.logsumexp(adapt_image(x, wi_, 0.2) @ adapt_text(t, wt_, 0.5).T, dim=1)
    gi, gt = torch.autograd.grad(e.sum(), (wi_, wt_))
    batch = (gi**2).sum() + (gt**2).sum()
    assert not torch.isclose(per_sample, batch, rtol=1e-3)


def test_penalty_gradient_matches_finite_differences() -> None:
    """The penalty is differentiable (second order) and its gradient is right."""
    x, t, wi, wt, _ = _data(2)
    wi = wi.requires_grad_()
    wt = wt.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: per_sample_energy_grad_sq(x, t, a, b, 0.2, 0.5).mean(),
        (wi, wt),
        eps=1e-6,
        atol=1e-6,
        rtol=1e-5,
    )


def _run(variant: str, **over):
    """One step from identity; returns the parameters after it."""
    x, t, _, _, y = _data(3)
    opts = {"weight_decay": 0.0, "lr": 0.01, "gen_step": 1, "lambda2": 1.0, "dtype": "float64"}
    opts.update(over)
    cfg = CroftConfig(variant=variant, **opts)
    member = SingleStep(cfg, D, 10.0)
    member.step(x, y, t)
    return list(member.matrices())


def test_paper_generator_steps_move_only_the_generator() -> None:
    """Adapters end the same with 3 generator steps or none (every covariate term off:
    L_c, L_e and the adapter-side disalignment ``align_term``)."""
    off = {"lambda_c": 0.0, "lambda2": 0.0, "align_term": False}
    with_gen = _run("paper", gen_step=3, **off)
    without = _run("paper", gen_step=0, **off)
    torch.testing.assert_close(with_gen[0], without[0], rtol=0, atol=0)
    torch.testing.assert_close(with_gen[1], without[1], rtol=0, atol=0)
    assert not torch.equal(with_gen[2], without[2]), "the generator did not move"


def test_official_generator_steps_move_the_adapters_too() -> None:
    """B2: in the authors' code every generator step also steps the adapter optimiser."""
    with_gen = _run("official", gen_step=3, lambda2=0.0)
    without = _run("official", gen_step=0, lambda2=0.0)
    assert not torch.equal(with_gen[0], without[0])


def test_paper_main_step_leaves_the_generator_alone() -> None:
    wi, wt, wg = _run("paper", gen_step=0)
    assert not torch.equal(wi, torch.eye(D, dtype=wi.dtype))
    assert not torch.equal(wt, torch.eye(D, dtype=wt.dtype))
    assert torch.equal(wg, torch.eye(D, dtype=wg.dtype)), "the main step changed the generator"


def test_official_main_step_moves_the_generator_too() -> None:
    """B2: in the authors' code the main loss steps the generator (gen_step 0, wd 0)."""
    wg = _run("official", gen_step=0)[2]
    assert not torch.equal(wg, torch.eye(D, dtype=wg.dtype))


def test_paper_weight_decay_pulls_towards_identity() -> None:
    """B3: official decays W towards 0; paper decays W - I (W stays near the identity)."""
    diag = {}
    for variant in ("official", "paper"):
        x, t, _, _, y = _data(4)
        cfg = CroftConfig(
            variant=variant, weight_decay=0.5, lr=0.2, lambda2=0.0, wccf=False, dtype="float64"
        )
        member = SingleStep(cfg, D, 1.0)
        for _ in range(10):
            member.step(x, y, t)
        diag[variant] = float(torch.diagonal(member.matrices()[0]).mean())
    assert diag["official"] < 0.6
    assert diag["paper"] > 0.9


def test_paper_covariate_is_a_shift_of_the_frozen_feature() -> None:
    x, *_ = _data(5)
    ident = torch.zeros(D, D, dtype=x.dtype)  # G = 0: x^c = n(x̂)
    unit = x / x.norm(dim=1, keepdim=True)
    torch.testing.assert_close(paper_covariate(x, ident), unit, rtol=0, atol=1e-5)
    eye = torch.eye(D, dtype=x.dtype)  # G = I: n(2x̂) = x̂
    torch.testing.assert_close(paper_covariate(x, eye), unit, rtol=0, atol=1e-5)
    shifted = paper_covariate(x, 0.5 * torch.randn(D, D, dtype=x.dtype))
    assert not torch.allclose(shifted, unit, atol=1e-3)


def test_paper_variant_uses_x_w_transpose_everywhere() -> None:
    """With a non-symmetric W the paper penalty uses x Wᵀ, the classifier's map."""
    x, t, wi, wt, _ = _data(6)
    sym_i = wi.T.contiguous()
    a = per_sample_energy_grad_sq(x, t, wi, wt, 0.2, 0.5)
    b = per_sample_energy_grad_sq(x, t, sym_i, wt, 0.2, 0.5)
    assert not torch.allclose(a, b)
    # and it agrees with the classifier's map: the reference built on adapt_image (x Wᵀ)
    torch.testing.assert_close(a, _reference(x, t, wi, wt, 0.2, 0.5, 1.0))
