"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): a few-shot key-value cache.

Cache: keys ``K`` ``(N, D)`` = the training images' features averaged over the cached
augmented views (raw features averaged, then L2-normalised), values ``V`` ``(N, C)`` =
one-hot labels. With ``f = n(x)`` and ``t`` the unit-norm class text features::

    logits(x) = s · f tᵀ  +  α · exp(−β · (1 − f Kᵀ)) V          (N, C)

Scale convention (the authors'): only the zero-shot term carries the logit scale ``s``
(100 for CLIP); the cache term is added unscaled, so ``α`` is relative to ``s``-scaled
logits. ``α = 0`` is exactly zero-shot CLIP. Tip-Adapter is training-free; Tip-Adapter-F
fine-tunes the keys (the authors' ``Linear(D → N)`` initialised to ``K``; keys are not
renormalised after updates). After training, ``(α, β)`` are searched on the validation
set (never on test) over ``α ∈ linspace(0, alpha_max, alpha_steps)`` and
``β ∈ linspace(beta_max/beta_steps, beta_max, beta_steps)`` (validation accuracy; ties go
to the smallest β, then the smallest α); without validation the config's ``α, β`` stay.

Deviations from the authors' code (docs/deviations.md#baseline-tip-adapter; bugs fixed):

* the view average is over the views of the SAME image (the authors averaged passes of a
  shuffled loader, mixing different images in one key, and crashed on the undefined
  ``AUGMENT_EPOCH`` key unless a cache file existed; their cache name omitted the dataset);
* Tip-Adapter-F selects its epoch on validation accuracy (the original Tip-Adapter-F
  selected on test accuracy) and searches ``(α, β)`` on validation;
* text features come from the feature file's templates (ensemble by default, the authors
  used the 7 ImageNet templates for every dataset); fp32 (``clip.load`` was fp16);
* Tip-Adapter-F: AdamW (eps 1e-4, weight decay 0.01), lr 0.001, 20 epochs, batch 256 as
  the Tip-Adapter paper, but with croft's per-epoch cosine (the paper steps per batch)
  and training views ``e mod V``; training ``(α, β) = (1, 10)``, the CRoFT Setup-II value.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.base import FitResult, FittedHead, register_head, register_method
from croft.methods.loop import Batch, check_val, frozen_copy, resolve_logit_scale
from croft.methods.text import class_text_features
from croft.methods.training import BaselineTrainConfig, config_dict, train_epochs


@dataclass
class TipSearch:
    """Cache weight, sharpness and their validation grid."""

    alpha: float = 1.0
    beta: float = 10.0
    ensemble: bool = True
    search: bool = True
    alpha_max: float = 5.0
    alpha_steps: int = 21
    beta_max: float = 12.0
    beta_steps: int = 24

    def check_search(self) -> None:
        if self.alpha < 0 or self.beta < 0 or self.alpha_max < 0 or self.beta_max <= 0:
            raise CroftError("alpha, beta, alpha_max must be >= 0 and beta_max > 0")
        if self.alpha_steps < 1 or self.beta_steps < 1:
            raise CroftError("alpha_steps and beta_steps must be at least 1")


@dataclass
class TipAdapterConfig(TipSearch):
    """Training-free Tip-Adapter options."""

    logit_scale: float = -1.0  # < 0: the backbone's scale stored in the feature file
    dtype: str = "float32"

    def check(self) -> None:
        self.check_search()


@dataclass
class TipAdapterFConfig(BaselineTrainConfig, TipSearch):
    """Tip-Adapter-F options.

    ``protocol: original`` (default; Tip-Adapter's code, ``configs/*.yaml`` and
    ``main.py``): AdamW, lr 0.001, eps 1e-4, weight decay 0.01 (AdamW's default), batch
    256, 20 epochs, cosine without warm-up. ``protocol: croft_repo`` is the same: the
    CRoFT repository's Tip-Adapter-F trainer keeps Tip-Adapter's AdamW step, and these
    are the values croft always used (the repository's configs differ only in length:
    ViT lr 0.001, 50 epochs, batch 32; RN50 lr 0.002, 30 epochs, batch 256 — set
    ``epochs``/``batch_size``/``lr`` to follow them).
    """

    ORIGINAL: ClassVar[dict[str, Any]] = {
        "epochs": 20,
        "batch_size": 256,
        "lr": 0.001,
        "weight_decay": 0.01,
        "warmup_epochs": 0,
        "optimizer": "adamw",
        "adam_eps": 1e-4,
    }
    CROFT_REPO_EXTRA: ClassVar[dict[str, Any]] = ORIGINAL

    def check(self) -> None:
        BaselineTrainConfig.check(self)
        self.check_search()


@register_head
class TipAdapterHead(FittedHead):
    """Buffers ``text`` ``(C, D)`` unit-norm, ``values`` ``(K, C)`` one-hot, ``keys_init``
    ``(K, D)`` (the training-free cache), ``alpha``, ``beta`` (scalars); parameter ``keys``
    ``(K, D)``. Logits ``s·f tᵀ + α·exp(−β(1 − f keysᵀ)) values``, ``f = n(x)``."""

    head_name = "tip_adapter"

    def __init__(
        self,
        class_names: list[str],
        feature_dim: int,
        logit_scale: float,
        cache_size: int = 1,
        dtype: str = "float32",
    ) -> None:
        super().__init__(class_names, feature_dim, logit_scale)
        dt = getattr(torch, dtype)
        c, d = len(class_names), feature_dim
        self.dtype_name = dtype
        self.register_buffer("text", torch.zeros(c, d, dtype=dt))
        self.register_buffer("values", torch.zeros(cache_size, c, dtype=dt))
        self.register_buffer("keys_init", torch.zeros(cache_size, d, dtype=dt))
        self.register_buffer("alpha", torch.tensor(1.0, dtype=dt))
        self.register_buffer("beta", torch.tensor(1.0, dtype=dt))
        self.keys = nn.Parameter(torch.zeros(cache_size, d, dtype=dt), requires_grad=False)

    def spec(self) -> dict[str, Any]:
        return {"cache_size": int(self.keys.shape[0]), "dtype": self.dtype_name}

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        """``n(x) · keysᵀ`` ``(N, K)``."""
        return F.normalize(x, dim=-1) @ self.keys.T

    def zeroshot_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * F.normalize(x, dim=-1) @ F.normalize(self.text, dim=-1).T

    def cache_logits(self, affinity: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
        """``exp(−β(1 − A)) V`` ``(N, C)`` (without ``α``)."""
        return torch.exp(-beta * (1.0 - affinity)) @ self.values

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        cache = self.cache_logits(self.affinity(x), self.beta)
        return self.zeroshot_logits(x) + self.alpha * cache

    @torch.no_grad()
    def zero_shot_point(self, zs: FittedHead) -> FittedHead:
        """Cache weight ``α = 0`` and the training-free keys (``keys_init``)."""
        head = copy.deepcopy(self)
        self.require_same_text(self.text, zs)
        head.alpha.zero_()
        head.keys.copy_(head.keys_init)
        return head


def build_cache(train: FeatureSet, cfg: TipAdapterConfig | TipAdapterFConfig) -> TipAdapterHead:
    """The training-free head: keys from the view-averaged train features, one-hot values."""
    train.require_labels()
    dt = getattr(torch, cfg.dtype)
    feats = train.features.to(torch.float64)
    mean = feats if feats.dim() == 2 else feats.mean(dim=1)
    keys = F.normalize(mean, dim=-1).to(dt)
    head = TipAdapterHead(train.class_names, train.dim, 1.0, keys.shape[0], cfg.dtype)
    head.logit_scale = resolve_logit_scale(train, cfg.logit_scale)
    with torch.no_grad():
        t = class_text_features(train.require_text(), cfg.ensemble).float()
        head.text.copy_(F.normalize(t, dim=-1).to(dt))
        head.values.copy_(F.one_hot(train.labels, train.num_classes).to(dt))
        head.keys_init.copy_(keys)
        head.keys.copy_(keys)
        head.alpha.fill_(cfg.alpha)
        head.beta.fill_(cfg.beta)
    return head


@torch.no_grad()
def search_alpha_beta(
    head: TipAdapterHead, val: FeatureSet, cfg: TipSearch
) -> tuple[float, float, float]:
    """Grid-search ``(α, β)`` on validation accuracy; returns ``(α, β, accuracy)``."""
    x = head.check_features(val.eval_features())
    y = val.labels.to(x.device)
    zs = head.zeroshot_logits(x)
    aff = head.affinity(x)
    alphas = torch.linspace(0.0, cfg.alpha_max, cfg.alpha_steps, dtype=x.dtype, device=x.device)
    betas = torch.linspace(cfg.beta_max / cfg.beta_steps, cfg.beta_max, cfg.beta_steps).tolist()
    best = (-1.0, 0.0, 0.0)
    for beta in betas:
        cache = head.cache_logits(aff, beta)
        logits = zs[None] + alphas[:, None, None] * cache[None]  # (A, N, C)
        accs = (logits.argmax(-1) == y[None]).float().mean(1)
        i = int(accs.argmax())
        if float(accs[i]) > best[0]:
            best = (float(accs[i]), float(alphas[i]), float(beta))
    return best[1], best[2], best[0]


def _finish(head: TipAdapterHead, val: FeatureSet | None, cfg: TipSearch) -> dict[str, Any]:
    info: dict[str, Any] = {"alpha": cfg.alpha, "beta": cfg.beta, "alpha_beta_from": "config"}
    if val is not None and cfg.search:
        a, b, acc = search_alpha_beta(head, val, cfg)
        with torch.no_grad():
            head.alpha.fill_(a)
            head.beta.fill_(b)
        info = {"alpha": a, "beta": b, "alpha_beta_from": "validation", "val_acc": acc}
    return info


@register_method(
    "tip_adapter",
    TipAdapterConfig,
    "Tip-Adapter: training-free few-shot feature cache added to zero-shot logits",
)
def fit_tip_adapter(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: TipAdapterConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FitResult:
    """Build the cache; search ``(α, β)`` on validation when given."""
    check_val(train, val)
    head = build_cache(train, cfg).to(device)
    info = _finish(head, val, cfg)
    head.meta = {"method": "tip_adapter", "config": config_dict(cfg), "selected": info}
    history = [{"epoch": 0.0, "val_acc": info["val_acc"]}] if "val_acc" in info else []
    return FitResult(head, history, None)


@register_method(
    "tip_adapter_f",
    TipAdapterFConfig,
    "Tip-Adapter-F: Tip-Adapter with the cache keys fine-tuned by cross-entropy",
)
def fit_tip_adapter_f(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: TipAdapterFConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FitResult:
    """Fine-tune the keys at the config's ``(α, β)``; then search ``(α, β)`` on validation."""
    head = build_cache(train, cfg).to(device)
    head.keys.requires_grad_(True)

    def loss_fn(b: Batch) -> torch.Tensor:
        return F.cross_entropy(head.logits(b.x.to(head.keys.dtype)), b.y)

    def snapshot() -> FittedHead:
        return frozen_copy(head)

    result = train_epochs(
        train, val, cfg, [head.keys], loss_fn, snapshot, device=device, progress=progress
    )
    assert isinstance(result.head, TipAdapterHead)
    info = _finish(result.head, val, cfg)
    result.head.meta = {"method": "tip_adapter_f", "config": config_dict(cfg), "selected": info}
    return result
