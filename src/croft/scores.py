"""OOD scores on cached model outputs.

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

:data:`SCORES` registers each one as a :class:`Score` with the uniform call
``score.compute(ScoreInputs(...), **params)``; :func:`compute_scores` runs several.
``SCORES.get(name).detector(**params)`` gives a :class:`Detector`, the same two calls for
every score: ``fit(id_inputs)`` (KNN keeps its bank; stateless scores ignore it) and
``score(inputs)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from croft.errors import CroftError
from croft.registry import Registry
from croft.scores_local import gl_mcm

__all__ = [
    "SCORES",
    "Detector",
    "Score",
    "ScoreInputs",
    "compute_scores",
    "energy",
    "knn",
    "max_logit",
    "mcm",
    "msp",
]


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
def _sq_dists(q: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances ``(n, m)`` between rows of ``q`` ``(n, D)`` and ``b`` ``(m, D)``.

    Uses ``|q|² + |b|² - 2 q·b`` (as faiss ``IndexFlatL2``), clamped at 0.
    """
    d2 = q.square().sum(1, keepdim=True) + b.square().sum(1).unsqueeze(0) - 2.0 * (q @ b.T)
    return d2.clamp_min_(0.0)


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


# --- registry ---------------------------------------------------------------------------------
@dataclass
class ScoreInputs:
    """What a score may read. Shapes: ``logits`` and ``similarities`` ``(N, C)``,
    ``embeddings`` ``(N, D)``, ``bank`` ``(M, D)`` (ID training features for KNN),
    ``local_similarities`` ``(N, P, C)`` (cosine of each of ``P`` local features to each
    class text feature, for GL-MCM)."""

    logits: Tensor | None = None
    similarities: Tensor | None = None
    embeddings: Tensor | None = None
    bank: Tensor | None = None
    local_similarities: Tensor | None = None


_INPUT_NAMES = tuple(f.name for f in dataclasses.fields(ScoreInputs))


@dataclass(frozen=True)
class Score:
    """A registered score: the :class:`ScoreInputs` fields it reads and the function.

    ``fit_on`` names the :class:`ScoreInputs` field of ID data the score is fitted on
    (KNN: ``"embeddings"``, which becomes its ``bank``); ``None`` for stateless scores.
    Callers use every score alike through :meth:`detector`.
    """

    name: str
    needs: tuple[str, ...]
    fn: Callable[..., Tensor]
    summary: str
    fit_on: str | None = None

    def detector(self, **params: Any) -> Detector:
        """A :class:`Detector` with these parameters (checked now)."""
        return Detector(self, params)

    def params(self) -> list[str]:
        """Names of the keyword parameters ``compute`` accepts."""
        return list(inspect.signature(self.fn).parameters)[len(self.needs) :]

    def compute(self, inputs: ScoreInputs, **params: Any) -> Tensor:
        """Score every sample: ``(N,)``, higher = more in-distribution."""
        args = []
        for field in self.needs:
            value = getattr(inputs, field)
            if value is None:
                raise CroftError(
                    f"score {self.name!r} needs inputs.{field}, which is missing; "
                    f"set ScoreInputs({field}=...) or drop {self.name!r}"
                )
            args.append(value)
        known = self.params()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise CroftError(
                f"score {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(known) or 'none'}"
            )
        return self.fn(*args, **params)


class Detector:
    """A score ready to apply: ``fit(id_inputs)`` then ``score(inputs)``, for every score.

    Stateful scores (``Score.fit_on`` set, e.g. KNN) keep the fitted ID data (KNN's bank:
    ``id_inputs.embeddings`` ``(M, D)``); for stateless scores ``fit`` does nothing, so a
    caller fits every detector on the same ID data and never special-cases one.
    ``score`` returns ``(N,)``, higher = more in-distribution.
    """

    def __init__(self, score: Score, params: Mapping[str, Any] | None = None) -> None:
        self.spec, self.params = score, dict(params or {})
        unknown = sorted(set(self.params) - set(score.params()))
        if unknown:
            raise CroftError(
                f"score {score.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(score.params()) or 'none'}"
            )
        self.state: Tensor | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def needs_fit(self) -> bool:
        return self.spec.fit_on is not None

    def fit(self, id_inputs: ScoreInputs | Tensor) -> Detector:
        """Keep what the score needs from ID data (a no-op for stateless scores)."""
        if self.spec.fit_on is None:
            return self
        value = id_inputs if isinstance(id_inputs, Tensor) else getattr(id_inputs, self.spec.fit_on)
        if value is None:
            raise CroftError(f"score {self.name!r} is fitted on ID {self.spec.fit_on}; none given")
        self.state = value
        return self

    def score(self, inputs: ScoreInputs) -> Tensor:
        """Scores ``(N,)`` of ``inputs``; a stateful detector must be fitted first."""
        if self.needs_fit:
            if self.state is None:
                raise CroftError(
                    f"the {self.name} score needs a bank of ID features: call fit(...) first "
                    "(evaluate: pass bank=)"
                )
            inputs = dataclasses.replace(inputs, bank=self.state)
        return self.spec.compute(inputs, **self.params)


SCORES: Registry[Score] = Registry("score")


def _register(
    name: str,
    needs: tuple[str, ...],
    fn: Callable[..., Tensor],
    summary: str,
    fit_on: str | None = None,
) -> None:
    if not set(needs) <= set(_INPUT_NAMES):
        raise RuntimeError(f"score {name!r} needs unknown inputs {needs}")
    SCORES.register(name, summary)(Score(name, needs, fn, summary, fit_on))


_register("energy", ("logits",), energy, "T * logsumexp(logits / T) (CRoFT's score)")
_register("msp", ("logits",), msp, "maximum softmax probability")
_register("max_logit", ("logits",), max_logit, "largest logit")
_register("mcm", ("similarities",), mcm, "maximum softmax of cosine similarities / T")
_register(
    "knn",
    ("embeddings", "bank"),
    knn,
    "minus the distance to the k-th nearest ID feature",
    fit_on="embeddings",
)
_register("gl_mcm", ("similarities", "local_similarities"), gl_mcm, "global + largest local MCM")


def compute_scores(
    names: Iterable[str],
    inputs: ScoreInputs,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Tensor]:
    """Compute the named scores: ``{name: (N,) tensor}``, higher = more in-distribution.

    ``params`` maps a score name to its keyword parameters, e.g. ``{"knn": {"k": 5}}``.
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
