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

**One engine.** Every step is implemented once, in :mod:`croft.methods.croft.steps`
(``G`` stacked members); a single fit is a batch of one
(:func:`croft.methods.croft.chunk.fit_one`) and a grid trains many members at once
(:func:`croft.methods.croft.engine.fit_many`). This module registers both methods with their
:class:`~croft.methods.croft.steps.BatchedMethod` and offers :class:`SingleStep`, one
member stepped batch by batch (golden parity, tests, diagnostics).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from croft.features.files import FeatureSet
from croft.methods.base import FitResult, register_method
from croft.methods.croft.chunk import fit_one, hyper
from croft.methods.croft.config import (  # re-exported: the configs' historical home
    REDUCTIONS,
    VARIANT_LAMBDAS,
    VARIANTS,
    AdapterTrainConfig,
    CEAdapterConfig,
    CroftConfig,
)
from croft.methods.croft.steps import (
    STEPS,
    BatchedMethod,
    BatchedParams,
    Structure,
    ce_step,
    official_step,
    paper_covariate,
    paper_disalign,
    paper_step,
)
from croft.methods.loop import lr_at_epoch

__all__ = [
    "REDUCTIONS",
    "VARIANTS",
    "VARIANT_LAMBDAS",
    "AdapterTrainConfig",
    "CEAdapterConfig",
    "CroftConfig",
    "SingleStep",
    "StepLosses",
    "ce_step",
    "ce_structure",
    "croft_structure",
    "fit_ce_adapter",
    "fit_croft",
    "lr_at_epoch",
    "official_step",
    "paper_covariate",
    "paper_disalign",
    "paper_step",
]


def croft_structure(cfg: CroftConfig) -> Structure:
    """The engine's step branches for a CRoFT config (official or paper variant)."""
    if cfg.variant == "paper":
        return Structure(
            "paper", cfg.wccf, cfg.gen_step, penalty=cfg.lambda2 != 0.0, align_term=cfg.align_term
        )
    return Structure("official", cfg.wccf, cfg.gen_step, cfg.covariate_rows, cfg.energy_reduction)


def ce_structure(cfg: AdapterTrainConfig) -> Structure:
    """The CE-only adapter's step (no branches; ``residual``: matrices hold ``W − I``)."""
    return Structure("ce", residual=bool(getattr(cfg, "residual", False)))


CROFT_ENGINE = BatchedMethod(
    croft_structure,
    lambda cfg: {"method": "croft", "variant": cfg.variant, "config": asdict(cfg)},
    "lower lr or lambda2",
)
CE_ENGINE = BatchedMethod(ce_structure, lambda cfg: {"method": "ce_adapter", "config": asdict(cfg)})


@dataclass
class StepLosses:
    loss: float
    loss_ce: float
    loss1: float
    loss2: float
    gen_losses: list[float]


class SingleStep:
    """One member on the engine, stepped batch by batch at a fixed learning rate.

    ``SingleStep(cfg, dim, scale)``: matrices at their initialisation (official: ``I``;
    paper: residuals ``0``), SGD at ``lr`` (default ``cfg.lr``) with the config's momentum
    and weight decay. ``step(x, y, t)`` with ``x`` ``(B, D)`` raw image features, ``y``
    ``(B,)``, ``t`` ``(C, D)`` class text features runs the config's step
    (:data:`~croft.methods.croft.steps.STEPS`) and returns its losses as floats.
    ``params`` is the engine's :class:`BatchedParams` (one member: index 0).
    """

    def __init__(self, cfg: AdapterTrainConfig, dim: int, scale: float, *, lr: float | None = None,
                 device: str | torch.device = "cpu") -> None:  # fmt: skip
        dev = torch.device(device)
        dtype = getattr(torch, cfg.dtype)
        self.structure = croft_structure(cfg) if isinstance(cfg, CroftConfig) else ce_structure(cfg)
        self.hp = hyper([cfg], [scale], dtype, dev)
        self.hp.values["lr"] = torch.tensor([cfg.lr if lr is None else lr], dtype=dtype, device=dev)
        residual = self.structure.variant == "paper" or self.structure.residual
        self.params = BatchedParams.create(1, dim, dtype, dev, residual)

    def step(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> StepLosses:
        dev = self.params.mats["fc_i"].device
        dtype = self.params.mats["fc_i"].dtype
        x, t = x.to(dev, dtype)[None], t.to(dev, dtype)[None]
        out = STEPS[self.structure.variant](self.params, x, y.to(dev)[None], t, self.hp,
                                            self.structure)  # fmt: skip
        return StepLosses(
            float(out.loss[0]), float(out.loss_ce[0]), float(out.loss1[0]), float(out.loss2[0]),
            [float(v[0]) for v in out.gen_losses],
        )  # fmt: skip

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(fc_i, fc_t, generator)`` of the member as full matrices (detached)."""
        full = [self.params.full(k).detach()[0] for k in ("fc_i", "fc_t", "generator")]
        return full[0], full[1], full[2]


# --------------------------------------------------------------------------- fit
@register_method(
    "croft", CroftConfig, "CRoFT adapters + covariate generator + energy-gradient penalty",
    batched=CROFT_ENGINE,
)  # fmt: skip
def fit_croft(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: CroftConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FitResult:
    """Fit CRoFT (``cfg.variant`` selects ``official`` or ``paper``): one member on the engine."""
    return fit_one("croft", train, val, cfg, device=device, progress=progress)


@register_method(
    "ce_adapter", CEAdapterConfig, "CRoFT's adapters trained with cross-entropy only",
    batched=CE_ENGINE,
)  # fmt: skip
def fit_ce_adapter(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: CEAdapterConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FitResult:
    """CE-only adapter: CRoFT's adapter and schedule without generator or penalty
    (``residual: true``: trained as ``W − I``, decayed towards the identity)."""
    return fit_one("ce_adapter", train, val, cfg, device=device, progress=progress)
