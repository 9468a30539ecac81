"""CRoFT on cached features: ``official`` (the authors' step) and ``paper`` variants.

``official`` reproduces the authors' training step exactly (docs/authors-step.md;
golden vectors in ``tests/golden/croft-official``):

* adapters ``fc_i``, ``fc_t`` (identity init, residual ``ratio``/``ratio_text``) and the
  covariate generator ``G`` (identity init), each a ``D×D`` matrix;
* ``gen_step`` generator updates per batch on ``CE(z_I^c) + λ1·disalign``;
* main loss ``CE + loss1 + λ2·loss2`` with the energy-gradient penalty in either
  reduction (``setup1``/``setup2``) and the worst-case branch as an explicit switch;
* every loss zeroes and steps BOTH optimisers (SGD, momentum 0.9, weight decay 0.1);
* one forward per batch whose graph every backward reuses;
* 1 constant warm-up epoch at 1e-5, then cosine, stepped per epoch;
* the head of the best validation epoch (strict improvement).

``paper`` is the objective as the paper states it, with the code's accidents fixed.
Every difference from ``official``:

1. (B2/D4) generator steps update only the generator, main steps only the adapters.
2. (B4/D1) the energy penalty is per sample, ``mean_i ‖∇_θ E(x_i)‖²`` over ID rows plus
   the same over covariate rows (``L_e(z_I) + L_e(z_I^c)``), with ``E`` the textbook energy
   at temperature ``energy_temperature`` on cosine; not the norm of the gradient of a
   batch sum taken through one shared ``δ``.
3. (B4/D2) the adapter is applied as ``x Wᵀ`` everywhere, penalty included.
4. (B5/D3) covariate features are shifts of the frozen feature, ``x^c = n(x̂ Gᵀ + x̂)``,
   which then pass through the adapter like any image feature (no double adaptation,
   no swapped ratio, always renormalised).
5. (B3) weight decay pulls ``W`` towards the identity (it decays ``W - I``), not to 0.
6. the disalignment term averages over same-label pairs, not over all ``N²`` entries.

``λ1`` has the same role in both: the weight of the generator's disalignment term,
which defines the worst case ``L_c``; ``L_c = CE(z_I^c)`` enters the adapter loss with
weight ``lambda_c`` (1, as in the code). As in the official branch, the adapter loss also
holds ``−λ1·disalign(z_I^c, x̂)`` (``align_term``, default on): the adapters pull the
adapted covariate features towards same-class zero-shot features, the adapter's side of
the min–max over the disalignment the generator minimises.

Default weights differ per variant (``lambda1``/``lambda2`` unset): ``official`` 15 / 1000,
``paper`` 2 / 1, because the paper variant's terms are per-pair / per-sample means
(docs/deviations.md#paper-scales).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from croft.features.files import FeatureSet
from croft.methods.adapter_head import AdapterHead
from croft.methods.base import FitResult, register_method
from croft.methods.croft_config import (  # re-exported: the configs' historical home
    REDUCTIONS,
    VARIANT_LAMBDAS,
    VARIANTS,
    AdapterTrainConfig,
    CroftConfig,
)
from croft.methods.croft_core import (
    adapt_image,
    adapt_text,
    adapter_forward,
    official_energy_gradient_penalty,
    official_generator_loss,
    per_sample_energy_grad_sq,
    same_label_mask,
)
from croft.methods.loop import (
    Batch,
    Trainable,
    check_val,
    lr_at_epoch,
    resolve_logit_scale,
    run_epochs,
)
from croft.methods.text import class_text_features
from croft.methods.text import eps_normalize as n

__all__ = [
    "REDUCTIONS",
    "VARIANTS",
    "VARIANT_LAMBDAS",
    "AdapterTrainConfig",
    "CroftConfig",
    "CroftParams",
    "StepLosses",
    "ce_step",
    "fit_adapter",
    "fit_ce_adapter",
    "fit_croft",
    "lr_at_epoch",
    "make_optimizers",
    "official_step",
    "paper_covariate",
    "paper_disalign",
    "paper_step",
]


# ------------------------------------------------------------------------------- state
class CroftParams(nn.Module):
    """Trainable matrices. ``official``: the matrices; ``paper``: residuals ``W - I``."""

    def __init__(self, dim: int, dtype: torch.dtype, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        init = torch.zeros if residual else (lambda d, e, **k: torch.eye(d, **k))
        self.fc_i = nn.Parameter(init(dim, dim, dtype=dtype))
        self.fc_t = nn.Parameter(init(dim, dim, dtype=dtype))
        self.generator = nn.Parameter(init(dim, dim, dtype=dtype))

    def full(self, p: torch.Tensor) -> torch.Tensor:
        return p + torch.eye(p.shape[0], dtype=p.dtype, device=p.device) if self.residual else p

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.full(self.fc_i), self.full(self.fc_t), self.full(self.generator)


def make_optimizers(
    params: CroftParams, cfg: AdapterTrainConfig, lr: float
) -> tuple[torch.optim.SGD, torch.optim.SGD]:
    """Two SGD optimisers (adapter; generator), as the authors' two Dassl models."""
    kw = {"lr": lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay}
    return (
        torch.optim.SGD([params.fc_i, params.fc_t], **kw),
        torch.optim.SGD([params.generator], **kw),
    )


@dataclass
class StepLosses:
    loss: float
    loss_ce: float
    loss1: float
    loss2: float
    gen_losses: list[float]


# ------------------------------------------------------------------------ official step
def official_step(
    params: CroftParams,
    opt_a: torch.optim.Optimizer,
    opt_g: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    cfg: CroftConfig,
    scale: float,
) -> StepLosses:
    """One batch of the authors' training step (docs/authors-step.md#step-order, #step-all).

    ``x`` ``(N, D)`` raw image features, ``y`` ``(N,)``, ``t`` ``(C, D)`` class text features.
    """

    def step_all(loss: torch.Tensor) -> None:
        opt_a.zero_grad()
        opt_g.zero_grad()
        loss.backward(retain_graph=True)
        opt_a.step()
        opt_g.step()

    fwd = adapter_forward(x, t, params.fc_i, params.fc_t, cfg.ratio, cfg.ratio_text)
    logits = scale * fwd.z_img @ fwd.z_txt.T
    gen_losses: list[float] = []
    if cfg.wccf:
        for _ in range(cfg.gen_step):
            loss_g, _ = official_generator_loss(
                fwd.z_img, fwd.z_txt, y, params.generator, scale, cfg.lambda1
            )
            gen_losses.append(float(loss_g.detach()))
            step_all(loss_g)
    _, zc = official_generator_loss(fwd.z_img, fwd.z_txt, y, params.generator, scale, cfg.lambda1)
    rows = fwd.x_zs
    if cfg.covariate_rows:
        disalign = (same_label_mask(y, zc.dtype) * (zc @ fwd.x_zs.T)).mean()
        zc_theta = cfg.ratio * zc + (1.0 - cfg.ratio) * (zc @ params.fc_i)
        loss1 = F.cross_entropy(scale * zc_theta @ fwd.z_txt.T, y) - cfg.lambda1 * disalign
        rows = torch.cat([fwd.x_zs, zc], dim=0)
    else:
        loss1 = F.cross_entropy(scale * zc @ fwd.z_txt.T, y)
    loss2 = official_energy_gradient_penalty(
        rows, fwd.t_zs, params.fc_i, params.fc_t, cfg.ratio, cfg.ratio_text, cfg.energy_reduction
    )
    loss_ce = F.cross_entropy(logits, y)
    loss = loss_ce + (loss1 if cfg.wccf else 0.0) + cfg.lambda2 * loss2
    step_all(loss)
    return StepLosses(
        float(loss.detach()),
        float(loss_ce.detach()),
        float(loss1.detach()),
        float(loss2.detach()),
        gen_losses,
    )


# --------------------------------------------------------------------------- paper step
def paper_covariate(x: torch.Tensor, gen: torch.Tensor) -> torch.Tensor:
    """Paper-variant covariate features ``x^c = n(x̂ Gᵀ + x̂)``, ``x̂ = n(x)``, ``(N, D)``."""
    xh = n(x)
    return n(xh @ gen.T + xh)


def paper_disalign(zc: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cosine between ``zc_i`` and ``z_j`` over same-label pairs ``(i, j)``."""
    m = same_label_mask(y, zc.dtype)
    return (m * (zc @ z.T)).sum() / m.sum()


def paper_step(
    params: CroftParams,
    opt_a: torch.optim.Optimizer,
    opt_g: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    cfg: CroftConfig,
    scale: float,
) -> StepLosses:
    """One batch of the paper variant (see the module docstring for every difference)."""
    wi, wt, wg = params.matrices()
    gen_losses: list[float] = []
    if cfg.wccf and cfg.gen_step > 0:
        with torch.no_grad():
            z_img = adapt_image(x, wi, cfg.ratio)
            z_txt = adapt_text(t, wt, cfg.ratio_text)
        wi_d = wi.detach()
        for _ in range(cfg.gen_step):
            zc = adapt_image(paper_covariate(x, params.full(params.generator)), wi_d, cfg.ratio)
            loss_g = F.cross_entropy(scale * zc @ z_txt.T, y) + cfg.lambda1 * paper_disalign(
                zc, z_img, y
            )
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            gen_losses.append(float(loss_g.detach()))
    xc = paper_covariate(x, params.full(params.generator)).detach()
    z_img = adapt_image(x, wi, cfg.ratio)
    z_txt = adapt_text(t, wt, cfg.ratio_text)
    loss_ce = F.cross_entropy(scale * z_img @ z_txt.T, y)
    loss1 = torch.zeros((), dtype=x.dtype, device=x.device)
    rows = n(x)
    if cfg.wccf:
        zc_theta = adapt_image(xc, wi, cfg.ratio)
        loss1 = cfg.lambda_c * F.cross_entropy(scale * zc_theta @ z_txt.T, y)
        if cfg.align_term:  # the adapter's side of the min-max over the disalignment
            loss1 = loss1 - cfg.lambda1 * paper_disalign(zc_theta, rows, y)
        rows = torch.cat([rows, xc], dim=0)
    loss2 = torch.zeros((), dtype=x.dtype, device=x.device)
    if cfg.lambda2 != 0.0:
        sq = per_sample_energy_grad_sq(
            rows, t, wi, wt, cfg.ratio, cfg.ratio_text, cfg.energy_temperature
        )
        nb = x.shape[0]
        loss2 = sq[:nb].mean() + (sq[nb:].mean() if sq.shape[0] > nb else 0.0)
    loss = loss_ce + loss1 + cfg.lambda2 * loss2
    opt_a.zero_grad()
    loss.backward()
    opt_a.step()
    return StepLosses(
        float(loss.detach()),
        float(loss_ce.detach()),
        float(loss1.detach()),
        float(loss2.detach()),
        gen_losses,
    )


def ce_step(
    params: CroftParams,
    opt_a: torch.optim.Optimizer,
    opt_g: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    cfg: AdapterTrainConfig,
    scale: float,
) -> StepLosses:
    """CE-only adapter: the same adapter, cross-entropy alone, the adapter optimiser only."""
    wi, wt, _ = params.matrices()
    logits = scale * adapt_image(x, wi, cfg.ratio) @ adapt_text(t, wt, cfg.ratio_text).T
    loss = F.cross_entropy(logits, y)
    opt_a.zero_grad()
    loss.backward()
    opt_a.step()
    v = float(loss.detach())
    return StepLosses(v, v, 0.0, 0.0, [])


# --------------------------------------------------------------------------- fit loop
def _make_head(
    train: FeatureSet, cfg: AdapterTrainConfig, t: torch.Tensor, params: CroftParams, scale: float
) -> AdapterHead:
    head = AdapterHead.for_config(train.class_names, train.dim, scale, cfg)
    wi, wt, wg = (m.detach() for m in params.matrices())
    head.text.copy_(t.detach())
    head.fc_i.copy_(wi)
    head.fc_t.copy_(wt)
    head.generator.copy_(wg)
    return head.to(t.device)


def fit_adapter(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: AdapterTrainConfig,
    step_fn: Any,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    residual: bool = False,
) -> FitResult:
    """Train the adapter with ``step_fn`` in the shared loop (:func:`run_epochs`).

    ``step_fn(params, opt_a, opt_g, x, y, t, cfg, scale) -> StepLosses`` updates the
    adapter (and generator) on one batch; both optimisers follow the schedule.
    """
    train.require_labels()
    check_val(train, val)
    dtype = getattr(torch, cfg.dtype)
    dev = torch.device(device)
    t = class_text_features(train.require_text(), cfg.ensemble).to(dev, dtype)
    scale = resolve_logit_scale(train, cfg.logit_scale)
    params = CroftParams(train.dim, dtype, residual=residual).to(dev)
    opt_a, opt_g = make_optimizers(params, cfg, lr_at_epoch(cfg, 0))
    torch.manual_seed(cfg.seed)

    def step(b: Batch) -> dict[str, float]:
        s = step_fn(params, opt_a, opt_g, b.x, b.y, t, cfg, scale)
        return {"loss": s.loss, "loss_ce": s.loss_ce, "loss1": s.loss1, "loss2": s.loss2}

    model = Trainable(
        params=list(params.parameters()),
        optimizers=[opt_a, opt_g],
        step=step,
        snapshot=lambda: _make_head(train, cfg, t, params, scale),
    )
    hint = "lower lr or lambda2" if isinstance(cfg, CroftConfig) else "lower lr"
    return run_epochs(train, val, cfg, model, device=dev, progress=progress, hint=hint)


@register_method(
    "croft", CroftConfig, "CRoFT adapters + covariate generator + energy-gradient penalty"
)
def fit_croft(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: CroftConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FitResult:
    """Fit CRoFT (``cfg.variant`` selects ``official`` or ``paper``)."""
    step = official_step if cfg.variant == "official" else paper_step
    result = fit_adapter(
        train, val, cfg, step, device=device, progress=progress, residual=cfg.variant == "paper"
    )
    result.head.meta = {"method": "croft", "variant": cfg.variant, "config": asdict(cfg)}
    return result


@register_method(
    "ce_adapter", AdapterTrainConfig, "CRoFT's adapters trained with cross-entropy only"
)
def fit_ce_adapter(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: AdapterTrainConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FitResult:
    """CE-only adapter: CRoFT's adapter and schedule without generator or penalty."""
    result = fit_adapter(train, val, cfg, ce_step, device=device, progress=progress)
    result.head.meta = {"method": "ce_adapter", "config": asdict(cfg)}
    return result
