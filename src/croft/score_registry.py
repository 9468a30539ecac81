"""The score registry: :class:`Score`, :class:`Detector` and :data:`SCORES`.

A :class:`Score` is a registered function ``fn(*needs, **params) -> (N,)``, higher = more
in-distribution, with an optional :data:`FitFn`; a :class:`Detector` is a score ready to
apply, the same two calls (``fit``, ``score``) for every score. :func:`register_score`
adds one to :data:`SCORES`. The scores themselves are registered in :mod:`croft.scores`,
which re-exports every name here.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from croft.errors import CroftError
from croft.registry import Registry
from croft.score_base import DetectorState, ScoreInputs

__all__ = ["FIT_CONTEXT", "SCORES", "Detector", "FitFn", "Score", "register_score"]


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
