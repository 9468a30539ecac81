"""Evaluate a fitted head on both goals at once.

* closed-set OOD generalisation: accuracy on a covariate-shifted ID set (e.g. the
  held-out domain);
* open-set OOD detection: for each OOD set and each score (higher = more ID), the
  metrics of :func:`croft.metrics.detection_metrics` with the ID set as positives.

Per-sample scores are kept so that reports and plots can be redrawn without rerunning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.base import FittedHead
from croft.methods.saving import energy_threshold
from croft.metrics import accuracy, detection_metrics
from croft.scores import SCORES, Detector, ScoreInputs

__all__ = [
    "DEFAULT_SCORES",
    "Evaluation",
    "energy_threshold",
    "evaluate",
    "fit_detectors",
    "head_outputs",
]

DEFAULT_SCORES = ("energy", "mcm", "msp", "max_logit", "knn")


@dataclass
class Evaluation:
    """Accuracy on the ID (shifted) set and detection metrics per OOD set and score."""

    accuracy: float
    n_id: int
    detection: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "n_id": self.n_id, "detection": self.detection}


@torch.no_grad()
def head_outputs(head: FittedHead, x: torch.Tensor, batch_size: int = 8192) -> ScoreInputs:
    """Logits, similarities and embeddings of ``x`` ``(N, D)``, computed in batches."""
    x = head.check_features(x)
    parts: dict[str, list[torch.Tensor]] = {"logits": [], "similarities": [], "embeddings": []}
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        parts["logits"].append(head.logits(xb))
        parts["similarities"].append(head.similarities(xb))
        parts["embeddings"].append(head.embed(xb))
    return ScoreInputs(**{k: torch.cat(v) for k, v in parts.items()})


def fit_detectors(
    head: FittedHead,
    scores: Sequence[str],
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    bank: FeatureSet | None = None,
) -> dict[str, Detector]:
    """One fitted :class:`~croft.scores.Detector` per score name, in order.

    Scores that need fitting (KNN) are fitted on the head's outputs of ``bank`` (ID
    training or validation features; adapted embeddings for adapter heads); ``bank`` is
    required only when such a score is requested and is not used otherwise.
    """
    params = {k: dict(v) for k, v in (score_params or {}).items() if k in scores}
    detectors = {n: SCORES.get(n).detector(**params.get(n, {})) for n in scores}
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
) -> Evaluation:
    """Accuracy of ``head`` on ``id_set`` and detection of each OOD set.

    ``bank`` (ID training or validation features) is required for ``knn``; its
    embeddings come from the head (adapted features for adapter methods).
    ``id_correct_only`` keeps only correctly classified ID samples as positives (the
    authors' energy evaluator, CROFT_SPEC §5.2); the default keeps all ID samples.
    ``extra_sets`` (e.g. source-domain validation data) are scored for plots only:
    ``per_sample["extra/<name>/<score>"]``. ``detectors`` (from :func:`fit_detectors`, e.g.
    shared by several evaluations of one head) replace ``scores``/``score_params``/``bank``.
    """
    for name in scores if detectors is None else detectors:
        SCORES.get(name)  # unknown score: one clear error before any work
    if id_set.class_names != head.class_names:
        raise CroftError(
            f"{id_set.source}: its classes {id_set.class_names[:3]}… differ from the head's "
            f"{head.class_names[:3]}…; evaluate on data with the head's class list"
        )
    if bool((id_set.labels < 0).any()):
        raise CroftError(f"{id_set.source}: the ID set has unknown labels (-1); pass it as OOD")
    if detectors is None:
        detectors = fit_detectors(head, scores, score_params, bank)
    scores = list(detectors)

    def score_all(fs: FeatureSet) -> tuple[dict[str, np.ndarray], torch.Tensor]:
        out = head_outputs(head, fs.eval_features())
        vals = {n: d.score(out) for n, d in detectors.items()}
        return {n: v.detach().cpu().double().numpy() for n, v in vals.items()}, out.logits

    id_scores, id_logits = score_all(id_set)
    acc = accuracy(id_logits.cpu(), id_set.labels)
    keep = np.ones(len(id_set), dtype=bool)
    if id_correct_only:
        keep = (id_logits.argmax(1).cpu() == id_set.labels).numpy()
        if not keep.any():
            raise CroftError("no ID sample is classified correctly; cannot use id_correct_only")
    result = Evaluation(accuracy=acc, n_id=len(id_set))
    for name in scores:
        result.per_sample[f"id/{name}"] = id_scores[name]
    result.per_sample["id/labels"] = id_set.labels.numpy()
    result.per_sample["id/pred"] = id_logits.argmax(1).cpu().numpy()
    for ood_name, ood in ood_sets.items():
        if ood.dim != id_set.dim:
            raise CroftError(
                f"{ood.source}: OOD features are {ood.dim}-d, ID features {id_set.dim}-d"
            )
        ood_scores, _ = score_all(ood)
        result.detection[ood_name] = {
            n: detection_metrics(id_scores[n][keep], ood_scores[n]) for n in scores
        }
        for n in scores:
            result.per_sample[f"ood/{ood_name}/{n}"] = ood_scores[n]
    for extra_name, fs in (extra_sets or {}).items():
        extra_scores, _ = score_all(fs)
        for n in scores:
            result.per_sample[f"extra/{extra_name}/{n}"] = extra_scores[n]
    return result
