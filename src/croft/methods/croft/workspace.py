"""Buffers the batched official and CE steps reuse across steps (issue 22, item 4).

Why: at the Setup-I shape (C = 400, G = 8) every large per-step tensor, ``(G, C, D)`` or
``(G, D, D)``, is 6-8 MiB. glibc returns the freed top of its heap to the OS above its
(dynamic) trim threshold, so such tensors were page-faulted back, zeroed, on every step:
~1,500-2,000 faults and several ms of system time per member-step, which made batching
slower than sequential fits. Here they live in a :class:`Workspace` as long as their chunk
and are mapped once (measured: ~0-170 faults per member-step after the first step; the
Setup-II step none), with no process-wide allocator setting.

The pieces, each a :class:`torch.autograd.Function` whose forward repeats the autograd
form's ops (memory layout included: bit-identical values, tested) and whose backward is
written out (equal to autograd's to rounding, tested in float32 and float64):

* :func:`adapt` ``n(r·x Wᵀ + r1·x)`` for data ``x``; :func:`covariate` ``n(zG + z)``;
  :func:`rows_w` ``rows @ W`` (no gradient formed for the zero-shot rows); :func:`logits`
  ``s·A Tᵀ``; the penalty (:func:`official_penalty`): its text rows, energy block and
  ``J_n(v)ᵀc``, and :func:`gram_sq` ``‖[rows; t̂]ᵀ[P; Q]‖²``.
* Gradients: every contribution to a matrix (and to the class text, from the logit
  products) in one backward is summed in one block, handed to autograd as a fresh alias
  so it becomes ``.grad`` without a copy (:meth:`Workspace.weight_grad`).
* Constants: ``n(t)``, ``r1·t`` and the penalty's ``t̂`` row sums once per chunk
  (:meth:`Workspace.const`).

A buffer's contents are valid only until the next step (or, for gradients, the next
:meth:`Workspace.begin_backward`): the steps finish every backward through a graph and
read every ``.grad`` before the next one (``steps.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from croft.methods.croft.core import EPS, _norm_vjp


class Workspace:
    """Per-chunk buffers, reused by name and shape; constants derived once per input."""

    def __init__(self) -> None:
        self._bufs: dict[tuple, torch.Tensor] = {}
        self._consts: dict[str, tuple[tuple[torch.Tensor, ...], tuple[int, ...], Any]] = {}
        self._held: dict[int, tuple[torch.Tensor, int]] = {}  # id(buffer) -> its source
        self.accumulating = False  # see weight_grad
        self._written: dict[int | str, torch.Tensor] = {}

    def begin_backward(self) -> None:
        """Before a backward whose weight gradients are read and dropped before the next
        one (``BatchedParams.zero_grad``): :meth:`weight_grad` then sums every contribution
        to a matrix in one reused block."""
        self.accumulating = True
        self._written.clear()

    def weight_grad(self, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                    name: str) -> torch.Tensor | None:  # fmt: skip
        """The gradient ``a @ b`` ``(G, D, D)`` of matrix ``w``, in a reused block returned
        as a fresh alias: autograd takes it as ``w.grad`` without a copy. Between
        :meth:`begin_backward` calls, the first contribution to a leaf ``w`` writes its
        block and later ones add into it in place and return ``None`` (autograd runs a
        leaf's accumulation only after all of them); otherwise each ``name`` has its block.
        """
        shape = (a.shape[0], a.shape[1], b.shape[2])
        if not (self.accumulating and w.is_leaf):
            return torch.bmm(a, b, out=self.buf(name, shape, b)).view(shape)
        block = self.buf(f"grad_{id(w)}", shape, b)
        if id(w) in self._written:
            _add_product(block, a, b)
            return None
        self._written[id(w)] = w  # held: its id stays unique
        return torch.bmm(a, b, out=block).view(shape)

    def buf(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised buffer ``name`` of ``shape`` (dtype and device of ``like``)."""
        key = (name, tuple(shape), like.dtype, like.device)
        out = self._bufs.get(key)
        if out is None:
            out = self._bufs[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return out

    def stale(self, buf: torch.Tensor, src: torch.Tensor) -> bool:
        """True once per (``buf``, unmodified ``src``): when ``buf`` must take ``src``'s values."""
        key = id(buf)
        held = self._held.get(key)
        if held is not None and held[0] is src and held[1] == src._version:
            return False
        self._held[key] = (src, src._version)
        return True

    def const(self, name: str, src: torch.Tensor | tuple[torch.Tensor, ...],
              make: Callable[..., Any]) -> Any:  # fmt: skip
        """``make(*src)``, computed once while ``src`` (a tensor or a tuple of them) is the
        same, unmodified tensors (they are held: their identity cannot be reused)."""
        srcs = src if isinstance(src, tuple) else (src,)
        versions = tuple(t._version for t in srcs)
        hit = self._consts.get(name)
        if (
            hit is None
            or len(hit[0]) != len(srcs)
            or hit[1] != versions
            or any(a is not b for a, b in zip(hit[0], srcs, strict=True))
        ):
            hit = self._consts[name] = (srcs, versions, make(*srcs))
        return hit[2]


class _GramSq(torch.autograd.Function):
    """``sq = Σ_{d,e} ([rows; t̂]ᵀ [P; Q])²_{de}`` per member, in workspaces."""

    @staticmethod
    def forward(ctx, rows, t_zs, p, q, ws):  # noqa: ANN001, ANN205
        g_n, m, dim = rows.shape
        c = t_zs.shape[1]
        uu = ws.buf("gram_uu", (g_n, m + c, dim), rows)
        if ws.stale(uu, t_zs):  # the text rows are copied once per buffer and text
            uu[:, m:].copy_(t_zs)
        uu[:, :m].copy_(rows)
        vv = ws.buf("gram_vv", (g_n, m + c, dim), rows)
        vv[:, :m].copy_(p)
        vv[:, m:].copy_(q)
        g = torch.bmm(uu.mT, vv, out=ws.buf("gram_g", (g_n, dim, dim), rows))
        g2 = ws.buf("gram_g2", (g_n, dim, dim), rows)
        sq = torch.mul(g, g, out=g2).sum((-2, -1))
        ctx.bufs, ctx.m, ctx.ws = (uu, vv, g, g2), m, ws
        return sq

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (uu, vv, g, g2), m, ws = ctx.bufs, ctx.m, ctx.ws
        dg = torch.mul(g, 2.0 * grad[:, None, None], out=g2)  # d sq / d g
        d_rows = d_p = d_q = None
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            dvv = torch.bmm(uu, dg, out=ws.buf("gram_dvv", uu.shape, uu))
            d_p, d_q = dvv[:, :m], dvv[:, m:]
        if ctx.needs_input_grad[0]:
            d_rows = vv[:, :m] @ dg.mT
        return d_rows, None, d_p, d_q, None


def gram_sq(rows: torch.Tensor, t_zs: torch.Tensor, p: torch.Tensor, q: torch.Tensor,
            ws: Workspace) -> torch.Tensor:  # fmt: skip
    """``((cat([rows, t_zs]).mT @ cat([p, q])) ** 2).sum((-2, -1))`` with ``t_zs`` data."""
    return _GramSq.apply(rows, t_zs, p, q, ws)


def official_penalty(
    rows: torch.Tensor, rows_w: torch.Tensor, t_zs: torch.Tensor, t_w: torch.Tensor | None,
    ratio: torch.Tensor, ratio1: torch.Tensor, ratio_text: torch.Tensor,
    ratio_text1: torch.Tensor, reduction: str, ws: Workspace,
    w_txt: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """:func:`croft.methods.croft.core.official_penalty` (the same expression, op for op:
    bit-identical values), with ``t_zs``'s row sums derived once and ``‖g‖²`` by
    :func:`gram_sq` when ``g`` is formed. ``t_zs`` must be data (no gradient). With
    ``w_txt`` given (then ``t_w`` is ignored: ``t_zs @ w_txt``), the text side runs in
    buffers with written-out backwards (:class:`_TextRows`, :class:`_TextVjp`)."""
    if reduction not in ("setup1", "setup2"):
        raise ValueError(f"unknown energy-penalty reduction {reduction!r}")
    t_shift = ws.const("t_shift", t_zs, lambda t: 1e-4 * t.sum(-1, keepdim=True))
    u = ratio * (rows_w + 1e-4 * rows.sum(-1, keepdim=True)) + ratio1 * rows
    ru = u.norm(dim=-1, keepdim=True)
    a = u / (EPS + ru)
    if w_txt is None:
        v = ratio_text * (t_w + t_shift) + ratio_text1 * t_zs
        rv = v.norm(dim=-1, keepdim=True)
        b = v / (EPS + rv)
    else:  # the text side, (G, C, D), in buffers
        v, b, rv = _TextRows.apply(w_txt, t_zs, t_shift, ratio_text, ratio_text1, ws)
    if w_txt is None:
        e = torch.exp(a @ b.mT)
        if reduction == "setup2":
            e = e / (e.shape[-2] * e.shape[-1])
        p = ratio * _norm_vjp(u, ru, e @ b)
        q = ratio_text * _norm_vjp(v, rv, e.mT @ a)
    else:
        p_cot, q_cot = _Energy.apply(a, b, reduction == "setup2", ws)
        p = ratio * _norm_vjp(u, ru, p_cot)
        q = _TextVjp.apply(v, rv, q_cot, ratio_text, ws)
    dim = rows.shape[-1]
    if 2 * (rows.shape[-2] + t_zs.shape[-2]) <= dim:
        uu = torch.cat([rows, t_zs], dim=-2)
        vv = torch.cat([p, q], dim=-2)
        sq = ((uu @ uu.mT) * (vv @ vv.mT)).sum((-2, -1))
    else:
        sq = gram_sq(rows, t_zs, p, q, ws)
    return sq / (dim * dim) if reduction == "setup1" else sq


class _Adapt(torch.autograd.Function):
    """``n(r·x Wᵀ + r1·x)`` for data ``x`` (no gradient), output and ``u`` in workspaces.

    The forward is the autograd form's ops in the same order (bit-identical values); the
    backward is ``J_n(u)ᵀ`` written out (``α·∂ − β·(u·∂)·u``, :func:`_norm_vjp`) and one
    product for ``∂W``: two passes over ``(G, N, D)`` instead of autograd's seven.
    """

    @staticmethod
    def forward(ctx, x, w, r, r1, ws, name, x_const):  # noqa: ANN001, ANN205
        # Autograd's u and output are (G, D, N) in memory, seen as (G, N, D); so are these
        # (the norm's reduction order follows the layout: the values are bit-identical).
        g_n, n_rows, dim = x.shape
        lin = torch.bmm(w, x.mT, out=ws.buf(name + "_lin", (g_n, dim, n_rows), x)).mT
        u = torch.mul(r, lin, out=ws.buf(name + "_u", (g_n, dim, n_rows), x).mT)
        if x_const:  # r1·x once per chunk
            r1x = ws.const(name + "_r1x", (r1, x), torch.mul)
        else:
            r1x = torch.mul(r1, x, out=ws.buf(name + "_r1x", x.shape, x))
        u.add_(r1x)  # (not a fused addcmul: that rounds differently)
        ru = u.norm(dim=-1, keepdim=True)
        out = torch.div(u, EPS + ru, out=ws.buf(name + "_out", (g_n, dim, n_rows), x).mT)
        ctx.save = (x, w, u, ru, r, ws, name)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, w, u, ru, r, ws, name = ctx.save
        alpha = 1.0 / (EPS + ru)
        beta = alpha * alpha / ru
        dot = _dot(u, grad, ws)
        du = torch.mul(grad, r * alpha, out=ws.buf(name + "_du", u.shape, u))
        du.addcmul_(u, r * beta * dot, value=-1.0)
        return None, ws.weight_grad(w, du.mT, x, name + "_dw"), None, None, None, None, None


def adapt(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, r1: torch.Tensor, ws: Workspace,
          name: str, x_const: bool = False) -> torch.Tensor:  # fmt: skip
    """:func:`croft.methods.croft.steps.adapt` for data ``x`` with buffers ``name`` in ``ws``
    (valid until the next call with that name). ``x_const``: ``x`` and ``r1`` are the same
    tensors at every call (the class text), so ``r1·x`` is computed once."""
    return _Adapt.apply(x, w, r, r1, ws, name, x_const)


def _add_product(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``out += a @ b`` in place (``baddbmm`` with ``out``: torch's FLOP counter counts it,
    unlike ``baddbmm_``)."""
    return torch.baddbmm(out, a, b, out=out)


def _dot(a: torch.Tensor, b: torch.Tensor, ws: Workspace) -> torch.Tensor:
    """Row-wise ``a·b`` ``(…, N, 1)``, the product in a shared scratch buffer."""
    return torch.mul(a, b, out=ws.buf("dot", a.shape, a)).sum(-1, keepdim=True)


class _TextRows(torch.autograd.Function):
    """The penalty's text rows: ``v = rt·(t̂ Wt + shift) + rt1·t̂`` and ``b = n(v)``
    (``‖v‖`` too, not differentiable: :class:`_TextVjp` differentiates through it)."""

    @staticmethod
    def forward(ctx, w, t_zs, shift, rt, rt1, ws):  # noqa: ANN001, ANN205
        tw = torch.bmm(t_zs, w, out=ws.buf("pen_tw", t_zs.shape, t_zs)).add_(shift)
        v = torch.mul(rt, tw, out=ws.buf("pen_v", t_zs.shape, t_zs))
        v.add_(ws.const("pen_r1t", (rt1, t_zs), torch.mul))  # data: once per chunk
        rv = v.norm(dim=-1, keepdim=True)
        b = torch.div(v, EPS + rv, out=ws.buf("pen_b", t_zs.shape, t_zs))
        ctx.mark_non_differentiable(rv)
        ctx.save = (t_zs, w, v, rv, rt, ws)
        return v, b, rv

    @staticmethod
    def backward(ctx, dv, db, _drv):  # noqa: ANN001, ANN205
        t_zs, w, v, rv, rt, ws = ctx.save
        alpha = 1.0 / (EPS + rv)
        d = ws.buf("pen_dtw", v.shape, v)
        if db is None:
            d.zero_()
        else:  # J_n(v)ᵀ db
            beta = alpha * alpha / rv
            torch.mul(db, alpha, out=d).addcmul_(v, beta * _dot(v, db, ws), value=-1.0)
        if dv is not None:
            d.add_(dv)
        d.mul_(rt)
        return ws.weight_grad(w, t_zs.mT, d, "pen_dw"), None, None, None, None, None


class _TextVjp(torch.autograd.Function):
    """``q = rt·J_n(v)ᵀ c`` (:func:`_norm_vjp` at ``r = ‖v‖``), differentiable in ``v``
    (through ``r`` as well) and ``c``."""

    @staticmethod
    def forward(ctx, v, rv, c, rt, ws):  # noqa: ANN001, ANN205
        alpha = 1.0 / (EPS + rv)
        beta = alpha * alpha / rv
        s = torch.mul(v, c, out=ws.buf("vjp_vc", v.shape, v)).sum(-1, keepdim=True)
        q = torch.mul(alpha, c, out=ws.buf("vjp_q", v.shape, v))
        q.sub_(torch.mul(beta * s, v, out=ws.buf("vjp_t2", v.shape, v))).mul_(rt)
        ctx.save = (v, rv, c, rt, s, ws)
        return q

    @staticmethod
    def backward(ctx, dq):  # noqa: ANN001, ANN205
        v, rv, c, rt, s, ws = ctx.save
        alpha = 1.0 / (EPS + rv)
        beta = alpha * alpha / rv
        dqq = torch.mul(dq, rt, out=ws.buf("vjp_dqq", v.shape, v))
        k1, k2 = _dot(dqq, c, ws), _dot(dqq, v, ws)
        d_c = torch.mul(dqq, alpha, out=ws.buf("vjp_dc", v.shape, v))
        d_c.addcmul_(v, beta * k2, value=-1.0)  # J_n(v)ᵀ dqq
        coef = -beta * k1 + k2 * s * (2.0 * alpha**3 / rv**2 + alpha * alpha / rv**3)
        d_v = torch.mul(v, coef, out=ws.buf("vjp_dv", v.shape, v))
        d_v.addcmul_(dqq, beta * s, value=-1.0).addcmul_(c, beta * k2, value=-1.0)
        return d_v, None, d_c, None, None


class _Covariate(torch.autograd.Function):
    """The official covariate rows ``z_I^c = n(z G + z)`` (values bit-identical to the
    autograd form), output in a buffer and ``∂G`` in a reused ``(G, D, D)`` block."""

    @staticmethod
    def forward(ctx, z, gen, ws):  # noqa: ANN001, ANN205
        pre = torch.bmm(z, gen, out=ws.buf("cov_pre", z.shape, z)).add_(z)
        rp = pre.norm(dim=-1, keepdim=True)
        out = torch.div(pre, EPS + rp, out=ws.buf("cov_out", z.shape, z))
        ctx.save = (z, gen, pre, rp, ws)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        z, gen, pre, rp, ws = ctx.save
        alpha = 1.0 / (EPS + rp)
        beta = alpha * alpha / rp
        d = torch.mul(grad, alpha, out=ws.buf("cov_d", pre.shape, pre))
        d.addcmul_(pre, beta * _dot(pre, grad, ws), value=-1.0)  # J_n(pre)ᵀ grad
        d_z = torch.baddbmm(d, d, gen.mT) if ctx.needs_input_grad[0] else None
        d_gen = ws.weight_grad(gen, z.mT, d, "cov_dw") if ctx.needs_input_grad[1] else None
        return d_z, d_gen, None


def covariate(z: torch.Tensor, gen: torch.Tensor, ws: Workspace) -> torch.Tensor:
    """``n(z @ gen + z)`` (the official generator's rows) with buffers in ``ws``."""
    return _Covariate.apply(z, gen, ws)


class _RowsW(torch.autograd.Function):
    """``rows @ W`` where only ``rows[:, skip:]`` carry a gradient (the zero-shot rows
    before them are data): their rows of ``∂rows`` are zeros, not computed."""

    @staticmethod
    def forward(ctx, rows, w, skip, ws):  # noqa: ANN001, ANN205
        ctx.save = (rows, w, skip, ws)
        return torch.bmm(rows, w, out=ws.buf("rows_w", rows.shape, rows))

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        rows, w, skip, ws = ctx.save
        d_rows = None
        if ctx.needs_input_grad[0]:
            d_rows = torch.zeros_like(rows)
            d_rows[:, skip:] = grad[:, skip:] @ w.mT
        d_w = ws.weight_grad(w, rows.mT, grad, "rows_dw") if ctx.needs_input_grad[1] else None
        return d_rows, d_w, None, None


def rows_w(rows: torch.Tensor, w: torch.Tensor, skip: int, ws: Workspace) -> torch.Tensor:
    """``rows @ w`` with no gradient formed for ``rows[:, :skip]`` (see :class:`_RowsW`)."""
    return _RowsW.apply(rows, w, skip, ws)


class _Logits(torch.autograd.Function):
    """``(s·A) @ Tᵀ`` (``s`` ``(G,1,1)``, ``T`` the adapted class text, values as the
    autograd form); ``∂T`` of every such product of one backward summed in one block."""

    @staticmethod
    def forward(ctx, a, txt, scale, ws, key):  # noqa: ANN001, ANN205
        sa = scale * a
        ctx.save = (sa, txt, scale, ws, key)
        return sa @ txt.mT

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        sa, txt, scale, ws, key = ctx.save
        d_a = scale * (grad @ txt) if ctx.needs_input_grad[0] else None
        d_t = None
        if ctx.needs_input_grad[1]:
            if not ws.accumulating:
                d_t = grad.mT @ sa
            elif key in ws._written:
                _add_product(ws._written[key], grad.mT, sa)
            else:
                block = ws.buf(key, txt.shape, txt)
                ws._written[key] = torch.bmm(grad.mT, sa, out=block)
                d_t = block.view(block.shape)
        return d_a, d_t, None, None, None


def logits(a: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, ws: Workspace,
           key: str = "d_txt") -> torch.Tensor:  # fmt: skip
    """``scale * a @ txt.mT`` with ``∂txt`` accumulated in block ``key`` (see :class:`_Logits`;
    every product with the same ``txt`` uses the same ``key``)."""
    return _Logits.apply(a, txt, scale, ws, key)


class _Energy(torch.autograd.Function):
    """``E = c·exp(a bᵀ)`` (``c = 1/(M·C)`` when ``mean``) and its products ``E b``,
    ``Eᵀ a`` (values as the autograd form); ``Eᵀ a`` and ``∂b`` ``(G, C, D)`` in buffers."""

    @staticmethod
    def forward(ctx, a, b, mean, ws):  # noqa: ANN001, ANN205
        e = torch.exp(a @ b.mT)
        if mean:
            e = e / (e.shape[-2] * e.shape[-1])
        ctx.save = (a, b, e, ws)
        return e @ b, torch.bmm(e.mT, a, out=ws.buf("energy_q", b.shape, b))

    @staticmethod
    def backward(ctx, d_p, d_q):  # noqa: ANN001, ANN205
        a, b, e, ws = ctx.save
        d_p = torch.zeros_like(a) if d_p is None else d_p
        d_q = torch.zeros_like(b) if d_q is None else d_q
        d_s = torch.baddbmm(d_p @ b.mT, a, d_q.mT).mul_(e)  # ∂(a bᵀ): E ⊙ ∂E
        d_a = torch.baddbmm(e @ d_q, d_s, b)
        d_b = _add_product(torch.bmm(e.mT, d_p, out=ws.buf("energy_db", b.shape, b)), d_s.mT, a)
        return d_a, d_b.view(d_b.shape), None, None
