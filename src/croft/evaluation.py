"""Evaluate a fitted head on both goals at once.

* closed-set OOD generalisation: accuracy on a covariate-shifted ID set (e.g. the
  held-out domain);
* open-set OOD detection: for each OOD set and each score (higher = more ID), the
  metrics of :func:`croft.metrics.detection_metrics` with the ID set as positives.

Per-sample scores are kept so that reports and plots can be redrawn without rerunning.

Ids such as B8 or D7 name behaviours of the authors' code; docs/deviations.md defines them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from croft.conventions import Conventions, cap_per_class
from croft.conventions import resolve as resolve_conventions
from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.base import FittedHead
from croft.methods.saving import energy_threshold
from croft.metrics import accuracy, detection_metrics
from croft.scores import SCORES, Detector, ScoreInputs

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SCORES",
    "Conventions",
    "Evaluation",
    "convention_detectors",
    "detection_head",
    "energy_threshold",
    "evaluate",
    "fit_detectors",
    "head_outputs",
    "resolve_conventions",
]

DEFAULT_SCORES = ("energy", "mcm", "msp", "max_logit", "knn")


@dataclass
class Evaluation:
    """Accuracy on the ID (shifted) set and detection metrics per OOD set and score."""

    accuracy: float
    n_id: int
    detection: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    conventions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"accuracy": self.accuracy, "n_id": self.n_id, "detection": self.detection}
        if self.conventions:
            out["conventions"] = self.conventions
        return out


@torch.no_grad()
def head_outputs(
    head: FittedHead,
    x: torch.Tensor,
    batch_size: int = 8192,
    local: torch.Tensor | None = None,
) -> ScoreInputs:
    """Logits, similarities and embeddings of ``x`` ``(N, D)``, computed in batches; with
    ``local`` ``(N, P, D)`` also ``local_similarities`` ``(N, P, C)`` (the head's
    similarities of every local feature, :func:`croft.scores_local.gl_mcm`'s input)."""
    x = head.check_features(x)
    parts: dict[str, list[torch.Tensor]] = {"logits": [], "similarities": [], "embeddings": []}
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        parts["logits"].append(head.logits(xb))
        parts["similarities"].append(head.similarities(xb))
        parts["embeddings"].append(head.embed(xb))
    out = ScoreInputs(**{k: torch.cat(v) for k, v in parts.items()})
    if local is not None:
        n, p = local.shape[:2]
        step = max(1, batch_size // max(p, 1))
        sims = [
            head.similarities(head.check_features(local[a : a + step].flatten(0, 1))).view(
                -1, p, head.num_classes
            )
            for a in range(0, n, step)
        ]
        out.local_similarities = torch.cat(sims)
    return out


def detection_head(head: FittedHead, conventions: Conventions | None = None) -> FittedHead:
    """The head that scores open-set detection: ``conventions``' detection ratios when it
    sets them (adapter heads), else the head's own detection view (``det_ratio``), else
    ``head`` itself. Accuracy always uses ``head``."""
    if conventions is not None and (
        conventions.detection_ratio is not None or conventions.detection_ratio_text is not None
    ):
        head = conventions.apply_to_head(copy.deepcopy(head))
    view = getattr(head, "detection_view", None)
    return view() if callable(view) else head


def fit_detectors(
    head: FittedHead,
    scores: Sequence[str],
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    bank: FeatureSet | None = None,
    knn_k_sweep: Sequence[int] = (),
) -> dict[str, Detector]:
    """One fitted :class:`~croft.scores.Detector` per score name, in order.

    Scores that need fitting (KNN) are fitted on the head's outputs of ``bank`` (ID
    training or validation features; adapted embeddings for adapter heads); ``bank`` is
    required only when such a score is requested and is not used otherwise. With ``knn``
    among ``scores``, each ``k`` of ``knn_k_sweep`` adds a detector ``knn@k`` (values
    above the bank size are skipped with a logged warning).
    """
    params = {k: dict(v) for k, v in (score_params or {}).items() if k in scores}
    detectors = {n: SCORES.get(n).detector(**params.get(n, {})) for n in scores}
    if "knn" in detectors and knn_k_sweep:
        n_bank = len(bank) if bank is not None else 0
        base = {k: v for k, v in params.get("knn", {}).items() if k != "k"}
        for k in knn_k_sweep:
            if bank is not None and int(k) > n_bank:
                log.warning("knn@%d skipped: the bank holds %d rows", k, n_bank)
                continue
            detectors[f"knn@{int(k)}"] = SCORES.get("knn").detector(k=int(k), **base)
    stateful = [n for n, d in detectors.items() if d.needs_fit]
    if stateful:
        if bank is None:
            raise CroftError(
                f"the {stateful[0]} score needs a bank of ID features (pass --bank / bank=)"
            )
        bank_out = head_outputs(head, bank.eval_features())
        for name in stateful:
            detectors[name].fit(bank_out)
    return detectors


def convention_detectors(
    head: FittedHead,
    scores: Sequence[str],
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    bank: FeatureSet | None = None,
    conventions: Conventions | None = None,
) -> dict[str, Detector]:
    """:func:`fit_detectors` on ``head``'s detection view under ``conventions`` (its
    ``knn@k`` sweep included): the detectors :func:`evaluate` uses, to share between
    several evaluations of one head."""
    conv = conventions or Conventions()
    det = detection_head(head, conv)
    return fit_detectors(det, scores, score_params, bank, conv.knn_k_sweep)


def _metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float | None]:
    """:func:`detection_metrics`, or every metric ``None`` when there is no positive."""
    if id_scores.size == 0:
        keys = ("auroc", "aupr_in", "aupr_out", "fpr95_id_pos", "fpr95_ood_pos", "fpr95_paper")
        return dict.fromkeys(keys)
    return detection_metrics(id_scores, ood_scores)


def evaluate(
    head: FittedHead,
    id_set: FeatureSet,
    ood_sets: Mapping[str, FeatureSet],
    *,
    scores: Sequence[str] = DEFAULT_SCORES,
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    bank: FeatureSet | None = None,
    id_correct_only: bool = False,
    extra_sets: Mapping[str, FeatureSet] | None = None,
    detectors: Mapping[str, Detector] | None = None,
    conventions: Conventions | None = None,
) -> Evaluation:
    """Accuracy of ``head`` on ``id_set`` and detection of each OOD set.

    ``bank`` (ID training or validation features) is required for ``knn``; its
    embeddings come from the head (adapted features for adapter heads).
    ``conventions`` (:class:`~croft.conventions.Conventions`, default croft's) decides the
    detection side: which ID samples are positives per score (``correct``: only those
    the detection view classifies correctly, the authors' energy evaluator, X2), at most
    ``id_cap_per_class`` ID positives per class (drawn with seed 0), the detection view's
    ratios (:func:`detection_head`, D7) and the ``knn@k`` sweep. ``id_correct_only=True``
    is ``id_positives: correct``. Accuracy always uses ``head`` and every ID sample.
    ``extra_sets`` (e.g. source-domain validation data) are scored for plots only:
    ``per_sample["extra/<name>/<score>"]``. ``detectors`` (from
    :func:`convention_detectors`, fitted on the detection view, e.g. shared by several
    evaluations of one head) replace ``scores``/``score_params``/``bank``.
    """
    conv = conventions or Conventions()
    if id_correct_only:
        conv = resolve_conventions(conv, {"id_positives": "correct"})
    _check_inputs(head, id_set, scores if detectors is None else detectors)
    det_head = detection_head(head, conv)
    if detectors is None:
        detectors = convention_detectors(head, scores, score_params, bank, conv)
    names = list(detectors)

    id_scores, det_logits = _score_set(detectors, id_set, det_head)
    id_logits = det_logits
    if det_head is not head:
        id_logits = head_outputs(head, id_set.eval_features()).logits
    acc = accuracy(id_logits.cpu(), id_set.labels)
    kept, keep = _id_positives(id_set, det_logits, conv, names)
    result = Evaluation(accuracy=acc, n_id=len(id_set), conventions=conv.to_dict())
    for name in names:
        result.per_sample[f"id/{name}"] = id_scores[name]
    result.per_sample["id/labels"] = id_set.labels.numpy()
    result.per_sample["id/pred"] = id_logits.argmax(1).cpu().numpy()
    if det_head is not head:
        result.per_sample["id/pred_detection"] = det_logits.argmax(1).cpu().numpy()
    if conv.id_cap_per_class:
        result.per_sample["id/capped"] = kept
    for ood_name, ood in ood_sets.items():
        if ood.dim != id_set.dim:
            raise CroftError(
                f"{ood.source}: OOD features are {ood.dim}-d, ID features {id_set.dim}-d"
            )
        ood_scores, _ = _score_set(detectors, ood, det_head)
        result.detection[ood_name] = {
            n: _metrics(id_scores[n][keep[conv.positives(n)]], ood_scores[n]) for n in names
        }
        for n in names:
            result.per_sample[f"ood/{ood_name}/{n}"] = ood_scores[n]
    for extra_name, fs in (extra_sets or {}).items():
        extra_scores, _ = _score_set(detectors, fs, det_head)
        for n in names:
            result.per_sample[f"extra/{extra_name}/{n}"] = extra_scores[n]
    return result


def _check_inputs(head: FittedHead, id_set: FeatureSet, scores: Iterable[str]) -> None:
    """One-line errors before any work: unknown scores, an ID set with other classes or
    unknown labels."""
    for name in scores:
        if not name.startswith("knn@"):
            SCORES.get(name)
    if id_set.class_names != head.class_names:
        raise CroftError(
            f"{id_set.source}: its classes {id_set.class_names[:3]}… differ from the head's "
            f"{head.class_names[:3]}…; evaluate on data with the head's class list"
        )
    if bool((id_set.labels < 0).any()):
        raise CroftError(f"{id_set.source}: the ID set has unknown labels (-1); pass it as OOD")


def _score_set(
    detectors: Mapping[str, Detector], fs: FeatureSet, head: FittedHead
) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """Every detector's scores of ``fs`` (float64 arrays) and ``head``'s logits ``(N, C)``."""
    wants_local = any(
        "local_similarities" in getattr(getattr(d, "spec", None), "needs", ())
        for d in detectors.values()
    )
    if wants_local:
        fs.require_local()
    out = head_outputs(head, fs.eval_features(), local=fs.eval_local() if wants_local else None)
    vals = {n: d.score(out) for n, d in detectors.items()}
    return {n: v.detach().cpu().double().numpy() for n, v in vals.items()}, out.logits


def _id_positives(
    id_set: FeatureSet, det_logits: torch.Tensor, conv: Conventions, names: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The per-class cap's mask and the ID positives per convention: ``all`` (the capped
    samples) and ``correct`` (those the detection view also classifies correctly)."""
    kept = np.zeros(len(id_set), dtype=bool)
    kept[cap_per_class(id_set.labels, conv.id_cap_per_class).numpy()] = True
    correct = (det_logits.argmax(1).cpu() == id_set.labels).numpy()
    keep = {"all": kept, "correct": kept & correct}
    if any(conv.positives(n) == "correct" for n in names) and not keep["correct"].any():
        log.warning(
            "no ID sample is classified correctly: detection metrics with correct-only "
            "positives are recorded as null"
        )
    return kept, keep
