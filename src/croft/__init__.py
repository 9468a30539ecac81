"""croft: robust fine-tuning of frozen CLIP-like models (CRoFT, ICML 2024).

The package imports light: heavy optional dependencies (open_clip, transformers,
matplotlib) are loaded where they are used.

A lower layer never imports a higher one; the layers, lowest first, are the table
``LAYERS`` in ``tests/test_layers.py`` and the README's Layout section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from croft._version import __version__
from croft.errors import CroftError

if TYPE_CHECKING:  # pragma: no cover
    import os

    import torch

    from croft.backbones import Backbone
    from croft.predict import Predictor

__all__ = ["CroftError", "__version__", "load"]


def load(
    path: str | os.PathLike[str],
    *,
    backbone: str | Backbone | None = None,
    device: str | torch.device = "cpu",
    lazy: bool = True,
) -> Predictor:
    """Load a fitted head directory as a :class:`croft.predict.Predictor`.

    ``dir`` is written by ``croft fit`` or, from Python, by ``croft.methods.fit_and_save``
    (or ``croft.methods.fit`` + ``save_head``). ``croft.load(dir).predict([paths or PIL
    images])`` gives one prediction per image, with the OOD flag when the head stores a
    threshold (fitted with validation features); ``.predict_features(x)`` takes features;
    ``.head`` is the :class:`croft.methods.FittedHead`. The backbone (``backbone`` spec,
    default the one stored in head.json) is loaded and checked on first image prediction
    (``lazy=False``: now), the same default as :func:`croft.predict.load_predictor`.
    """
    from croft.predict import load_predictor

    return load_predictor(path, backbone=backbone, device=device, lazy=lazy)
