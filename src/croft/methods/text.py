"""Class text features: single template or template ensemble."""

from __future__ import annotations

import torch

from croft.errors import CroftError


def eps_normalize(v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``v / (eps + ||v||)`` row-wise, exactly as the authors' code (not ``F.normalize``)."""
    return v / (eps + v.norm(dim=-1, keepdim=True))


def class_text_features(text: torch.Tensor, ensemble: bool = True) -> torch.Tensor:
    """``(C, D)`` class text features from ``(C, D)`` or ``(C, T, D)`` encoder outputs.

    * ``(C, D)`` or ``T == 1``: the raw (un-normalised) rows, as the authors' code uses
      for its single template ``"a photo of a {}."``.
    * ``T > 1`` with ``ensemble``: every template embedding L2-normalised, averaged over
      templates, re-normalised (CLIP's prompt ensemble; the authors' ImageNet setting).
    * ``T > 1`` without ``ensemble``: the first template's raw rows.
    """
    if text.dim() == 2:
        return text
    if text.dim() != 3:
        raise CroftError(f"text features must be (C, D) or (C, T, D), got {tuple(text.shape)}")
    if text.shape[1] == 1 or not ensemble:
        return text[:, 0]
    unit = text / text.norm(dim=-1, keepdim=True)
    mean = unit.mean(dim=1)
    return mean / mean.norm(dim=-1, keepdim=True)
