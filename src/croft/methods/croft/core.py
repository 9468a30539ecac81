"""CRoFT's terms on features: adapter forward, generator loss, energy-gradient penalties.

Notation (rows are samples): ``x`` raw image features ``(N, D)``, ``t`` class text
features ``(C, D)``, ``Wi``/``Wt`` the image/text adapter matrices ``(D, D)``,
``G`` the covariate-shift generator ``(D, D)``, ``n(v) = v / (1e-6 + ||v||)``.

Energy sign: croft's energy *score* is ``logsumexp(logits)`` (higher = more
in-distribution), the negative of the textbook energy ``E = -logsumexp``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from croft.methods.text import eps_normalize as n

EPS = 1e-6


@dataclass
class Adapted:
    """Outputs of the adapter forward pass."""

    z_img: torch.Tensor  # (N, D) adapted, unit-norm image features z_I
    z_txt: torch.Tensor  # (C, D) adapted, unit-norm text features z_T
    x_zs: torch.Tensor  # (N, D) n(x): zero-shot image features
    t_zs: torch.Tensor  # (C, D) n(t): zero-shot text features


def adapt_image(x: torch.Tensor, w_img: torch.Tensor, ratio: float) -> torch.Tensor:
    """``z_I = n(ratio * x Wiᵀ + (1 - ratio) * x)``, shape ``(N, D)``."""
    return n(ratio * (x @ w_img.T) + (1.0 - ratio) * x)


def adapt_text(t: torch.Tensor, w_txt: torch.Tensor, ratio_text: float) -> torch.Tensor:
    """``z_T = n(ratio_text * t Wtᵀ + (1 - ratio_text) * t)``, shape ``(C, D)``."""
    return n(ratio_text * (t @ w_txt.T) + (1.0 - ratio_text) * t)


def adapter_forward(
    x: torch.Tensor,
    t: torch.Tensor,
    w_img: torch.Tensor,
    w_txt: torch.Tensor,
    ratio: float,
    ratio_text: float,
) -> Adapted:
    """The authors' forward: mix the adapter output with the RAW feature.

    See docs/authors-step.md#forward.
    """
    return Adapted(adapt_image(x, w_img, ratio), adapt_text(t, w_txt, ratio_text), n(x), n(t))


def same_label_mask(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``M[i, j] = 1`` where ``y[i] == y[j]`` (diagonal included), shape ``(N, N)``."""
    return (y[:, None] == y[None, :]).to(dtype)


def official_covariate(z_img: torch.Tensor, gen: torch.Tensor) -> torch.Tensor:
    """Official covariate features ``z_I^c = n(z_I G + z_I)`` from ADAPTED features."""
    return n(z_img @ gen + z_img)


def official_generator_loss(
    z_img: torch.Tensor,
    z_txt: torch.Tensor,
    y: torch.Tensor,
    gen: torch.Tensor,
    scale: float,
    lambda1: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Official generator objective; returns ``(loss, z_I^c)``.

    See docs/authors-step.md#generator-objective.

    ``CE(scale * z_I^c z_Tᵀ, y) + lambda1 * mean_{N×N}(M ⊙ z_I^c z_Iᵀ)``; the mean runs over
    all ``N²`` entries, zeros included, as in the code.
    """
    zc = official_covariate(z_img, gen)
    ce = F.cross_entropy(scale * zc @ z_txt.T, y)
    disalign = (same_label_mask(y, zc.dtype) * (zc @ z_img.T)).mean()
    return ce + lambda1 * disalign, zc


def official_energy_gradient_penalty(
    rows: torch.Tensor,
    t_zs: torch.Tensor,
    w_img: torch.Tensor,
    w_txt: torch.Tensor,
    ratio: float,
    ratio_text: float,
    reduction: str,
) -> torch.Tensor:
    """The official EDR penalty ``loss2`` (docs/authors-step.md#edr-penalty, #shared-delta).

    ``S = Σ_{rows, classes} exp(a bᵀ)`` with ``a = n(ratio·r(Wi+δ) + (1-ratio)·r)``,
    ``b = n(ratio_text·t̂(Wt+δ) + (1-ratio_text)·t̂)`` and ONE ``δ = 1e-4·1`` shared by both
    matrices (note ``r W``, not ``r Wᵀ``), so ``g = ∂S/∂δ = ∂S/∂Wi + ∂S/∂Wt``.

    * ``"setup1"``: ``mean(g²)`` of the gradient of ``S`` (the code's "46" datasets).
    * ``"setup2"``: ``sum(g²)`` of the gradient of ``S / (rows·C)`` (every other dataset).

    Computed in closed form by :func:`official_penalty` (differentiable in ``w_img``,
    ``w_txt`` and ``rows`` by ordinary first-order autograd).
    """
    return official_penalty(
        rows, rows @ w_img, t_zs, t_zs @ w_txt, ratio, 1.0 - ratio, ratio_text,
        1.0 - ratio_text, reduction,
    )  # fmt: skip


def official_penalty(
    rows: torch.Tensor, rows_w: torch.Tensor, t_zs: torch.Tensor, t_w: torch.Tensor,
    ratio: float | torch.Tensor, ratio1: float | torch.Tensor, ratio_text: float | torch.Tensor,
    ratio_text1: float | torch.Tensor, reduction: str,
) -> torch.Tensor:  # fmt: skip
    """The official penalty in closed form, over any leading (member) axes.

    ``rows`` ``(…, M, D)``, ``rows_w = rows @ Wi``, ``t_zs`` ``(…, C, D)``, ``t_w = t_zs @ Wt``
    (the products are passed in so a caller shares them, e.g. ``zc @ Wi``); coefficients are
    floats or tensors broadcasting as ``(…, 1, 1)``; returns ``(…)``. With
    ``δ = 1e-4·11ᵀ``, ``r(W+δ) = rW + 1e-4·(Σ_k r_k)1ᵀ``; ``a = n(u)``, ``b = n(v)`` at the
    pre-activations ``u``, ``v``; ``E = c·exp(a bᵀ)`` (``c = 1`` for ``setup1``,
    ``1/(M·C)`` for ``setup2``) and ``g = ∂S/∂δ = rowsᵀP + t̂ᵀQ`` with
    ``P = ratio·J_n(u)ᵀ(E b)``, ``Q = ratio_text·J_n(v)ᵀ(Eᵀ a)`` (:func:`norm_vjp`). When
    ``M + C ≤ D/2``, ``‖g‖² = Σ (UUᵀ) ⊙ (VVᵀ)`` with ``U = [rows; t̂]``, ``V = [P; Q]``, from
    ``(M+C)²`` Gram matrices with no ``D×D`` temporary; otherwise ``g`` is formed. Every
    term is an explicit first-order expression: one ordinary backward gives the penalty's
    gradient, with no double backward (equal to the autograd ``create_graph`` form to
    ~1e-15 in float64, tests/test_batched.py).
    """
    if reduction not in ("setup1", "setup2"):
        raise ValueError(f"unknown energy-penalty reduction {reduction!r}")
    u = ratio * (rows_w + 1e-4 * rows.sum(-1, keepdim=True)) + ratio1 * rows
    v = ratio_text * (t_w + 1e-4 * t_zs.sum(-1, keepdim=True)) + ratio_text1 * t_zs
    ru, rv = u.norm(dim=-1, keepdim=True), v.norm(dim=-1, keepdim=True)
    a, b = u / (EPS + ru), v / (EPS + rv)
    e = torch.exp(a @ b.mT)
    if reduction == "setup2":
        e = e / (e.shape[-2] * e.shape[-1])
    p = ratio * _norm_vjp(u, ru, e @ b)
    q = ratio_text * _norm_vjp(v, rv, e.mT @ a)
    dim = rows.shape[-1]
    uu = torch.cat([rows, t_zs], dim=-2)
    vv = torch.cat([p, q], dim=-2)
    if 2 * uu.shape[-2] <= dim:
        sq = ((uu @ uu.mT) * (vv @ vv.mT)).sum((-2, -1))
    else:
        sq = ((uu.mT @ vv) ** 2).sum((-2, -1))
    return sq / (dim * dim) if reduction == "setup1" else sq


def _norm_vjp(v: torch.Tensor, r: torch.Tensor, cot: torch.Tensor) -> torch.Tensor:
    """:func:`norm_vjp` with the row norms ``r = ‖v‖`` ``(…, 1)`` given."""
    alpha = 1.0 / (EPS + r)
    beta = alpha * alpha / r
    return alpha * cot - beta * (v * cot).sum(-1, keepdim=True) * v


def norm_vjp(v: torch.Tensor, cot: torch.Tensor) -> torch.Tensor:
    """``J_n(v)ᵀ cot`` for ``n(v) = v/(eps+||v||)`` row-wise (J is symmetric)."""
    r = v.norm(dim=-1, keepdim=True)
    alpha = 1.0 / (EPS + r)
    beta = alpha * alpha / r
    return alpha * cot - beta * (v * cot).sum(-1, keepdim=True) * v


def per_sample_energy_grad_sq(
    rows: torch.Tensor,
    t: torch.Tensor,
    w_img: torch.Tensor,
    w_txt: torch.Tensor,
    ratio: float,
    ratio_text: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``‖∂E_i/∂Wi‖² + ‖∂E_i/∂Wt‖²`` for every row ``i``: shape ``(M,)``, differentiable.

    ``E_i = -τ·logsumexp_j(z_I(r_i)·z_T(t_j)/τ)`` is the textbook energy of row ``i`` under
    the adapter (``x Wᵀ`` on both sides, the same map the classifier uses). Computed in
    closed form in ``O(M·C·D + M·C² + C²·D)``, without materialising per-sample ``D×D``
    gradients. The gradient wrt ``Wi`` of row ``i`` is the outer product
    ``ratio·a_i r_iᵀ``; wrt ``Wt`` it is ``ratio_text·Σ_j h_ij t_jᵀ``.
    """
    u = ratio * (rows @ w_img.T) + (1.0 - ratio) * rows  # (M, D)
    v = ratio_text * (t @ w_txt.T) + (1.0 - ratio_text) * t  # (C, D)
    z_i, z_t = n(u), n(v)
    p = torch.softmax(z_i @ z_t.T / temperature, dim=1)  # (M, C)
    # image side: dE_i/dz_i = -Σ_j p_ij z_t_j ; through n(u): a_i
    a = norm_vjp(u, -(p @ z_t))
    img_sq = ratio**2 * (a * a).sum(-1) * (rows * rows).sum(-1)
    # text side: dE_i/dv_j = w_ij z_i + w'_ij v_j
    r_v = v.norm(dim=-1)  # (C,)
    alpha = 1.0 / (EPS + r_v)
    beta = alpha * alpha / r_v
    c = z_i @ v.T  # (M, C): v_j · z_i
    w1 = -p * alpha  # (M, C)
    w2 = p * beta * c  # (M, C)
    big_a = w1 @ t  # (M, D): Σ_j w_ij t_j
    k_t = t @ t.T  # (C, C)
    k_vt = (v @ v.T) * k_t
    term_x = (z_i * z_i).sum(-1) * (big_a * big_a).sum(-1)
    term_xy = 2.0 * ((c * w2) * (big_a @ t.T)).sum(-1)
    term_y = ((w2 @ k_vt) * w2).sum(-1)
    txt_sq = ratio_text**2 * (term_x + term_xy + term_y)
    return img_sq + txt_sq
