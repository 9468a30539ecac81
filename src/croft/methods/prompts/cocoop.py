"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context plus an image-conditioned bias.

A meta-net ``π = Linear(D, D/16) – ReLU – Linear(D/16, W)`` maps the L2-normalised image
feature to a bias added to every context token: image ``i`` gets the prompts
``[SOS] (ctx_1 + π(x̂_i)) … (ctx_M + π(x̂_i)) [class] . [EOS]``, and its logits are
``s · x̂_i · n(g(prompt_ic))ᵀ``. The context and meta-net are trained with cross-entropy;
the text encoder is frozen.

Deviations from the authors' CoCoOp (docs/deviations.md#baseline-cocoop):

* the meta-net runs in fp32 (the authors': fp16);
* batch size 32 for every backbone (the authors' ViT config has 4, RN50 32);
* cached features, view ``e mod V`` in epoch ``e``, croft's schedule, best validation epoch;
* with ``ctx_init`` (a phrase such as ``"a photo of a"``, as the authors' configs) the
  meta-net's output layer also starts at zero, so the initial head is exactly zero-shot
  CLIP with the template ``"<phrase> {class}."`` (the authors kept PyTorch's default
  init there, which adds a random image bias from the start).

Cost: ``B·C`` text-encoder forwards and backwards per training step, and ``C`` forwards
per predicted image: the head keeps only the context and meta-net; it needs the text
tower at prediction time (attached, or loaded lazily from the recorded backbone spec on
first use, see :class:`~croft.methods.prompts.prompting.TowerHead`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.base import FitResult, register_head, register_method
from croft.methods.prompts.coop import PromptConfig, prepare_prompt_fit
from croft.methods.prompts.prompting import (
    ClassPrompts,
    TextTower,
    TowerHead,
    frozen,
    init_context,
)
from croft.methods.training import config_dict, train_head_ce


@dataclass
class CoCoOpConfig(PromptConfig):
    """CoCoOp options: CoOp's plus the meta-net's reduction (hidden width ``D // 16``).

    ``protocol: original`` (default; CoCoOp's code,
    ``vit_b16_c4_ep10_batch1_ctxv1.yaml``): **4 context tokens initialised from
    "a photo of a"**, **batch 1**, **10 epochs**, SGD lr 0.002, momentum 0.9, **weight
    decay 5e-4**, one warm-up epoch at 1e-5 then cosine. ``protocol: croft_repo``: the
    CRoFT repository's settings as croft ran them before ``protocol`` existed — 16
    random context vectors, batch 32, weight decay 0.1, 30 epochs (the repository's ViT
    config used batch 4, its RN50 config 32).
    """

    ORIGINAL: ClassVar[dict[str, Any]] = {
        "weight_decay": 5e-4,
        "epochs": 10,
        "batch_size": 1,
        "n_ctx": 4,
        "ctx_init": "a photo of a",
    }
    CROFT_REPO_EXTRA: ClassVar[dict[str, Any]] = {"n_ctx": 16, "ctx_init": ""}

    n_ctx: int = None  # type: ignore[assignment]
    ctx_init: str = None  # type: ignore[assignment]
    meta_reduction: int = 16

    def check(self) -> None:
        super().check()
        if self.meta_reduction < 1:
            raise CroftError("meta_reduction must be at least 1")


@register_head
class CoCoOpHead(TowerHead):
    """Parameters: ``ctx`` ``(M, W)``, ``meta_net`` (``Linear(D, H)``, ReLU, ``Linear(H, W)``).

    Logits ``(N, C)``: ``s · n(x_i) · n(g([SOS] ctx + π(n(x_i)) [class_c] . [EOS]))ᵀ``.
    """

    head_name = "cocoop"

    def __init__(
        self,
        class_names: list[str],
        feature_dim: int,
        logit_scale: float,
        n_ctx: int = 16,
        width: int = 512,
        hidden: int = 32,
        backbone: str = "",
    ) -> None:
        super().__init__(class_names, feature_dim, logit_scale, backbone)
        self.ctx = nn.Parameter(torch.zeros(n_ctx, width))
        self.meta_net = nn.Sequential(
            nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, width)
        )

    def spec(self) -> dict[str, Any]:
        return {
            "n_ctx": int(self.ctx.shape[0]),
            "width": int(self.ctx.shape[1]),
            "hidden": int(self.meta_net[0].out_features),
            "backbone": self.backbone,
        }

    def image_context(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.meta_net(F.normalize(x, dim=-1))  # (N, W)
        return self.ctx[None] + bias[:, None]


@register_method(
    "cocoop", CoCoOpConfig, "CoCoOp: CoOp context plus an image-conditioned meta-net bias"
)
def fit_cocoop(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: CoCoOpConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    text_tower: TextTower | None = None,
) -> FitResult:
    """Fit context and meta-net; the head needs the text tower to predict (attached here)."""
    dev, tower, spec, scale = prepare_prompt_fit("cocoop", cfg, train, text_tower, device)
    with frozen(tower):
        ctx0 = init_context(tower, cfg.n_ctx, cfg.ctx_init, cfg.init_std, dev)
        hidden = max(1, train.dim // cfg.meta_reduction)
        head = CoCoOpHead(
            train.class_names, train.dim, scale, ctx0.shape[0], ctx0.shape[1], hidden, spec
        ).to(dev)
        with torch.no_grad():
            head.ctx.copy_(ctx0)
            if cfg.ctx_init.strip():  # start from zero-shot with the phrase: no image bias yet
                head.meta_net[-1].weight.zero_()
                head.meta_net[-1].bias.zero_()
        prompts = ClassPrompts(tower, train.class_names, ctx0.shape[0], dev)
        head.attach_text_tower(tower, prompts)

        result = train_head_ce(
            train, val, cfg, head, device=dev, progress=progress, float_inputs=True
        )
    result.head.meta = {"method": "cocoop", "config": config_dict(cfg)}
    return result
