"""OOD scores on cached model outputs, and the one protocol of fitted detectors.

Sign convention: **every score is "higher = more in-distribution"** (ID-like samples
score higher than OOD-like ones), so a detector keeps a sample when its score is at or
above a threshold, and :mod:`croft.metrics` treats ID as the positive class.

Each score is a pure torch function returning one value per sample, shape ``(N,)``:

* :func:`energy` ``(N, C) logits``: ``T * logsumexp(logits / T)``, the *negative* of the
  textbook free energy. CRoFT's score is ``energy(100 * cos)`` with ``T = 1``.
* :func:`msp` ``(N, C) logits``: maximum softmax probability.
* :func:`max_logit` ``(N, C) logits``: largest logit.
* :func:`mcm` ``(N, C) cosine similarities``: maximum of ``softmax(cos / T)`` (MCM).
* :func:`knn` ``(N, D) embeddings, (M, D) bank``: minus the distance to the k-th nearest
  bank feature, both sides L2-normalised; chunked so memory stays bounded.
* fitted feature-space scores: ``mahalanobis`` and ``vim`` (:mod:`croft.detectors`),
  ``neglabel`` (:mod:`croft.neglabel`).

:data:`SCORES` registers each one as a :class:`Score`. ``SCORES.get(name).detector(**params)``
gives a :class:`Detector`, the same two calls for every score (in the spirit of
pytorch-ood's ``fit_features`` / ``predict_features``)::

    det.fit(id_inputs, labels, text_features, head)   # -> det.state (DetectorState)
    det.score(inputs)                                  # (N,), higher = more ID

A fitted score declares ``fit(id_inputs, labels, text_features, head, **params) ->
DetectorState`` (:data:`FitFn`; KNN keeps its bank) and reads its state's tensors by
name beside the :class:`ScoreInputs` fields; stateless scores ignore ``fit``.
:func:`compute_scores` runs several stateless ones; :func:`croft.score_lists.score_specs`
parses a config's score list (``[energy, {name: knn, k: 50}]``). The registry types
(:class:`Score`, :class:`Detector`, :data:`FitFn`, :data:`SCORES`) live in
:mod:`croft.score_registry` and are re-exported here; this module holds the scores and
registers each one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from croft import detectors, neglabel
from croft.errors import CroftError
from croft.score_base import (
    DetectorState,
    ScoreInputs,
    _matrix,
    _positive,
    _positive_int,
    _sq_dists,
)
from croft.score_registry import FIT_CONTEXT as FIT_CONTEXT
from croft.score_registry import SCORES, Detector, Score, register_score
from croft.score_registry import FitFn as FitFn
from croft.scores_local import gl_mcm

__all__ = [
    "SCORES",
    "Detector",
    "DetectorState",
    "Score",
    "ScoreInputs",
    "compute_scores",
    "register_score",
    "energy",
    "knn",
    "max_logit",
    "mcm",
    "msp",
]


# --- scores on logits / similarities ------------------------------------------------------
def energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Negative free energy ``T * logsumexp(logits / T, dim=1)``: ``(N, C) -> (N,)``.

    Higher = more in-distribution. Pass logits already multiplied by CLIP's logit scale
    (CRoFT: ``logsumexp(100 * cos)``, i.e. ``temperature=1``).
    """
    x = _matrix(logits, "logits", "energy")
    t = _positive(temperature, "temperature", "energy")
    return t * torch.logsumexp(x / t, dim=1)


def msp(logits: Tensor) -> Tensor:
    """Maximum softmax probability ``max_c softmax(logits)_c``: ``(N, C) -> (N,)``, in
    ``[1/C, 1]``. Higher = more in-distribution."""
    x = _matrix(logits, "logits", "msp")
    return torch.softmax(x, dim=1).amax(dim=1)


def max_logit(logits: Tensor) -> Tensor:
    """Largest logit ``max_c logits_c``: ``(N, C) -> (N,)``. Higher = more in-distribution."""
    x = _matrix(logits, "logits", "max_logit")
    return x.amax(dim=1)


def mcm(similarities: Tensor, temperature: float = 1.0) -> Tensor:
    """Maximum concept matching (Ming et al., 2022): ``max_c softmax(cos / T)_c``.

    ``similarities`` are image-text cosine similarities ``(N, C)`` (no logit scale);
    returns ``(N,)`` in ``[1/C, 1]``. Higher = more in-distribution.
    """
    x = _matrix(similarities, "similarities", "mcm")
    t = _positive(temperature, "temperature", "mcm")
    return torch.softmax(x / t, dim=1).amax(dim=1)


# --- KNN ------------------------------------------------------------------------------------
def knn(
    embeddings: Tensor,
    bank: Tensor,
    k: int = 1,
    *,
    squared: bool = False,
    chunk_size: int = 1024,
    bank_chunk_size: int = 16384,
) -> Tensor:
    """Minus the distance to the ``k``-th nearest bank feature: ``(N, D), (M, D) -> (N,)``.

    Both ``embeddings`` and ``bank`` are L2-normalised here. The default is the negative
    Euclidean distance; ``squared=True`` gives the authors' negative squared distance
    (faiss ``IndexFlatL2``). Higher = closer to the ID bank = more in-distribution.

    Queries are processed ``chunk_size`` at a time and the bank ``bank_chunk_size`` rows at a
    time with a running top-``k``, so the extra memory is
    ``O(chunk_size * (bank_chunk_size + k))``, never ``N * M``. The bank may live on another
    device (e.g. CPU for a 1M x 512 bank): each chunk moves to the queries' device. Distances
    are computed in float32 (float64 if both inputs are float64).
    """
    where = "knn"
    q_all = _matrix(embeddings, "embeddings", where, "(N, D)")
    bank = _matrix(bank, "bank", where, "(M, D)")
    if q_all.shape[1] != bank.shape[1]:
        raise CroftError(
            f"{where}: embeddings have dim {q_all.shape[1]} but the bank has dim "
            f"{bank.shape[1]}; use features from the same head for both"
        )
    k = _positive_int(k, "k", where)
    n_bank = bank.shape[0]
    if k > n_bank:
        raise CroftError(f"{where}: k={k} exceeds the bank size {n_bank}; use k <= {n_bank}")
    cq = _positive_int(chunk_size, "chunk_size", where)
    cb = _positive_int(bank_chunk_size, "bank_chunk_size", where)

    both64 = q_all.dtype == torch.float64 and bank.dtype == torch.float64
    dtype = torch.float64 if both64 else torch.float32
    device = q_all.device
    out = torch.empty(q_all.shape[0], dtype=dtype, device=device)
    with torch.no_grad():
        for qs in range(0, q_all.shape[0], cq):
            q = F.normalize(q_all[qs : qs + cq].to(dtype), dim=1)
            best = torch.full((q.shape[0], k), float("inf"), dtype=dtype, device=device)
            for bs in range(0, n_bank, cb):
                b = F.normalize(bank[bs : bs + cb].to(device=device, dtype=dtype), dim=1)
                merged = torch.cat([best, _sq_dists(q, b)], dim=1)
                best = torch.topk(merged, k, dim=1, largest=False, sorted=False).values
            out[qs : qs + q.shape[0]] = best.amax(dim=1)
    return -out if squared else -out.sqrt()


_register = register_score


def _fit_bank(
    id_inputs: ScoreInputs, labels: Tensor | None, text_features: Tensor | None, head: Any,
    *, k: int = 1,
) -> DetectorState:  # fmt: skip
    """KNN keeps the ID embeddings ``(M, D)`` as its bank (``k <= M`` checked here)."""
    bank = id_inputs.embeddings
    if bank is None:
        raise CroftError("the knn score is fitted on ID embeddings; none given")
    bank = _matrix(bank, "bank", "knn", "(M, D)")
    k = _positive_int(k, "k", "knn")
    if k > bank.shape[0]:
        raise CroftError(
            f"the bank holds {bank.shape[0]} rows, fewer than k={k}; use k <= {bank.shape[0]}"
        )
    return DetectorState({"bank": bank})


_register("energy", ("logits",), energy, "T * logsumexp(logits / T) (CRoFT's score)")
_register("msp", ("logits",), msp, "maximum softmax probability")
_register("max_logit", ("logits",), max_logit, "largest logit")
_register("mcm", ("similarities",), mcm, "maximum softmax of cosine similarities / T")
_register(
    "knn",
    ("embeddings", "bank"),
    knn,
    "minus the distance to the k-th nearest ID feature",
    fit=_fit_bank,
    fit_on="a bank of ID features",
    state_shapes={"bank": ("M", "D")},
)
_register("gl_mcm", ("similarities", "local_similarities"), gl_mcm, "global + largest local MCM")
_register(
    "mahalanobis",
    ("embeddings", "means", "whitener"),
    detectors.mahalanobis,
    "minus the squared Mahalanobis distance to the closest ID class mean (shared covariance)",
    fit=detectors._fit_mahalanobis,
    fit_on="labelled ID features",
    state_shapes={"means": ("K", "D"), "whitener": ("D", "R")},
)
_register(
    "vim",
    ("logits", "embeddings", "origin", "residual", "alpha"),
    detectors.vim,
    "energy minus ViM's virtual logit (residual off the ID principal subspace, scaled)",
    fit=detectors._fit_vim,
    fit_on="ID features and logits",
    state_shapes={"origin": ("D",), "residual": ("D", "R"), "alpha": ()},
)


_register(
    "neglabel",
    ("similarities", "embeddings", "negatives", "groups"),
    neglabel.neglabel,
    "NegLabel: ID softmax mass among ID + mined negative labels, grouped",
    fit=neglabel._fit_neglabel,
    fit_on="the head's class embeddings and the text tower",
    state_shapes={"negatives": ("M", "D"), "groups": ("M",)},
)


def compute_scores(
    names: Iterable[str],
    inputs: ScoreInputs,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Tensor]:
    """Compute the named scores: ``{name: (N,) tensor}``, higher = more in-distribution.

    ``params`` maps a score name to its keyword parameters, e.g. ``{"knn": {"k": 5}}``.
    Fitted scores read their state from ``inputs`` (KNN: ``inputs.bank``).
    """
    names = list(names)
    params = dict(params or {})
    stray = sorted(set(params) - set(names))
    if stray:
        raise CroftError(
            f"compute_scores: parameters given for {', '.join(map(repr, stray))}, which "
            f"is not among the requested scores {names}; fix the name or request it"
        )
    return {name: SCORES.get(name).compute(inputs, **params.get(name, {})) for name in names}
