"""What every score reads and keeps: :class:`ScoreInputs`, :class:`DetectorState`, and the
shared input checks (imported by :mod:`croft.scores`, :mod:`croft.detectors` and
:mod:`croft.neglabel`, so those never import each other in a circle)."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from croft.errors import CroftError

__all__ = ["DetectorState", "ScoreInputs"]


# --- validation ---------------------------------------------------------------------------
def _matrix(x: Any, name: str, where: str, shape: str = "(N, C)") -> Tensor:
    """Check ``x`` is a 2-D tensor with at least one column; integer tensors become float32."""
    if not isinstance(x, Tensor):
        raise CroftError(
            f"{where}: {name} is a {type(x).__name__}, expected a torch.Tensor; "
            "wrap it with torch.as_tensor(...)"
        )
    if x.ndim != 2 or x.shape[1] == 0:
        raise CroftError(
            f"{where}: {name} has shape {tuple(x.shape)}, expected {shape} with {shape[-2]} >= 1"
        )
    return x if x.is_floating_point() else x.float()


def _positive(value: float, name: str, where: str) -> float:
    value = float(value)
    if not value > 0.0:  # also rejects NaN
        raise CroftError(f"{where}: {name}={value!r} must be > 0")
    return value


def _positive_int(value: int, name: str, where: str) -> int:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
    if not ok:
        raise CroftError(f"{where}: {name}={value!r} must be a positive integer")
    return int(value)


def _sq_dists(q: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances ``(n, m)`` between rows of ``q`` ``(n, D)`` and ``b`` ``(m, D)``.

    Uses ``|q|² + |b|² - 2 q·b`` (as faiss ``IndexFlatL2``), clamped at 0.
    """
    d2 = q.square().sum(1, keepdim=True) + b.square().sum(1).unsqueeze(0) - 2.0 * (q @ b.T)
    return d2.clamp_min_(0.0)


@dataclass
class ScoreInputs:
    """What a score may read, one row per sample. Shapes: ``logits`` and ``similarities``
    ``(N, C)`` (the head's logits, and cosine similarities without the logit scale),
    ``embeddings`` ``(N, D)`` (the head's image embedding), ``bank`` ``(M, D)`` (KNN's ID
    features when :func:`compute_scores` is called without a fitted state),
    ``local_similarities`` ``(N, P, C)`` (cosine of each of ``P`` local features to each
    class text feature, for GL-MCM)."""

    logits: Tensor | None = None
    similarities: Tensor | None = None
    embeddings: Tensor | None = None
    bank: Tensor | None = None
    local_similarities: Tensor | None = None


@dataclass
class DetectorState:
    """What fitting a detector keeps: named tensors (saved as safetensors) and JSON-able
    ``meta`` (e.g. NegLabel's mined words). Empty for stateless scores."""

    tensors: dict[str, Tensor] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
