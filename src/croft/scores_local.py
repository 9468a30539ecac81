"""Scores on local (patch) features: GL-MCM (Miyai et al., 2023, "Zero-Shot In-Distribution
Detection in Multi-Object Settings Using Vision-Language Foundation Models").

GL-MCM adds to MCM of the global image feature the largest MCM over the image's local
features: ``max_c softmax(cos_g / T)_c + max_p max_c softmax(cos_p / T)_c``, with ``cos_g``
``(N, C)`` the global and ``cos_p`` ``(N, P, C)`` the local image-text cosine similarities
(a ViT's projected patch tokens, a CLIP ResNet's attention-pool map; see
:mod:`croft.backbones.local`). Higher = more in-distribution; values in ``[2/C, 2]``.
Registered in :data:`croft.scores.SCORES` as ``gl_mcm``.
"""

from __future__ import annotations

from torch import Tensor

from croft.errors import CroftError


def _check(x: object, name: str, ndim: int, shape: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise CroftError(f"gl_mcm: {name} is a {type(x).__name__}, expected a torch.Tensor")
    if x.ndim != ndim or 0 in x.shape:
        raise CroftError(f"gl_mcm: {name} has shape {tuple(x.shape)}, expected {shape}")
    return x if x.is_floating_point() else x.float()


def local_mcm(local_similarities: Tensor, temperature: float = 1.0) -> Tensor:
    """``max_p max_c softmax(cos_p / T)_c``: ``(N, P, C) -> (N,)``, the local half of GL-MCM."""
    loc = _check(local_similarities, "local_similarities", 3, "(N, P, C)")
    t = float(temperature)
    if not t > 0.0:
        raise CroftError(f"gl_mcm: temperature={temperature!r} must be > 0")
    return (loc.float() / t).softmax(dim=2).amax(dim=2).amax(dim=1)


def gl_mcm(similarities: Tensor, local_similarities: Tensor, temperature: float = 1.0) -> Tensor:
    """GL-MCM: global MCM plus the largest local MCM, ``(N, C), (N, P, C) -> (N,)``.

    ``temperature`` ``T`` divides the cosines of both terms (the paper: ``T = 1``).
    Higher = more in-distribution.
    """
    glob = _check(similarities, "similarities", 2, "(N, C)")
    loc = _check(local_similarities, "local_similarities", 3, "(N, P, C)")
    if loc.shape[0] != glob.shape[0] or loc.shape[2] != glob.shape[1]:
        raise CroftError(
            f"gl_mcm: local_similarities {tuple(loc.shape)} do not match similarities "
            f"{tuple(glob.shape)}; expected (N, P, C) for the same N images and C classes"
        )
    local = local_mcm(loc, temperature)
    return (glob.float() / float(temperature)).softmax(dim=1).amax(dim=1) + local.to(glob.device)
