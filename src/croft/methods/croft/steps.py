"""Batched training steps of the adapter family: G independent fits stacked on axis 0.

Every tensor carries a leading *member* axis ``G``: features ``x`` ``(G, B, D)``, labels
``y`` ``(G, B)``, class text ``t`` ``(G, C, D)``, matrices ``(G, D, D)``. Per-member
scalars (ratios, λ1, λ2, scale, lr, weight decay, momentum, …) are ``(G,)`` tensors,
viewed as ``(G, 1, 1)`` next to matrices. Every reduction runs per member and the members'
losses are summed before ``backward``, so each member receives exactly the gradient of its
own loss with respect to its own matrices: the steps below are the single-fit steps of
:mod:`croft.methods.croft.fit` written with batched matmuls, op for op in the same order.

SGD is :class:`torch.optim.SGD`'s fused kernel per member (:meth:`BatchedParams.sgd`). A
parameter without a gradient in a step is not stepped (its ``.grad`` is ``None`` after
``zero_grad``), as with the optimiser. No step reads a value to the host (the per-member
SGD scalars are read once per epoch, :meth:`Hyper.host`).

The official and CE steps run their large pieces through
:mod:`croft.methods.croft.workspace` (the same forward values; backwards written out, equal
to autograd's to rounding): every ``(G, C, D)`` and ``(G, D, D)`` tensor lives in a buffer
of the chunk's :class:`~croft.methods.croft.workspace.Workspace` (``BatchedParams.ws``),
reused by every step, and each matrix's gradient is summed in one reused block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from croft.methods.croft.core import EPS, norm_vjp
from croft.methods.croft.workspace import Workspace, official_penalty
from croft.methods.croft.workspace import adapt as ws_adapt
from croft.methods.croft.workspace import covariate as ws_covariate
from croft.methods.croft.workspace import logits as ws_logits
from croft.methods.croft.workspace import rows_w as ws_rows_w
from croft.methods.text import eps_normalize as n

MATRICES = ("fc_i", "fc_t", "generator")


@dataclass
class Hyper:
    """Per-member scalars, each ``(G,)`` in the training dtype. ``m(name)`` is ``(G, 1, 1)``."""

    values: dict[str, torch.Tensor]
    _host: dict[str, tuple[torch.Tensor, list[float]]] = field(default_factory=dict)
    _views: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def v(self, name: str) -> torch.Tensor:
        return self.values[name]

    def m(self, name: str) -> torch.Tensor:
        return self._view(name, 2)

    def col(self, name: str) -> torch.Tensor:
        return self._view(name, 1)

    def _view(self, name: str, extra: int) -> torch.Tensor:
        """``values[name]`` viewed with ``extra`` trailing axes of 1, made once per tensor
        (each fresh view is 2-4 op calls; a step asks for ~100)."""
        tensor = self.values[name]
        hit = self._views.get((name, extra))
        if hit is None or hit[0] is not tensor:
            hit = (tensor, tensor.view(tensor.shape + (1,) * extra))
            self._views[(name, extra)] = hit
        return hit[1]

    def host(self, name: str) -> list[float]:
        """The values as floats, read to the host once per tensor (``lr``: once per epoch)."""
        tensor = self.values[name]
        cached = self._host.get(name)
        if cached is None or cached[0] is not tensor:
            cached = (tensor, [float(v) for v in tensor.tolist()])
            self._host[name] = cached
        return cached[1]


@dataclass
class BatchedParams:
    """Trainable ``(G, D, D)`` matrices and their SGD momentum buffers.

    ``residual``: the tensors hold ``W - I`` (the paper variant: weight decay then pulls
    ``W`` towards ``I``) and :meth:`full` adds ``I``.
    """

    mats: dict[str, torch.Tensor]
    residual: bool
    bufs: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    ws: Workspace = field(default_factory=Workspace)  # buffers reused across steps
    views: dict[str, tuple] = field(default_factory=dict)  # per-member slices (:meth:`sgd`)

    @classmethod
    def create(
        cls, members: int, dim: int, dtype: torch.dtype, device: torch.device, residual: bool
    ) -> BatchedParams:
        def init() -> torch.Tensor:
            if residual:
                return torch.zeros(members, dim, dim, dtype=dtype, device=device)
            eye = torch.eye(dim, dtype=dtype, device=device)
            return eye.expand(members, dim, dim).clone()

        mats = {k: init().requires_grad_(True) for k in MATRICES}
        bufs = {k: torch.zeros_like(v, requires_grad=False) for k, v in mats.items()}
        return cls(mats, residual, bufs, dict.fromkeys(MATRICES, 0))

    def full(self, name: str) -> torch.Tensor:
        p = self.mats[name]
        if not self.residual:
            return p
        return p + torch.eye(p.shape[-1], dtype=p.dtype, device=p.device)

    def _slices(self, name: str) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """The members' ``(D, D)`` views of a matrix and of its momentum, made once."""
        p, buf = self.mats[name], self.bufs[name]
        hit = self.views.get(name)
        if hit is None or hit[0] is not p or hit[1] is not buf:
            hit = self.views[name] = (p, buf, p.detach().unbind(0), buf.unbind(0))
        return hit[2], hit[3]

    def zero_grad(self, names: tuple[str, ...]) -> None:
        """Drop the gradients before a backward (:meth:`sgd` reads them after it)."""
        for k in names:
            self.mats[k].grad = None
        self.ws.begin_backward()

    @torch.no_grad()
    def sgd(self, names: tuple[str, ...], hp: Hyper) -> None:
        """One step of :class:`torch.optim.SGD`'s rule for every named matrix with a gradient.

        ``d = g + wd·p``; ``buf = d`` on a matrix's first step, else ``buf = m·buf + d``;
        ``p -= lr·buf`` (no buffer when ``m = 0``: ``p -= lr·d``). It is the optimiser's own
        fused kernel (``torch._fused_sgd_``, one pass over parameter, gradient and buffer;
        bit-identical to ``torch.optim.SGD`` in float32/64), called once per set of members
        with equal ``(lr, momentum, weight decay)`` on the members' ``(D, D)`` slices.
        """
        lr, mom, wd = hp.host("lr"), hp.host("momentum"), hp.host("weight_decay")
        groups: dict[tuple[float, float, float], list[int]] = {}
        for g, key in enumerate(zip(lr, mom, wd, strict=True)):
            groups.setdefault(key, []).append(g)
        for k in names:
            p = self.mats[k]
            grad = p.grad
            if grad is None:
                continue
            p.grad = None
            data, buf = self._slices(k)
            grads, first = grad.unbind(0), self.steps[k] == 0  # one op, not G
            for (lr_g, mom_g, wd_g), idx in groups.items():
                torch._fused_sgd_(
                    [data[g] for g in idx], [grads[g] for g in idx],
                    [buf[g] for g in idx] if mom_g != 0.0 else [],
                    weight_decay=wd_g, momentum=mom_g, lr=lr_g, dampening=0.0,
                    nesterov=False, maximize=False, is_first_step=first,
                )  # fmt: skip
            self.steps[k] += 1


# ------------------------------------------------------------------------ shared terms
def adapt(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
    """``n(r·x Wᵀ + r1·x)``: ``x`` ``(G, N, D)``, ``w`` ``(G, D, D)``, ``r``, ``r1`` ``(G,1,1)``."""
    return n(r * xwt(x, w) + r1 * x)


def xwt(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x Wᵀ`` computed as ``(W xᵀ)ᵀ``: the same numbers, but autograd's gradient for ``W``
    is then the contiguous ``(∂ᵀ) x``, not a transposed ``(G, D, D)`` copy."""
    return (w @ x.mT).mT


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per member: ``logits`` ``(G, B, C)``, ``y`` ``(G, B)`` -> ``(G,)``."""
    g, b, c = logits.shape
    return (
        F.cross_entropy(logits.reshape(g * b, c), y.reshape(g * b), reduction="none")
        .view(g, b)
        .mean(1)
    )


def label_mask(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``M[g, i, j] = 1`` where ``y[g, i] == y[g, j]``, ``(G, B, B)`` (any leading axes)."""
    return (y[..., :, None] == y[..., None, :]).to(dtype)


def generator_loss(
    z_img: torch.Tensor,
    z_txt: torch.Tensor,
    y: torch.Tensor,
    gen: torch.Tensor,
    hp: Hyper,
    ws: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Official generator objective per member ``(G,)`` and ``z_I^c`` ``(G, B, D)``
    (``ws``: ``z_I^c`` by :func:`croft.methods.croft.workspace.covariate`)."""
    if ws is None:
        zc = n(z_img @ gen + z_img)
        ce = cross_entropy(hp.m("scale") * zc @ z_txt.mT, y)
    else:
        zc = ws_covariate(z_img, gen, ws)
        ce = cross_entropy(ws_logits(zc, z_txt, hp.m("scale"), ws), y)
    disalign = (label_mask(y, zc.dtype) * (zc @ z_img.mT)).mean((1, 2))
    return ce + hp.v("lambda1") * disalign, zc


def energy_penalty(
    rows: torch.Tensor, t_zs: torch.Tensor, w_img: torch.Tensor, w_txt: torch.Tensor, hp: Hyper,
    reduction: str, rows_w: torch.Tensor | None = None, ws: Workspace | None = None,
) -> torch.Tensor:  # fmt: skip
    """The official penalty ``loss2`` per member ``(G,)`` (the closed form of
    :func:`croft.methods.croft.core.official_penalty`, buffers in ``ws``). ``rows_w`` is
    ``rows @ w_img`` when the caller has it; ``t_zs`` is data."""
    return official_penalty(
        rows, rows @ w_img if rows_w is None else rows_w, t_zs, None, hp.m("ratio"),
        hp.m("ratio1"), hp.m("ratio_text"), hp.m("ratio_text1"), reduction,
        Workspace() if ws is None else ws, w_txt,
    )  # fmt: skip


@dataclass
class StepOut:
    """Per-member losses of one batch, each ``(G,)`` (detached, on the device)."""

    loss: torch.Tensor
    loss_ce: torch.Tensor
    loss1: torch.Tensor
    loss2: torch.Tensor
    gen_losses: list[torch.Tensor]


def _out(loss, loss_ce, loss1, loss2, gen_losses) -> StepOut:  # noqa: ANN001
    return StepOut(loss.detach(), loss_ce.detach(), loss1.detach(), loss2.detach(), gen_losses)


@dataclass(frozen=True)
class Structure:
    """What every member of a group shares (the branches of the step)."""

    variant: str  # "official", "paper" or "ce"
    wccf: bool = True
    gen_step: int = 1
    covariate_rows: bool = True
    energy_reduction: str = "setup2"
    penalty: bool = True  # paper: lambda2 != 0
    align_term: bool = True  # paper: −λ1·disalign in the adapter loss
    residual: bool = False  # ce: the matrices hold W − I (the paper variant's always do)


# ------------------------------------------------------------------------ official step
def official_step(
    p: BatchedParams, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, hp: Hyper, s: Structure
) -> StepOut:
    """The authors' step for G members (see :func:`croft.methods.croft.official_step`)."""

    def step_all(loss: torch.Tensor) -> None:
        p.zero_grad(MATRICES)
        loss.sum().backward(retain_graph=True)
        p.sgd(MATRICES, hp)

    fc_i, fc_t, gen = p.mats["fc_i"], p.mats["fc_t"], p.mats["generator"]
    z_img = ws_adapt(x, fc_i, hp.m("ratio"), hp.m("ratio1"), p.ws, "z_img")
    z_txt = ws_adapt(t, fc_t, hp.m("ratio_text"), hp.m("ratio_text1"), p.ws, "z_txt", True)
    x_zs, t_zs = n(x), p.ws.const("t_zs", t, n)  # t is the chunk's: n(t) once
    logits = ws_logits(z_img, z_txt, hp.m("scale"), p.ws)
    gen_losses: list[torch.Tensor] = []
    if s.wccf:
        for _ in range(s.gen_step):
            loss_g, _ = generator_loss(z_img, z_txt, y, gen, hp, p.ws)
            gen_losses.append(loss_g.detach())
            step_all(loss_g)
    zc = ws_covariate(z_img, gen, p.ws)  # generator_loss's z_I^c (not its loss)
    rows, nb = x_zs, x.shape[1]  # x_zs is data: no gradient is formed for it
    if s.covariate_rows:
        disalign = (label_mask(y, zc.dtype) * (zc @ x_zs.mT)).mean((1, 2))
        rows = torch.cat([x_zs, zc], dim=1)
        rows_w = ws_rows_w(rows, fc_i, nb, p.ws)  # its zc rows serve the covariate branch too
        zc_theta = hp.m("ratio") * zc + hp.m("ratio1") * rows_w[:, nb:]
        loss1 = cross_entropy(ws_logits(zc_theta, z_txt, hp.m("scale"), p.ws), y)
        loss1 = loss1 - hp.v("lambda1") * disalign
    else:
        rows_w = ws_rows_w(rows, fc_i, nb, p.ws)
        loss1 = cross_entropy(ws_logits(zc, z_txt, hp.m("scale"), p.ws), y)
    loss2 = energy_penalty(rows, t_zs, fc_i, fc_t, hp, s.energy_reduction, rows_w, p.ws)
    loss_ce = cross_entropy(logits, y)
    loss = loss_ce + (loss1 if s.wccf else 0.0) + hp.v("lambda2") * loss2
    step_all(loss)
    return _out(loss, loss_ce, loss1, loss2, gen_losses)


# --------------------------------------------------------------------------- paper step
def paper_covariate(x: torch.Tensor, gen: torch.Tensor) -> torch.Tensor:
    """Paper-variant covariate features ``x^c = n(x̂ Gᵀ + x̂)``, ``x̂ = n(x)``, ``(…, N, D)``."""
    xh = n(x)
    return n(xwt(xh, gen) + xh)


def paper_disalign(zc: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cosine between ``zc_i`` and ``z_j`` over same-label pairs, per leading index."""
    m = label_mask(y, zc.dtype)
    return (m * (zc @ z.mT)).sum((-2, -1)) / m.sum((-2, -1))


def per_sample_energy_grad_sq(
    rows: torch.Tensor, t: torch.Tensor, w_img: torch.Tensor, w_txt: torch.Tensor, hp: Hyper
) -> torch.Tensor:
    """:func:`croft.methods.croft.core.per_sample_energy_grad_sq` per member: ``(G, M)``."""
    u = hp.m("ratio") * xwt(rows, w_img) + hp.m("ratio1") * rows
    v = hp.m("ratio_text") * xwt(t, w_txt) + hp.m("ratio_text1") * t
    z_i, z_t = n(u), n(v)
    p = torch.softmax(z_i @ z_t.mT / hp.m("temperature"), dim=-1)  # (G, M, C)
    a = norm_vjp(u, -(p @ z_t))
    img_sq = hp.col("ratio") ** 2 * (a * a).sum(-1) * (rows * rows).sum(-1)
    r_v = v.norm(dim=-1)  # (G, C)
    alpha = 1.0 / (EPS + r_v)
    beta = alpha * alpha / r_v
    c = z_i @ v.mT  # (G, M, C)
    w1 = -p * alpha[:, None, :]
    w2 = p * beta[:, None, :] * c
    big_a = w1 @ t  # (G, M, D)
    k_t = t @ t.mT
    k_vt = (v @ v.mT) * k_t
    term_x = (z_i * z_i).sum(-1) * (big_a * big_a).sum(-1)
    term_xy = 2.0 * ((c * w2) * (big_a @ t.mT)).sum(-1)
    term_y = ((w2 @ k_vt) * w2).sum(-1)
    txt_sq = hp.col("ratio_text") ** 2 * (term_x + term_xy + term_y)
    return img_sq + txt_sq


def paper_step(
    p: BatchedParams, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, hp: Hyper, s: Structure
) -> StepOut:
    """The paper variant for G members (see :func:`croft.methods.croft.paper_step`)."""
    wi, wt = p.full("fc_i"), p.full("fc_t")
    gen_losses: list[torch.Tensor] = []
    r, r1 = hp.m("ratio"), hp.m("ratio1")
    if s.wccf and s.gen_step > 0:
        with torch.no_grad():
            z_img = adapt(x, wi, r, r1)
            z_txt = adapt(t, wt, hp.m("ratio_text"), hp.m("ratio_text1"))
        wi_d = wi.detach()
        for _ in range(s.gen_step):
            zc = adapt(paper_covariate(x, p.full("generator")), wi_d, r, r1)
            loss_g = cross_entropy(hp.m("scale") * zc @ z_txt.mT, y) + hp.v(
                "lambda1"
            ) * paper_disalign(zc, z_img, y)
            p.zero_grad(("generator",))
            loss_g.sum().backward()
            p.sgd(("generator",), hp)
            gen_losses.append(loss_g.detach())
    xc = paper_covariate(x, p.full("generator")).detach()
    z_img = adapt(x, wi, r, r1)
    z_txt = adapt(t, wt, hp.m("ratio_text"), hp.m("ratio_text1"))
    loss_ce = cross_entropy(hp.m("scale") * z_img @ z_txt.mT, y)
    zero = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    loss1 = zero
    rows = n(x)
    if s.wccf:
        zc_theta = adapt(xc, wi, r, r1)
        loss1 = hp.v("lambda_c") * cross_entropy(hp.m("scale") * zc_theta @ z_txt.mT, y)
        if s.align_term:
            loss1 = loss1 - hp.v("lambda1") * paper_disalign(zc_theta, rows, y)
        rows = torch.cat([rows, xc], dim=1)
    loss2 = zero
    if s.penalty:
        sq = per_sample_energy_grad_sq(rows, t, wi, wt, hp)
        nb = x.shape[1]
        loss2 = sq[:, :nb].mean(1) + (sq[:, nb:].mean(1) if sq.shape[1] > nb else 0.0)
    loss = loss_ce + loss1 + hp.v("lambda2") * loss2
    p.zero_grad(("fc_i", "fc_t"))
    loss.sum().backward()
    p.sgd(("fc_i", "fc_t"), hp)
    return _out(loss, loss_ce, loss1, loss2, gen_losses)


def ce_step(
    p: BatchedParams, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, hp: Hyper, s: Structure
) -> StepOut:
    """CE-only adapter for G members (see :func:`croft.methods.croft.ce_step`)."""
    wi, wt = p.full("fc_i"), p.full("fc_t")
    z_img = ws_adapt(x, wi, hp.m("ratio"), hp.m("ratio1"), p.ws, "z_img")
    z_txt = ws_adapt(t, wt, hp.m("ratio_text"), hp.m("ratio_text1"), p.ws, "z_txt", True)
    loss = cross_entropy(ws_logits(z_img, z_txt, hp.m("scale"), p.ws), y)
    p.zero_grad(("fc_i", "fc_t"))
    loss.sum().backward()
    p.sgd(("fc_i", "fc_t"), hp)
    zero = torch.zeros_like(loss)
    return _out(loss, loss, zero, zero, [])


STEPS = {"official": official_step, "paper": paper_step, "ce": ce_step}


@dataclass(frozen=True)
class BatchedMethod:
    """What a method registers to train on the engine (``register_method(batched=...)``).

    ``structure(cfg)``: the :class:`Structure` (and so the step of :data:`STEPS`) a config
    selects; ``meta(cfg)``: the fitted head's ``meta``; ``hint``: the end of the one-line
    divergence error ("training diverged …; {hint}").
    """

    structure: Callable[[Any], Structure]
    meta: Callable[[Any], dict[str, Any]]
    hint: str = "lower lr"
