"""Fitted feature-space detectors (Mahalanobis, ViM) and saving a detector's fitted state.

Both are registered in :data:`croft.scores.SCORES` and follow its fit protocol
(:data:`croft.scores.FitFn`): fitted on the head's outputs for ID training features, then
scored on any set; **higher = more in-distribution**, as every croft score.

* ``mahalanobis`` (Lee et al., NeurIPS 2018): class means ``μ_c`` and one shared covariance
  ``Σ`` (maximum likelihood, divided by ``M``) of the ID embeddings; the score is
  ``-min_c (x - μ_c)ᵀ Σ⁺ (x - μ_c)``, minus the squared Mahalanobis distance to the closest
  class mean (the paper's confidence score ``M(x)``, without its input pre-processing,
  which needs the image encoder). ``Σ⁺`` is the pseudo-inverse: with fewer ID rows than
  dimensions (few-shot), directions the ID data never varies in are ignored; ``ridge``
  adds ``ridge · mean eigenvalue`` to every eigenvalue instead.
* ``vim`` (Wang et al., CVPR 2022): the residual of ``x - u`` off the principal subspace
  (top ``dim`` eigenvectors of the ID embeddings' uncentred covariance about the origin
  ``u = -W⁺ b``) is the virtual logit, scaled by ``α = mean max logit / mean residual norm``
  on the ID data; the score is ``logsumexp(logits) - α ‖(x - u)ᵀ R‖``. The classifier is the
  head's: CLIP's text head has ``b = 0``, so ``u = 0``; a head with a bias (the linear
  probe) gives it through ``head.classifier()``.

Both are registered in :mod:`croft.scores`; a fitted state is saved beside a head by
:mod:`croft.detector_states`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from croft.errors import CroftError
from croft.score_base import DetectorState, ScoreInputs, _matrix, _sq_dists

log = logging.getLogger(__name__)

__all__ = ["mahalanobis", "vim", "vim_default_dim"]


def _id_embeddings(id_inputs: ScoreInputs, name: str) -> tuple[Tensor, torch.dtype]:
    """The ID embeddings in float64, and the dtype the state keeps (float64 inputs: float64,
    else float32)."""
    if id_inputs.embeddings is None:
        raise CroftError(f"the {name} score is fitted on ID embeddings; none given")
    x = _matrix(id_inputs.embeddings, "ID embeddings", name, "(M, D)")
    return x.double(), torch.float64 if x.dtype == torch.float64 else torch.float32


def _eig(cov: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric ``(D, D)`` matrix (float64)."""
    vals, vecs = torch.linalg.eigh(0.5 * (cov + cov.T))
    return vals.clamp_min(0.0), vecs


def _tol(vals: Tensor) -> float:
    """Eigenvalues at or below this count as zero (numpy ``pinv``'s default relative cut)."""
    return float(vals.max()) * vals.numel() * torch.finfo(torch.float64).eps


# --- Mahalanobis ------------------------------------------------------------------------------
def mahalanobis(
    embeddings: Tensor, means: Tensor, whitener: Tensor, chunk_size: int = 8192
) -> Tensor:
    """``-min_c ‖(x - μ_c) W‖²``: ``(N, D)``, means ``(K, D)``, whitener ``(D, R)`` with
    ``W Wᵀ = Σ⁺`` -> ``(N,)``. Computed in float32 (float64 for float64 inputs), in chunks
    of ``chunk_size`` rows."""
    x = _matrix(embeddings, "embeddings", "mahalanobis", "(N, D)")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = whitener.to(device=x.device, dtype=dtype)
    m = means.to(device=x.device, dtype=dtype) @ w
    out = torch.empty(x.shape[0], dtype=dtype, device=x.device)
    with torch.no_grad():
        for s in range(0, x.shape[0], max(1, int(chunk_size))):
            z = x[s : s + chunk_size].to(dtype) @ w
            out[s : s + z.shape[0]] = _sq_dists(z, m).amin(dim=1)
    return -out


def _fit_mahalanobis(
    id_inputs: ScoreInputs, labels: Tensor | None, text_features: Tensor | None, head: Any,
    *, ridge: float = 0.0,
) -> DetectorState:  # fmt: skip
    """Class means of the ID embeddings and the whitener of their shared covariance."""
    x, keep_dtype = _id_embeddings(id_inputs, "mahalanobis")
    if labels is None or labels.shape != (x.shape[0],):
        raise CroftError("the mahalanobis score is fitted on labelled ID features; none given")
    labels = labels.to(x.device).long()
    if bool((labels < 0).any()):
        raise CroftError("mahalanobis: the ID training labels hold -1 (unknown); use ID data")
    classes, inverse = torch.unique(labels, return_inverse=True)
    counts = torch.bincount(inverse, minlength=classes.numel()).to(x.dtype)
    means = torch.zeros(classes.numel(), x.shape[1], dtype=x.dtype, device=x.device)
    means.index_add_(0, inverse, x)
    means /= counts[:, None]
    centred = (x - means[inverse]).float() if x.shape[0] > 4096 else x - means[inverse]
    cov = (centred.T @ centred).double() / x.shape[0]
    vals, vecs = _eig(cov)
    ridge = float(ridge)
    if not ridge >= 0.0:
        raise CroftError(f"mahalanobis: ridge={ridge!r} must be >= 0")
    if ridge > 0:
        vals = vals + ridge * float(vals.mean())
    keep = vals > _tol(vals)
    whitener = vecs[:, keep] / vals[keep].sqrt()
    return DetectorState(
        {"means": means.to(keep_dtype), "whitener": whitener.to(keep_dtype).contiguous()},
        {"classes": classes.tolist(), "rank": int(keep.sum())},
    )


# --- ViM --------------------------------------------------------------------------------------
def vim_default_dim(d: int) -> int:
    """The principal dimension for ``d``-dim features: 1000 for ``d >= 2048``, 512 for
    ``d >= 768`` (the ViM paper's choices for its 2048- and 768-d backbones), else ``d // 2``
    (as pytorch-ood falls back); CLIP ViT-B/16's 512-d embedding gets 256."""
    return 1000 if d >= 2048 else 512 if d >= 768 else max(1, d // 2)


def vim(
    logits: Tensor, embeddings: Tensor, origin: Tensor, residual: Tensor, alpha: Tensor
) -> Tensor:
    """``logsumexp(logits) - α ‖(x - u) R‖``: logits ``(N, C)``, embeddings ``(N, D)``, origin
    ``u`` ``(D,)``, residual basis ``R`` ``(D, D - dim)``, scalar ``α`` -> ``(N,)``."""
    lg = _matrix(logits, "logits", "vim")
    x = _matrix(embeddings, "embeddings", "vim", "(N, D)")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype)
    r = (x - origin.to(x)) @ residual.to(x)
    return torch.logsumexp(lg.to(dtype), dim=1) - alpha.to(x) * r.norm(dim=1)


def _classifier_bias(head: Any, dim: int) -> tuple[Tensor, Tensor] | None:
    """``(W, b)`` of the head's linear classifier on its embedding, when it has one."""
    fn = getattr(head, "classifier", None)
    pair = fn() if callable(fn) else None
    if pair is None:
        return None
    w, b = (t.detach().double().cpu() for t in pair)
    return (w, b) if w.shape[-1] == dim else None


def _fit_vim(
    id_inputs: ScoreInputs, labels: Tensor | None, text_features: Tensor | None, head: Any,
    *, dim: int = 0,
) -> DetectorState:  # fmt: skip
    """Origin, residual basis and ``α`` from the ID embeddings and logits (``dim`` 0: auto)."""
    x, dt = _id_embeddings(id_inputs, "vim")
    if id_inputs.logits is None:
        raise CroftError("the vim score is fitted on ID logits too; none given")
    d = x.shape[1]
    pair = _classifier_bias(head, d)
    origin = torch.zeros(d, dtype=torch.float64)
    if pair is not None and bool(pair[1].abs().max() > 0):
        origin = -(torch.linalg.pinv(pair[0]) @ pair[1])
    xc = x - origin.to(x.device)
    big = xc.shape[0] > 4096
    cov = ((xc.float().T @ xc.float()).double() if big else xc.T @ xc) / xc.shape[0]
    vals, vecs = _eig(cov)
    rank = int((vals > _tol(vals)).sum())
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < d:
        raise CroftError(f"vim: dim={dim!r} must be an integer in [1, {d - 1}] (0: automatic)")
    if dim == 0:
        dim = vim_default_dim(d)
        if dim >= rank:  # fewer ID rows than dimensions: keep half of what they span
            log.info("vim: the ID features span %d dimensions; principal dim %d", rank, rank // 2)
            dim = max(1, rank // 2)
    if dim >= rank:
        raise CroftError(
            f"vim: dim={dim} leaves no ID residual (the ID features span {rank} dimensions); "
            f"use dim < {rank}"
        )
    residual = vecs[:, : d - dim]  # eigh is ascending: the smallest d - dim directions
    norms = (xc @ residual).norm(dim=1)
    alpha = _matrix(id_inputs.logits, "logits", "vim").double().amax(dim=1).mean() / norms.mean()
    return DetectorState(
        {"origin": origin.to(dt), "residual": residual.to(dt).contiguous(), "alpha": alpha.to(dt)},
        {"dim": dim, "rank": rank},
    )
