"""Classification and OOD-detection metrics.

Every detection metric takes ``(id_scores, ood_scores)``: two 1-D array-likes (numpy
arrays, torch tensors or lists) of scores where **higher means more in-distribution**
(the convention of :mod:`croft.scores`). ID is the positive class unless the name says
otherwise (``aupr_out``, ``fpr_at_tpr_ood_positive``). Every function returns a python
``float``; rates are fractions in ``[0, 1]``, never percentages.

The two FPR@TPR conventions in the literature differ, so both are named:

* ``fpr95_id_pos`` (:func:`fpr_at_tpr`): ID positive; the share of OOD samples whose
  score is at or above the first threshold where 95 % of ID samples are kept
  (Hendrycks et al., MCM, CRoFT's KNN script).
* ``fpr95_ood_pos`` (:func:`fpr_at_tpr_ood_positive`): OOD positive on the negated
  score; the share of ID samples flagged as OOD at the first threshold where 95 % of
  OOD samples are flagged (OpenOOD, pytorch-ood).
* ``fpr95_paper`` (:func:`fpr95_paper`): the CRoFT evaluator's rule,
  ``θ = np.percentile(id, 5)`` and ``mean(ood > θ)`` (strict).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from croft.errors import CroftError

__all__ = [
    "accuracy",
    "aupr_in",
    "aupr_out",
    "auroc",
    "detection_metrics",
    "fpr95_paper",
    "fpr_at_tpr",
    "fpr_at_tpr_ood_positive",
]

# Absorbs float rounding when comparing a requested TPR (e.g. 1 - 0.05) with k / n.
_TPR_SLACK = 1e-12


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view of ``x``; torch tensors (any device, dtype, with grad) are copied to CPU."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()
        return x.numpy()
    return np.asarray(x)


def _scores(x: Any, name: str, where: str) -> np.ndarray:
    """Validate one score vector: 1-D, non-empty, finite real numbers; returns float64."""
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise CroftError(
            f"{where}: {name} has shape {tuple(arr.shape)}, expected a 1-D vector of "
            "per-sample scores; reduce it to one score per sample first"
        )
    if arr.size == 0:
        raise CroftError(f"{where}: {name} is empty; pass at least one score per set")
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise CroftError(
            f"{where}: {name} has dtype {arr.dtype}, expected real numbers; pass numeric scores"
        ) from None
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise CroftError(
            f"{where}: {name} holds {bad} NaN/inf value(s) of {arr.size}; "
            "fix or drop those samples before computing metrics"
        )
    return arr


def _pair(id_scores: Any, ood_scores: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    return _scores(id_scores, "id_scores", where), _scores(ood_scores, "ood_scores", where)


def _labelled(id_s: np.ndarray, ood_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated scores and labels with ID = 1, OOD = 0."""
    labels = np.concatenate([np.ones(id_s.size, dtype=np.int64), np.zeros(ood_s.size, np.int64)])
    return labels, np.concatenate([id_s, ood_s])


def _check_tpr(tpr: float, where: str) -> float:
    value = float(tpr)
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise CroftError(
            f"{where}: tpr={tpr!r} is outside (0, 1]; pass a fraction such as 0.95, not 95"
        )
    return value


def _fpr_at_first_tpr(labels: np.ndarray, scores: np.ndarray, tpr: float) -> float:
    """FPR at the first threshold (from high to low score) where the TPR reaches ``tpr``.

    ``roc_curve`` returns one point per distinct score, so tied scores form one threshold.
    Intermediate points are kept: dropping collinear points could skip the first one.
    """
    fprs, tprs, _ = roc_curve(labels, scores, drop_intermediate=False)
    first = int(np.flatnonzero(tprs >= tpr - _TPR_SLACK)[0])  # tprs[-1] == 1, so one exists
    return float(fprs[first])


def auroc(id_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC curve with ID as the positive class (``roc_auc_score``).

    1.0 when every ID score is above every OOD score; ties count one half.
    """
    labels, scores = _labelled(*_pair(id_scores, ood_scores, "auroc"))
    return float(roc_auc_score(labels, scores))


def aupr_in(id_scores: Any, ood_scores: Any) -> float:
    """Average precision with ID as the positive class (AUPR-In)."""
    labels, scores = _labelled(*_pair(id_scores, ood_scores, "aupr_in"))
    return float(average_precision_score(labels, scores))


def aupr_out(id_scores: Any, ood_scores: Any) -> float:
    """Average precision with OOD as the positive class, on the negated scores (AUPR-Out)."""
    labels, scores = _labelled(*_pair(id_scores, ood_scores, "aupr_out"))
    return float(average_precision_score(1 - labels, -scores))


def fpr_at_tpr(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> float:
    """FPR at ``tpr`` with ID positive (``fpr95_id_pos``).

    Scanning thresholds from high to low score, takes the first one at which at least a
    ``tpr`` share of ID samples score ``>=`` it, and returns the share of OOD samples
    scoring ``>=`` it. Tied scores are one threshold. (Hendrycks' ``fpr_and_fdr_at_recall``
    instead picks the threshold whose recall is *closest* to ``tpr``, which may lie below
    it; the two agree when some threshold keeps exactly ``tpr`` of the ID samples.)
    """
    where = "fpr_at_tpr"
    value = _check_tpr(tpr, where)
    labels, scores = _labelled(*_pair(id_scores, ood_scores, where))
    return _fpr_at_first_tpr(labels, scores, value)


def fpr_at_tpr_ood_positive(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> float:
    """FPR at ``tpr`` with OOD positive (``fpr95_ood_pos``, OpenOOD's convention).

    On the negated score, takes the first threshold at which at least a ``tpr`` share of
    OOD samples is flagged as OOD (score ``<=`` threshold) and returns the share of ID
    samples flagged there. Tied scores are one threshold.
    """
    where = "fpr_at_tpr_ood_positive"
    value = _check_tpr(tpr, where)
    labels, scores = _labelled(*_pair(id_scores, ood_scores, where))
    return _fpr_at_first_tpr(1 - labels, -scores, value)


def fpr95_paper(id_scores: Any, ood_scores: Any) -> float:
    """The CRoFT evaluator's FPR95: ``θ = np.percentile(id_scores, 5)`` (linear
    interpolation) and ``mean(ood_scores > θ)``, strictly above.

    The paper passes only correctly classified ID samples as ``id_scores``.
    """
    id_s, ood_s = _pair(id_scores, ood_scores, "fpr95_paper")
    theta = np.percentile(id_s, 5)
    return float(np.mean(ood_s > theta))


def accuracy(logits_or_pred: Any, labels: Any) -> float:
    """Top-1 accuracy as a fraction.

    ``logits_or_pred`` is either ``(N, C)`` scores (argmax over ``C``) or ``(N,)`` integer
    class predictions; ``labels`` is ``(N,)`` integer classes.
    """
    where = "accuracy"
    pred = _to_numpy(logits_or_pred)
    target = _to_numpy(labels)
    if target.ndim != 1:
        raise CroftError(
            f"{where}: labels has shape {tuple(target.shape)}, expected (N,) class indices"
        )
    if pred.ndim == 2:
        if pred.shape[1] == 0:
            raise CroftError(f"{where}: logits have shape {tuple(pred.shape)} with no classes")
        if np.issubdtype(pred.dtype, np.floating) and not np.isfinite(pred).all():
            raise CroftError(f"{where}: logits hold NaN/inf values; fix the model outputs first")
        pred = pred.argmax(axis=1)
    elif pred.ndim == 1:
        if not _is_integral(pred):
            raise CroftError(
                f"{where}: 1-D predictions must be integer class indices, got {pred.dtype} "
                "values that are not whole numbers; pass (N, C) logits or argmax them first"
            )
    else:
        raise CroftError(
            f"{where}: logits_or_pred has shape {tuple(pred.shape)}, expected (N, C) logits "
            "or (N,) predictions"
        )
    if pred.shape[0] != target.shape[0]:
        raise CroftError(
            f"{where}: {pred.shape[0]} predictions but {target.shape[0]} labels; "
            "pass one label per sample"
        )
    if target.size == 0:
        raise CroftError(f"{where}: no samples; pass at least one prediction and label")
    if not _is_integral(target):
        raise CroftError(f"{where}: labels must be integer class indices, got {target.dtype}")
    return float(np.mean(pred.astype(np.int64) == target.astype(np.int64)))


def _is_integral(arr: np.ndarray) -> bool:
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        return True
    if not np.issubdtype(arr.dtype, np.floating):
        return False
    return bool(np.isfinite(arr).all() and np.all(arr == np.round(arr)))


def detection_metrics(id_scores: Any, ood_scores: Any) -> dict[str, float]:
    """All detection metrics at once; keys name their convention.

    Returns ``auroc``, ``aupr_in``, ``aupr_out``, ``fpr95_id_pos`` (:func:`fpr_at_tpr`),
    ``fpr95_ood_pos`` (:func:`fpr_at_tpr_ood_positive`) and ``fpr95_paper``.
    """
    id_s, ood_s = _pair(id_scores, ood_scores, "detection_metrics")
    return {
        "auroc": auroc(id_s, ood_s),
        "aupr_in": aupr_in(id_s, ood_s),
        "aupr_out": aupr_out(id_s, ood_s),
        "fpr95_id_pos": fpr_at_tpr(id_s, ood_s, 0.95),
        "fpr95_ood_pos": fpr_at_tpr_ood_positive(id_s, ood_s, 0.95),
        "fpr95_paper": fpr95_paper(id_s, ood_s),
    }
