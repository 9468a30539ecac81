"""CoOp (Zhou et al., IJCV 2022): learned context vectors through the frozen text encoder.

Prompt ``[SOS] ctx_1 … ctx_M [class name] . [EOS]`` with ``M = n_ctx`` context vectors
shared by all classes (generic context, CSC off), class token at the end. Only the
context is trained, with cross-entropy on ``s · n(x) · n(g(prompt_c))ᵀ``; the text
encoder ``g`` is frozen. After fitting the prompts are fixed, so the head is just the
class text features (:class:`~croft.methods.prompts.prompting.PromptTextHead`, no tower needed).

Deviations from the authors' CoOp (docs/deviations.md#baseline-coop):

* runs in the tower's precision with an fp32 context (the authors' default ``PREC=fp16``
  kept CLIP in half precision);
* trains on cached features (epoch ``e`` uses augmented view ``e mod V``) with croft's
  per-epoch warm-up + cosine schedule and best-validation-epoch selection;
* ``ctx_init`` (words) is optional as in the CoOp paper; default random ``N(0, 0.02²)``.

Cost: every step encodes ``C`` prompts (forward and backward through the text encoder);
for a ViT-B/16-size text tower (12 layers, width 512, 77 tokens) see
``benchmarks/baselines_fit.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.base import FitResult, register_method
from croft.methods.loop import Batch, resolve_logit_scale
from croft.methods.prompts.prompting import (
    ClassPrompts,
    TextTower,
    frozen,
    init_context,
    prompt_text_head,
    resolve_text_tower,
)
from croft.methods.training import BaselineTrainConfig, config_dict, train_epochs


@dataclass
class PromptConfig(BaselineTrainConfig):
    """Prompt-learner options shared by CoOp, CoCoOp and DPLCLIP."""

    backbone: str = ""  # backbone spec; empty: the training features' extra['backbone_spec']
    n_ctx: int = 16
    # a phrase ("a photo of a") to start the context from (sets n_ctx; the initial head is
    # then zero-shot with "<phrase> {class}."); empty: random N(0, init_std²)
    ctx_init: str = ""
    init_std: float = 0.02
    text_tower: Any = None  # a TextTower object to use instead of loading ``backbone``
    # per-epoch validation runs the text tower for every image x class: validate every
    # k-th epoch (and the last) on at most val_max images (0: all); defaults keep the
    # authors' per-epoch selection on the whole validation split
    val_every: int = 1
    val_max: int = 0

    def check(self) -> None:
        super().check()
        if self.n_ctx < 1:
            raise CroftError("n_ctx must be at least 1")
        if self.val_every < 1 or self.val_max < 0:
            raise CroftError(
                f"val_every must be at least 1 and val_max at least 0 (0: every validation "
                f"image), got {self.val_every} and {self.val_max}"
            )


@dataclass
class CoOpConfig(PromptConfig):
    """CoOp options: 16 generic context vectors, random start, class token last.

    ``protocol: original`` (default; CoOp's code, ``configs/trainers/CoOp/rn50.yaml`` and
    the 16-shot scripts): SGD lr 0.002, momentum 0.9, **weight decay 5e-4** (Dassl's
    default), batch 32, **200 epochs**, one warm-up epoch at 1e-5 then cosine. CoOp's
    ImageNet runs use 50 epochs and its 1/2/4-shot runs 50/100/100: set ``epochs``.
    ``protocol: croft_repo``: the CRoFT repository's shared settings (weight decay 0.1,
    30 epochs; the rest equal).
    """

    ORIGINAL: ClassVar[dict[str, Any]] = {"weight_decay": 5e-4, "epochs": 200}


def check_tower_dim(tower: TextTower, train: FeatureSet) -> None:
    if int(tower.dim) != train.dim:
        raise CroftError(
            f"{train.source}: the text tower gives {tower.dim}-d features but the image "
            f"features are {train.dim}-d; use the backbone the features were extracted with"
        )


def prepare_prompt_fit(
    name: str, cfg: Any, train: FeatureSet, text_tower: Any, device: str | torch.device
) -> tuple[torch.device, Any, str, float]:
    """The shared start of every prompt learner's fit: ``(device, tower, backbone spec,
    logit scale)``, with the tower checked against the features and the seed set."""
    dev = torch.device(device)
    tower, spec = resolve_text_tower(name, cfg.backbone, train, text_tower or cfg.text_tower, dev)
    check_tower_dim(tower, train)
    scale = resolve_logit_scale(train, cfg.logit_scale)
    torch.manual_seed(cfg.seed)
    return dev, tower, spec, scale


@register_method(
    "coop", CoOpConfig, "CoOp: 16 learned prompt context vectors through the frozen text encoder"
)
def fit_coop(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: CoOpConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    text_tower: TextTower | None = None,
) -> FitResult:
    """Fit the context; the head holds the learned prompts' class text features ``(C, D)``."""
    dev, tower, spec, scale = prepare_prompt_fit("coop", cfg, train, text_tower, device)
    with frozen(tower):
        ctx = nn.Parameter(init_context(tower, cfg.n_ctx, cfg.ctx_init, cfg.init_std, dev))
        prompts = ClassPrompts(tower, train.class_names, ctx.shape[0], dev)

        def loss_fn(b: Batch) -> torch.Tensor:
            text = F.normalize(prompts.encode(ctx), dim=-1)
            logits = scale * F.normalize(b.x.float(), dim=-1) @ text.T
            return F.cross_entropy(logits, b.y)

        def snapshot():  # noqa: ANN202
            return prompt_text_head(train.class_names, prompts.encode(ctx), ctx, scale, spec)

        result = train_epochs(
            train, val, cfg, [ctx], loss_fn, snapshot, device=dev, progress=progress
        )
    result.head.meta = {"method": "coop", "config": config_dict(cfg)}
    return result
