"""LoCoOp (Miyai et al., NeurIPS 2023): CoOp's prompt learner plus OOD regularisation on
local features.

The context is CoOp's (:mod:`croft.methods.prompts.coop`: ``M`` shared context vectors through the
frozen text encoder, class token last). Besides the cross-entropy on the global feature,
each local feature ``p`` of a training image (a ViT patch token, a ResNet attention-pool
cell; cached by ``croft extract --local-features``) gets the class distribution
``softmax(s · n(p) · n(g(prompt_c))ᵀ)``. Local features whose ``top_k`` most probable
classes do not include the image's label are treated as background (OOD) regions, and
their entropy is *maximised*::

    loss = CE(global logits, y) − λ · mean_{p: y ∉ top_k(p)} H(softmax(local logits_p))

(no selected feature in a batch: the second term is 0). The head is CoOp's
(:class:`~croft.methods.prompts.prompting.PromptTextHead`, the learned prompts' class text
features), saved with ``meta["method"] = "locoop"`` and ``meta["score"] = "gl_mcm"``: the
paper scores OOD with GL-MCM (:func:`croft.scores_local.gl_mcm`, ``scores: [gl_mcm]``),
which needs the evaluation sets' local features as well.

Defaults follow the paper's ImageNet setting: ``lambda_en = 0.25``; ``top_k`` 200 of 1000
classes, written here as ``top_k = 0``: a fifth of the classes (at least 1), since the
absolute 200 means nothing for a 7-class dataset. Deviations as CoOp's (cached features,
croft's schedule, docs/deviations.md#baseline-coop).
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
from croft.methods.loop import Batch
from croft.methods.prompts.coop import CoOpConfig, prepare_prompt_fit
from croft.methods.prompts.prompting import ClassPrompts, frozen, init_context, prompt_text_head
from croft.methods.training import config_dict, train_epochs


@dataclass
class LoCoOpConfig(CoOpConfig):
    """LoCoOp options: CoOp's, plus the entropy weight and the top-K rule.

    ``protocol: original``: CoOp's optimiser settings with LoCoOp's 50 epochs (its ImageNet
    16-shot script).
    """

    ORIGINAL: ClassVar[dict[str, Any]] = {"weight_decay": 5e-4, "epochs": 50}

    lambda_en: float = 0.25  # weight of the entropy term on background local features
    top_k: int = 0  # local features whose top_k classes miss the label; 0: C/5, at least 1

    def check(self) -> None:
        super().check()
        if not self.lambda_en >= 0.0:
            raise CroftError(f"lambda_en must be >= 0, got {self.lambda_en}")
        if self.top_k < 0:
            raise CroftError(f"top_k must be >= 0 (0: a fifth of the classes), got {self.top_k}")


def resolve_top_k(top_k: int, num_classes: int) -> int:
    """``top_k``, or a fifth of the classes (at least 1) for 0; it must be below ``C``."""
    k = top_k if top_k > 0 else max(1, round(num_classes / 5))
    if k >= num_classes:
        raise CroftError(
            f"top_k={k} must be smaller than the number of classes ({num_classes}); with "
            f"top_k >= C no local feature could miss its label (top_k: 0 picks C/5)"
        )
    return k


def background_entropy(local_logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Mean entropy of the local class distributions whose top ``k`` classes exclude the
    label: ``(B, P, C)`` logits, ``(B,)`` labels -> scalar (0 when none is selected)."""
    top = local_logits.topk(k, dim=-1).indices  # (B, P, k)
    background = ~(top == labels[:, None, None]).any(dim=-1)  # (B, P)
    if not bool(background.any()):
        return local_logits.sum() * 0.0
    logp = local_logits[background].log_softmax(dim=-1)
    return -(logp.exp() * logp).sum(dim=-1).mean()


@register_method(
    "locoop",
    LoCoOpConfig,
    "LoCoOp: CoOp plus entropy maximisation on background local features (GL-MCM score)",
)
def fit_locoop(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: LoCoOpConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    text_tower: Any = None,
) -> FitResult:
    """Fit the context on global + local features; the head holds the learned prompts'
    class text features ``(C, D)``. ``train`` must carry ``local_features``."""
    train.require_local()
    k = resolve_top_k(cfg.top_k, train.num_classes)
    dev, tower, spec, scale = prepare_prompt_fit("locoop", cfg, train, text_tower, device)
    with frozen(tower):
        ctx = nn.Parameter(init_context(tower, cfg.n_ctx, cfg.ctx_init, cfg.init_std, dev))
        prompts = ClassPrompts(tower, train.class_names, ctx.shape[0], dev)

        def loss_fn(b: Batch) -> torch.Tensor:
            text = F.normalize(prompts.encode(ctx), dim=-1)
            logits = scale * F.normalize(b.x.float(), dim=-1) @ text.T
            assert b.local is not None  # use_local=True
            local_logits = scale * F.normalize(b.local.float(), dim=-1) @ text.T
            entropy = background_entropy(local_logits, b.y, k)
            return F.cross_entropy(logits, b.y) - cfg.lambda_en * entropy

        def snapshot():  # noqa: ANN202
            return prompt_text_head(train.class_names, prompts.encode(ctx), ctx, scale, spec)

        result = train_epochs(
            train, val, cfg, [ctx], loss_fn, snapshot, device=dev, progress=progress,
            use_local=True,
        )  # fmt: skip
    result.head.meta = {
        "method": "locoop",
        "config": config_dict(cfg),
        "top_k": k,
        "score": "gl_mcm",
    }
    return result
