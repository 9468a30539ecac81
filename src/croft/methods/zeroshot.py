"""Zero-shot CLIP on cached features: the first baseline.

Logits ``(N, C) = scale · n(x) · n(t)ᵀ`` with ``t`` the class text features of one
template (``ensemble=False``, the first template) or the template ensemble
(``ensemble=True``: each template embedding normalised, averaged, renormalised).
With CRoFT's adapters at their identity initialisation, CRoFT's logits equal these.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from croft.features.files import FeatureSet
from croft.methods.base import FitResult, FittedHead, register_head, register_method
from croft.methods.text import class_text_features


@register_head
class ZeroShotHead(FittedHead):
    """Cosine classifier on frozen text features; buffer ``text`` ``(C, D)`` unit-norm."""

    head_name = "zeroshot"

    def __init__(
        self, class_names: list[str], feature_dim: int, logit_scale: float, dtype: str = "float32"
    ) -> None:
        super().__init__(class_names, feature_dim, logit_scale)
        self.register_buffer(
            "text", torch.zeros(len(class_names), feature_dim, dtype=getattr(torch, dtype))
        )
        self.dtype_name = dtype

    def spec(self) -> dict[str, Any]:
        return {"dtype": self.dtype_name}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.cast(x), dim=-1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.embed(x) @ self.text.T

    def classifier(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logit_scale * self.text, self.text.new_zeros(self.num_classes)

    @torch.no_grad()
    def zero_shot_point(self, zs: FittedHead) -> FittedHead:
        """Itself, with ``zs``'s text."""
        head = copy.deepcopy(self)
        head.text.copy_(zs.text)
        return head


@dataclass
class ZeroShotConfig:
    """Zero-shot options."""

    ensemble: bool = True
    logit_scale: float = -1.0  # < 0: the backbone's scale stored in the feature file
    dtype: str = "float32"


def zeroshot_head(
    class_names: list[str], text: torch.Tensor, logit_scale: float, ensemble: bool = True
) -> ZeroShotHead:
    """A zero-shot head from ``(C, D)`` or ``(C, T, D)`` text features."""
    t = F.normalize(class_text_features(text, ensemble).float(), dim=-1)
    head = ZeroShotHead(class_names, t.shape[1], logit_scale, dtype=str(t.dtype).split(".")[-1])
    head.text.copy_(t)
    return head


@register_method(
    "zeroshot", ZeroShotConfig, "zero-shot CLIP: cosine to the class prompts' text features"
)
def fit_zeroshot(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: ZeroShotConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> FitResult:
    """No training: the head holds the (ensembled) class text features."""
    scale = cfg.logit_scale if cfg.logit_scale > 0 else train.logit_scale
    t = F.normalize(class_text_features(train.require_text(), cfg.ensemble), dim=-1)
    head = ZeroShotHead(train.class_names, train.dim, scale, dtype=cfg.dtype)
    head.text.copy_(t.to(head.text.dtype))
    head.meta = {"method": "zeroshot", "config": asdict(cfg)}
    history: list[dict[str, float]] = []
    if val is not None:
        with torch.no_grad():
            acc = (head.predict(val.eval_features()) == val.labels).float().mean()
        history.append({"epoch": 0.0, "val_acc": float(acc)})
    return FitResult(head.to(device), history, None)
