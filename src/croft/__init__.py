"""croft: robust fine-tuning of frozen CLIP-like models (CRoFT, ICML 2024).

The package imports light: heavy optional dependencies (open_clip, transformers,
matplotlib) are loaded where they are used.

Layers, lowest first (a lower layer never imports a higher one):
``errors, registry`` -> ``metrics, scores`` -> ``features`` -> ``methods`` ->
``simulate`` -> ``protocols`` -> ``cli``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from croft.errors import CroftError

__all__ = ["CroftError", "__version__", "load"]


def load(path: str):  # noqa: ANN201 - returns croft.methods.FittedHead
    """Load a fitted head saved by :func:`croft.methods.save_head` (a directory)."""
    from croft.methods.io import load_head

    return load_head(path)
