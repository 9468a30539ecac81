"""The residual linear adapter head shared by CRoFT and the CE-only adapter.

Ids such as B8 or D7 name behaviours of the authors' code; docs/deviations.md defines them.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from croft.methods.base import FittedHead, register_head
from croft.methods.croft.core import adapt_image, adapt_text


@register_head
class AdapterHead(FittedHead):
    """``z_I = n(r·x Wiᵀ + (1-r)·x)``, ``z_T = n(r_t·t Wtᵀ + (1-r_t)·t)``, logits ``s·z_I z_Tᵀ``.

    Buffers: ``text`` ``(C, D)`` raw class text features, ``fc_i``/``fc_t`` ``(D, D)``, and
    ``generator`` ``(D, D)`` (CRoFT's covariate generator; kept for diagnostics, not used
    for prediction). ``eval_ratio``/``eval_ratio_text`` override the training ratios at
    prediction time. ``det_ratio``/``det_ratio_text`` (``None``: the prediction ratios) are
    the ratios of the *detection* view (:meth:`detection_view`): the authors score Setup-II
    open-set detection at 0.5/0.0 while accuracy uses the training ratios (D7), so one fit
    carries both pairs; both are part of ``spec()`` and so of ``head.json``.
    """

    head_name = "adapter"

    def __init__(
        self,
        class_names: list[str],
        feature_dim: int,
        logit_scale: float,
        ratio: float = 0.2,
        ratio_text: float = 0.5,
        eval_ratio: float | None = None,
        eval_ratio_text: float | None = None,
        dtype: str = "float32",
        det_ratio: float | None = None,
        det_ratio_text: float | None = None,
    ) -> None:
        super().__init__(class_names, feature_dim, logit_scale)
        dt = getattr(torch, dtype)
        c, d = len(class_names), feature_dim
        self.register_buffer("text", torch.zeros(c, d, dtype=dt))
        self.register_buffer("fc_i", torch.eye(d, dtype=dt))
        self.register_buffer("fc_t", torch.eye(d, dtype=dt))
        self.register_buffer("generator", torch.eye(d, dtype=dt))
        self.ratio, self.ratio_text = float(ratio), float(ratio_text)
        self.eval_ratio, self.eval_ratio_text = eval_ratio, eval_ratio_text
        self.det_ratio, self.det_ratio_text = det_ratio, det_ratio_text
        self.dtype_name = dtype

    @classmethod
    def for_config(
        cls, class_names: list[str], feature_dim: int, logit_scale: float, cfg: Any
    ) -> AdapterHead:
        """An identity head with ``cfg``'s ratios and dtype (an ``AdapterTrainConfig``; a
        negative evaluation or detection ratio means "use the training ratio")."""

        def opt(value: float) -> float | None:
            return None if value < 0 else value

        return cls(
            class_names,
            feature_dim,
            logit_scale,
            ratio=cfg.ratio,
            ratio_text=cfg.ratio_text,
            eval_ratio=opt(cfg.eval_ratio),
            eval_ratio_text=opt(cfg.eval_ratio_text),
            dtype=cfg.dtype,
            det_ratio=opt(cfg.det_ratio),
            det_ratio_text=opt(cfg.det_ratio_text),
        )

    def spec(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "ratio_text": self.ratio_text,
            "eval_ratio": self.eval_ratio,
            "eval_ratio_text": self.eval_ratio_text,
            "dtype": self.dtype_name,
            "det_ratio": self.det_ratio,
            "det_ratio_text": self.det_ratio_text,
        }

    def detection_view(self) -> AdapterHead:
        """The head that open-set detection uses: ``self`` when no detection ratio is set,
        else a copy predicting with ``det_ratio``/``det_ratio_text`` (same weights)."""
        if self.det_ratio is None and self.det_ratio_text is None:
            return self
        head = copy.deepcopy(self)
        r, rt = self._ratios()
        head.eval_ratio = r if self.det_ratio is None else float(self.det_ratio)
        head.eval_ratio_text = rt if self.det_ratio_text is None else float(self.det_ratio_text)
        head.det_ratio = head.det_ratio_text = None
        return head

    def _ratios(self) -> tuple[float, float]:
        r = self.ratio if self.eval_ratio is None else float(self.eval_ratio)
        rt = self.ratio_text if self.eval_ratio_text is None else float(self.eval_ratio_text)
        return r, rt

    def text_embedding(self) -> torch.Tensor:
        """Adapted unit-norm class text features ``(C, D)``."""
        return adapt_text(self.text, self.fc_t, self._ratios()[1])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Adapted unit-norm image features ``z_I`` ``(N, D)``."""
        return adapt_image(self.cast(x), self.fc_i, self._ratios()[0])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.embed(x) @ self.text_embedding().T

    def classifier(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logit_scale * self.text_embedding(), self.text.new_zeros(self.num_classes)

    @torch.no_grad()
    def zero_shot_point(self, zs: FittedHead) -> FittedHead:
        """Identity adapters and generator (the text is kept; it must be ``zs``'s)."""
        head = copy.deepcopy(self)
        self.require_same_text(self.text, zs)
        eye = torch.eye(self.feature_dim, dtype=self.fc_i.dtype, device=self.fc_i.device)
        for mat in (head.fc_i, head.fc_t, head.generator):
            mat.copy_(eye)
        return head
