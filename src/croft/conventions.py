"""Evaluation conventions: croft's corrected ones and the authors', as one switch.

The authors' evaluation of CRoFT differs from croft's default in five independent ways
(docs/deviations.md X2, D7, B16; docs/conventions.md). :class:`Conventions` holds each as
its own field, and :func:`resolve` builds one from a preset name plus per-field
overrides, so an experiment file can say ``conventions: authors`` and still change any
single field::

    resolve("authors")                                  # every authors' choice
    resolve("croft", {"id_positives": "correct"})       # croft's, correct-only positives
    resolve("authors", setup="setup1")                  # Setup-I: the authors' choices there

Fields (``croft`` preset first, then ``authors``):

* ``id_positives`` — which ID samples are detection positives: ``all`` | ``correct``
  (only correctly classified ID samples, the authors' energy evaluator, X2). Applies to
  every score except KNN, which follows ``knn_id_positives``.
* ``knn_id_positives`` — the same for KNN scores: ``all`` in both presets (the authors'
  KNN script keeps every ID sample); ``""`` follows ``id_positives``.
* ``detection_ratio`` / ``detection_ratio_text`` — mixing ratios of the adapter heads'
  *detection* view (``None``: the prediction ratios) — ``None`` | ``0.5`` / ``0.0`` (D7;
  Setup-II only). Accuracy always uses the prediction ratios.
* ``knn_bank`` — the ID features every fitted score (KNN's bank, Mahalanobis, ViM) is
  fitted on: ``train`` (the few-shot training images, eval view) |
  ``source`` (at most ``knn_bank_per_class`` images per class of the source domains'
  train split, the authors' Setup-II bank).
* ``knn_k_sweep`` — extra ``k`` values recorded as ``knn@k`` scores beside ``knn`` (whose
  ``k`` is its score-list entry's): none | 1, 5, 10, 25, 50, 100, 200, 300, 400, 500.
* ``id_cap_per_class`` — at most this many ID images per class as detection positives
  (0: all) — 0 | 500 (Setup-II).
* ``fpr95`` — the FPR95 column tables show first: ``fpr95_id_pos`` | ``fpr95_paper``.
  Every record carries both (and ``fpr95_ood_pos``) whatever this says.

Not reproduced: the authors' KNN script reads FPR95 at the recall *closest* to 95 %
(it may fall below); croft's ``fpr95_id_pos`` never goes below 95 %
(docs/conventions.md#fpr95).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from croft.errors import CroftError

__all__ = [
    "AUTHORS_KNN_KS",
    "CONVENTION_NAMES",
    "Conventions",
    "cap_per_class",
    "resolve",
]

AUTHORS_KNN_KS = (1, 5, 10, 25, 50, 100, 200, 300, 400, 500)
CONVENTION_NAMES = ("croft", "authors")
SETUPS = ("setup1", "setup2")
FPR95_KEYS = ("fpr95_id_pos", "fpr95_paper")
#: Scores whose ID positives follow a field of their own (the authors' KNN script).
OWN_POSITIVES = {"knn": "knn_id_positives"}
#: Convention fields that sweep a score's parameter: field -> (score, parameter).
SWEEPS = {"knn_k_sweep": ("knn", "k")}


@dataclass(frozen=True)
class Conventions:
    """One choice per evaluation convention (see the module docstring)."""

    name: str = "croft"
    id_positives: str = "all"
    knn_id_positives: str = "all"
    detection_ratio: float | None = None
    detection_ratio_text: float | None = None
    knn_bank: str = "train"
    knn_bank_per_class: int = 500
    knn_k_sweep: tuple[int, ...] = ()
    id_cap_per_class: int = 0
    fpr95: str = "fpr95_id_pos"

    def check(self) -> Conventions:
        for key, allowed in (
            ("id_positives", ("all", "correct")),
            ("knn_id_positives", ("all", "correct", "")),
            ("knn_bank", ("train", "source")),
            ("fpr95", FPR95_KEYS),
        ):
            if getattr(self, key) not in allowed:
                raise CroftError(
                    f"conventions: {key} {getattr(self, key)!r}: use one of {', '.join(allowed)}"
                )
        for key in ("detection_ratio", "detection_ratio_text"):
            value = getattr(self, key)
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise CroftError(f"conventions: {key} must lie in [0, 1] (or null), got {value}")
        if any(int(k) < 1 for k in self.knn_k_sweep):
            raise CroftError("conventions: every knn_k_sweep value must be >= 1")
        if self.id_cap_per_class < 0 or self.knn_bank_per_class < 1:
            raise CroftError("conventions: id_cap_per_class >= 0, knn_bank_per_class >= 1")
        return self

    def positives(self, score: str) -> str:
        """``all`` or ``correct`` for the registered score named ``score`` (a field of
        :data:`OWN_POSITIVES` when the score has one and it is set, else ``id_positives``)."""
        own = OWN_POSITIVES.get(score)
        return (getattr(self, own) if own else "") or self.id_positives

    def sweeps(self) -> dict[str, tuple[str, tuple[Any, ...]]]:
        """Extra parameter values each score is also recorded at, ``{score: (param,
        values)}``: the evaluation adds a detector ``score@value`` per value
        (``knn_k_sweep``: ``knn@k``)."""
        return {
            score: (param, tuple(getattr(self, key)))
            for key, (score, param) in SWEEPS.items()
            if getattr(self, key)
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (a run records it; :func:`resolve` reads it back)."""
        out = dataclasses.asdict(self)
        out["knn_k_sweep"] = list(self.knn_k_sweep)
        return out

    def apply_to_head(self, head: Any) -> Any:
        """Give an adapter head this convention's detection ratios (in place; other heads
        and ``None`` ratios are left alone). Returns ``head``."""
        if self.detection_ratio is None and self.detection_ratio_text is None:
            return head
        if hasattr(head, "det_ratio") and hasattr(head, "det_ratio_text"):
            if self.detection_ratio is not None:
                head.det_ratio = float(self.detection_ratio)
            if self.detection_ratio_text is not None:
                head.det_ratio_text = float(self.detection_ratio_text)
        return head


def _presets(setup: str) -> dict[str, Conventions]:
    authors = Conventions(
        name="authors",
        id_positives="correct",
        knn_id_positives="all",
        detection_ratio=0.5,
        detection_ratio_text=0.0,
        knn_bank="source",
        knn_k_sweep=AUTHORS_KNN_KS,
        id_cap_per_class=500,
        fpr95="fpr95_paper",
    )
    if setup == "setup1":  # Setup-I: training ratios, ID = the 4/class val draw (B9), no KNN
        authors = dataclasses.replace(
            authors,
            detection_ratio=None,
            detection_ratio_text=None,
            knn_bank="train",
            knn_k_sweep=(),
            id_cap_per_class=0,
        )
    return {"croft": Conventions(), "authors": authors}


def resolve(
    name: str | Mapping[str, Any] | Conventions = "croft",
    overrides: Mapping[str, Any] | None = None,
    *,
    setup: str = "setup2",
) -> Conventions:
    """The preset ``name`` (``croft`` | ``authors``) with ``overrides`` applied, checked.

    ``name`` may also be a mapping ``{"name": preset, field: value, …}`` (as an experiment
    file or a run record holds it) or a :class:`Conventions` (returned with overrides).
    ``setup`` (``setup1`` | ``setup2``) picks the authors' choices of that setup.
    """
    if setup not in SETUPS:
        raise CroftError(f"conventions: setup {setup!r}: use setup1 or setup2")
    extra: dict[str, Any] = {}
    if isinstance(name, Conventions):
        base = name
    else:
        if isinstance(name, Mapping):
            extra = {k: v for k, v in name.items() if k != "name"}
            name = str(name.get("name", "croft"))
        presets = _presets(setup)
        if name not in presets:
            raise CroftError(
                f"conventions {name!r}: use one of {', '.join(CONVENTION_NAMES)} "
                "(override single fields as keys)"
            )
        base = presets[name]
    extra.update(overrides or {})
    known = {f.name for f in dataclasses.fields(Conventions)} - {"name"}
    unknown = sorted(set(extra) - known)
    if unknown:
        raise CroftError(
            f"conventions: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    if "knn_k_sweep" in extra:
        sweep = extra["knn_k_sweep"]
        extra["knn_k_sweep"] = tuple(int(k) for k in (sweep or ()))
    return dataclasses.replace(base, **extra).check()


def cap_per_class(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Sorted row indices keeping at most ``per_class`` rows of each label (all when 0).

    Rows of a class with more are drawn at random (``torch.Generator`` seeded with
    ``seed``), as the authors' ``≤ 500 per class`` sets are; labels ``< 0`` are kept.
    """
    idx = torch.arange(labels.shape[0])
    if per_class <= 0:
        return idx
    gen = torch.Generator().manual_seed(int(seed))
    keep = [idx[labels < 0]]
    for c in torch.unique(labels[labels >= 0]).tolist():
        rows = idx[labels == c]
        if rows.numel() > per_class:
            rows = rows[torch.randperm(rows.numel(), generator=gen)[:per_class]]
        keep.append(rows)
    return torch.cat(keep).sort().values
