"""Buffers the batched official step reuses across steps (croft.methods.croft.workspace):
the same values as the autograd forms they replace (bit-identical forwards, gradients to
float64 rounding), and no stale buffer or constant between steps."""

from __future__ import annotations

import pytest
import torch

from croft.methods.croft import core
from croft.methods.croft import workspace as W
from croft.methods.croft.steps import adapt as autograd_adapt
from croft.methods.text import eps_normalize as n


def _rand(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [6, 40])
def test_adapt_equals_autograd_form(dtype: torch.dtype, rows: int) -> None:
    x, cot = _rand(3, rows, 16, seed=0, dtype=dtype), _rand(3, rows, 16, seed=1, dtype=dtype)
    w = torch.eye(16, dtype=dtype) + 0.1 * _rand(3, 16, 16, seed=2, dtype=dtype)
    w.requires_grad_(True)
    r = torch.tensor([0.2, 0.5, 0.9], dtype=dtype)[:, None, None]
    ref = autograd_adapt(x, w, r, 1 - r)
    (g_ref,) = torch.autograd.grad((ref * cot).sum(), w)
    ws = W.Workspace()
    r1 = 1 - r
    for x_const in (False, False, True, True):  # later calls reuse every buffer
        out = W.adapt(x, w, r, r1, ws, "a", x_const)
        assert torch.equal(out, ref) and out.stride() == ref.stride()
        (g,) = torch.autograd.grad((out * cot).sum(), w)
        tol = 1e-13 if dtype == torch.float64 else 1e-5
        assert (g - g_ref).abs().max() <= tol * g_ref.abs().max()


def test_adapt_names_keep_separate_buffers() -> None:
    ws, w = W.Workspace(), torch.eye(8, dtype=torch.float64).expand(2, 8, 8)
    r = torch.full((2, 1, 1), 0.5, dtype=torch.float64)
    a = W.adapt(_rand(2, 5, 8, seed=3), w, r, 1 - r, ws, "img")
    a_copy = a.clone()
    W.adapt(_rand(2, 5, 8, seed=4), w, r, 1 - r, ws, "txt")  # same shape, other name
    assert torch.equal(a, a_copy)


@pytest.mark.parametrize("reduction", ["setup1", "setup2"])
@pytest.mark.parametrize("classes", [3, 30])  # Gram form (M + C <= D/2) and g formed
def test_official_penalty_equals_core(reduction: str, classes: int) -> None:
    g_n, m, dim = 2, 4, 32
    rows = _rand(g_n, m, dim, seed=5).requires_grad_(True)
    t_zs = n(_rand(g_n, classes, dim, seed=6))
    wi = (torch.eye(dim) + 0.05 * _rand(g_n, dim, dim, seed=7)).requires_grad_(True)
    wt = (torch.eye(dim) + 0.05 * _rand(g_n, dim, dim, seed=8)).requires_grad_(True)
    r = torch.tensor([0.3, 0.7], dtype=torch.float64)[:, None, None]
    rt = torch.tensor([0.4, 0.6], dtype=torch.float64)[:, None, None]
    args = (rows, rows @ wi, t_zs, t_zs @ wt, r, 1 - r, rt, 1 - rt, reduction)
    ref = core.official_penalty(*args)
    g_ref = torch.autograd.grad(ref.sum(), (rows, wi, wt))
    ws = W.Workspace()
    for with_wt in (False, True, False, True):  # every buffer reused once
        args = (rows, rows @ wi, t_zs, t_zs @ wt, r, 1 - r, rt, 1 - rt, reduction)
        for out in [W.official_penalty(*args, ws, wt if with_wt else None)]:
            assert torch.equal(out, ref)
            grads = torch.autograd.grad(out.sum(), (rows, wi, wt))
            for a, b in zip(grads, g_ref, strict=True):
                assert (a - b).abs().max() <= 1e-12 * b.abs().max()


def test_const_follows_its_source() -> None:
    ws, calls = W.Workspace(), []

    def make(t: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return 2 * t

    t = torch.ones(3)
    assert torch.equal(ws.const("k", t, make), 2 * t)
    ws.const("k", t, make)
    assert len(calls) == 1  # cached
    t.add_(1.0)  # modified in place: recomputed
    assert torch.equal(ws.const("k", t, make), torch.full((3,), 4.0)) and len(calls) == 2
    assert torch.equal(ws.const("k", torch.zeros(3), make), torch.zeros(3)) and len(calls) == 3


def test_gram_sq_recopies_new_text() -> None:
    """The text rows of the reused buffer follow the text passed (another tensor, or the
    same one modified in place)."""
    ws = W.Workspace()
    rows, p, q = _rand(2, 4, 8, seed=9), _rand(2, 4, 8, seed=10), _rand(2, 6, 8, seed=11)
    for seed in (12, 13):
        t_zs = _rand(2, 6, 8, seed=seed)
        for _ in range(2):
            ref = ((torch.cat([rows, t_zs], 1).mT @ torch.cat([p, q], 1)) ** 2).sum((-2, -1))
            assert torch.equal(W.gram_sq(rows, t_zs, p, q, ws), ref)
            t_zs.mul_(0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_covariate_and_rows_w_equal_autograd_forms(dtype: torch.dtype) -> None:
    x = _rand(3, 6, 16, seed=14, dtype=dtype)
    w = (torch.eye(16, dtype=dtype) + 0.1 * _rand(3, 16, 16, seed=15, dtype=dtype)).requires_grad_()
    gen = (0.1 * _rand(3, 16, 16, seed=16, dtype=dtype)).requires_grad_()
    r = torch.full((3, 1, 1), 0.4, dtype=dtype)
    x_zs, tol = n(x), (1e-13 if dtype == torch.float64 else 1e-5)

    def loss(z: torch.Tensor, zc: torch.Tensor, rw: torch.Tensor) -> torch.Tensor:
        return (zc * _rand(*zc.shape, seed=17, dtype=dtype)).sum() + (rw**2).sum()

    z = autograd_adapt(x, w, r, 1 - r)
    zc_ref = n(z @ gen + z)
    rows = torch.cat([x_zs, zc_ref], 1)
    ref_rw = rows @ w
    g_ref = torch.autograd.grad(loss(z, zc_ref, ref_rw), (w, gen))
    ws = W.Workspace()
    for _ in range(2):
        z = W.adapt(x, w, r, 1 - r, ws, "z")
        zc = W.covariate(z, gen, ws)
        rw = W.rows_w(torch.cat([x_zs, zc], 1), w, 6, ws)
        assert torch.equal(zc, zc_ref) and torch.equal(rw, ref_rw)
        grads = torch.autograd.grad(loss(z, zc, rw), (w, gen))
        for a, b in zip(grads, g_ref, strict=True):
            assert (a - b).abs().max() <= tol * b.abs().max()


def test_weight_grads_sum_in_one_block_between_backwards() -> None:
    """As the engine runs them (begin_backward, backward, read .grad, drop it): a matrix
    used by two Functions gets the sum of both contributions, every step."""
    x, cot = _rand(2, 5, 8, seed=18), _rand(2, 5, 8, seed=19)
    w = (torch.eye(8, dtype=torch.float64) + 0.1 * _rand(2, 8, 8, seed=20)).requires_grad_()
    r = torch.full((2, 1, 1), 0.3, dtype=torch.float64)
    z = autograd_adapt(x, w, r, 1 - r)
    (ref,) = torch.autograd.grad((z * cot).sum() + (z @ w).square().sum(), w)
    ws = W.Workspace()
    for _ in range(3):
        ws.begin_backward()
        z = W.adapt(x, w, r, 1 - r, ws, "z")
        ((z * cot).sum() + W.rows_w(z, w, 0, ws).square().sum()).backward()
        assert (w.grad - ref).abs().max() <= 1e-13 * ref.abs().max()
        w.grad = None
