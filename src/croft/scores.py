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
parses a config's score list (``[energy, {name: knn, k: 50}]``).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from croft import detectors, neglabel
from croft.errors import CroftError
from croft.registry import Registry
from croft.score_base import (
    DetectorState,
    ScoreInputs,
    _matrix,
    _positive,
    _positive_int,
    _sq_dists,
)
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


# --- registry: scores and fitted detectors ---------------------------------------------------
_INPUT_NAMES = tuple(f.name for f in dataclasses.fields(ScoreInputs))

#: Keywords a fit function may declare to receive from its caller (never from a config).
FIT_CONTEXT = ("encode_text",)


#: ``fit(id_inputs, labels, text_features, head, **params) -> DetectorState``: ``id_inputs``
#: the head's outputs on ID training features (:class:`ScoreInputs`, ``M`` rows),
#: ``labels`` ``(M,)`` int64, ``text_features`` ``(C, D)`` unit-norm class embeddings of the
#: head's classifier (``None`` when its logits are not linear in the embedding), ``head``
#: the fitted head (read-only).
FitFn = Callable[..., DetectorState]


def _kw_params(fn: Callable[..., Any], skip: int) -> list[str]:
    return [
        n
        for n, p in list(inspect.signature(fn).parameters.items())[skip:]
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n not in FIT_CONTEXT
    ]


@dataclass(frozen=True)
class Score:
    """A registered score: ``fn(*needs, **params) -> (N,)``, higher = more in-distribution.

    ``needs`` names :class:`ScoreInputs` fields or, for a fitted score, tensors of its
    :class:`DetectorState` (KNN: ``("embeddings", "bank")``, the bank from its state).
    ``fit`` (``None`` for stateless scores) is a :data:`FitFn`; ``fit_on`` says in words
    what it needs (for errors); ``state_shapes`` names each state tensor's dimensions
    symbolically (``{"means": ("K", "D")}``, ``D`` the embedding dimension), checked when a
    saved state is loaded. Callers use every score alike through :meth:`detector`.
    """

    name: str
    needs: tuple[str, ...]
    fn: Callable[..., Tensor]
    summary: str
    fit: FitFn | None = None
    fit_on: str = ""
    state_shapes: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def detector(self, label: str | None = None, **params: Any) -> Detector:
        """A :class:`Detector` with these parameters (names checked now)."""
        return Detector(self, params, label)

    def params(self) -> list[str]:
        """Keyword parameters of the score and of its fit (each name once)."""
        out = list(inspect.signature(self.fn).parameters)[len(self.needs) :]
        if self.fit is not None:
            out += [n for n in _kw_params(self.fit, 4) if n not in out]
        return out

    def defaults(self) -> dict[str, Any]:
        """Each parameter's default (``croft list scores -v``)."""
        out: dict[str, Any] = {}
        for fn in (self.fn, self.fit):
            if fn is None:
                continue
            for n, p in inspect.signature(fn).parameters.items():
                if p.default is not p.empty and n not in FIT_CONTEXT:
                    out.setdefault(n, p.default)
        return {n: out.get(n) for n in self.params()}

    def describe(self) -> str:
        """One line of parameters and defaults (``k=1, squared=False``), and what a fitted
        score is fitted on (``croft list scores -v``)."""
        text = ", ".join(f"{n}={v!r}" for n, v in self.defaults().items()) or "no parameters"
        return text + (f"; fitted on {self.fit_on}" if self.fit is not None else "")

    def check_params(self, params: Mapping[str, Any]) -> None:
        known = self.params()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise CroftError(
                f"score {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(known) or 'none'}"
            )

    def compute(
        self, inputs: ScoreInputs, state: DetectorState | None = None, **params: Any
    ) -> Tensor:
        """Score every sample: ``(N,)``, higher = more in-distribution. Each need is read
        from ``state.tensors`` when there, else from ``inputs``."""
        args = []
        for field in self.needs:
            value = state.tensors.get(field) if state is not None else None
            if value is None:
                value = getattr(inputs, field, None)
            if value is None:
                raise CroftError(
                    f"score {self.name!r} needs inputs.{field}, which is missing; "
                    f"set ScoreInputs({field}=...) or drop {self.name!r}"
                )
            args.append(value)
        self.check_params(params)
        own = list(inspect.signature(self.fn).parameters)[len(self.needs) :]
        return self.fn(*args, **{k: v for k, v in params.items() if k in own})


class Detector:
    """A score ready to apply, the same two calls for every score: ``fit(...)`` on ID
    training data, then ``score(inputs)`` ``(N,)``, higher = more in-distribution.

    ``fit(id_inputs, labels=None, text_features=None, head=None)`` runs the score's
    :data:`FitFn` and keeps its :class:`DetectorState` in ``state`` (a no-op for stateless
    scores; ``id_inputs`` may be a bare ``(M, D)`` embedding tensor). ``label`` names the
    detector's column (default: the score's name), so one score can appear with several
    parameter sets (``knn@5``).
    """

    def __init__(
        self, score: Score, params: Mapping[str, Any] | None = None, label: str | None = None
    ) -> None:
        self.spec, self.params = score, dict(params or {})
        score.check_params(self.params)
        self.label = label or score.name
        self.state: DetectorState | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def needs_fit(self) -> bool:
        return self.spec.fit is not None

    def fit(
        self,
        id_inputs: ScoreInputs | Tensor,
        labels: Tensor | None = None,
        text_features: Tensor | None = None,
        head: Any = None,
        **context: Any,
    ) -> Detector:
        """Fit on ID data (see the class docstring); ``context`` (``encode_text``) reaches
        fit functions that declare it."""
        fit = self.spec.fit
        if fit is None:
            return self
        if isinstance(id_inputs, Tensor):
            id_inputs = ScoreInputs(embeddings=id_inputs)
        sig = inspect.signature(fit).parameters
        kw = {k: v for k, v in self.params.items() if k in sig}
        kw.update({k: v for k, v in context.items() if k in sig})
        self.state = fit(id_inputs, labels, text_features, head, **kw)
        return self

    def score(self, inputs: ScoreInputs) -> Tensor:
        """Scores ``(N,)`` of ``inputs``; a fitted score must be fitted (or loaded) first."""
        if self.needs_fit and self.state is None:
            raise CroftError(
                f"the {self.label} score needs {self.spec.fit_on or 'fitting'}: call "
                "fit(...) first (evaluate: pass bank=)"
            )
        return self.spec.compute(inputs, self.state, **self.params)


SCORES: Registry[Score] = Registry("score")


def register_score(
    name: str,
    needs: tuple[str, ...],
    fn: Callable[..., Tensor],
    summary: str,
    fit: FitFn | None = None,
    fit_on: str = "",
    state_shapes: Mapping[str, tuple[str, ...]] | None = None,
) -> Score:
    """Register a score (stateless, or fitted with ``fit``); returns it."""
    if fit is None and not set(needs) <= set(_INPUT_NAMES):
        raise RuntimeError(f"score {name!r} needs unknown inputs {needs}")
    score = Score(name, needs, fn, summary, fit, fit_on, dict(state_shapes or {}))
    SCORES.register(name, summary)(score)
    return score


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
