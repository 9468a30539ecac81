"""Evaluating one fitted head on one task: accuracy, detection, source-validation
accuracy and (Setup-I) covariate-shifted accuracy, as record fields + per-sample arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from croft.conventions import Conventions
from croft.errors import CroftError
from croft.evaluation import convention_detectors, evaluate, head_outputs
from croft.evaluation_frame import full_spectrum, score_names
from croft.experiments.task import Task
from croft.features.files import FeatureSet
from croft.methods.base import FittedHead
from croft.scores import Detector
from croft.selection import validation_fit


def restricted_predictions(
    logits: torch.Tensor, allowed: Sequence[int] | torch.Tensor | None = None
) -> torch.Tensor:
    """Argmax over the ``allowed`` class indices only (all classes when ``None``).

    The CoOp/CLIP protocol for ImageNet-A/-R: classes without images in the dataset can
    never be predicted (their logits are set to ``-inf``).
    """
    if allowed is None:
        return logits.argmax(dim=1)
    keep = torch.as_tensor(allowed, dtype=torch.long, device=logits.device)
    if keep.numel() == 0:
        raise CroftError("restricted_predictions: no allowed class")
    masked = torch.full_like(logits, float("-inf"))
    masked[:, keep] = logits[:, keep]
    return masked.argmax(dim=1)


def shifted_eval(
    head: FittedHead, sets: Mapping[str, FeatureSet], classes: Mapping[str, Sequence[int]]
) -> tuple[dict[str, float], dict[str, int], dict[str, np.ndarray]]:
    """Accuracy on each covariate-shifted set, plus per-sample predictions and energies."""
    acc: dict[str, float] = {}
    sizes: dict[str, int] = {}
    per: dict[str, np.ndarray] = {}
    for name, fs in sets.items():
        logits = head_outputs(head, fs.eval_features()).logits.cpu()
        pred = restricted_predictions(logits, classes.get(name))
        acc[name] = float((pred == fs.labels).float().mean())
        sizes[name] = len(fs)
        per[f"shifted/{name}/pred"] = pred.numpy()
        per[f"shifted/{name}/labels"] = fs.labels.numpy()
        per[f"shifted/{name}/energy"] = torch.logsumexp(logits.double(), dim=1).numpy()
    return acc, sizes, per


def validation_accuracy(head: FittedHead, val: FeatureSet | None) -> float | None:
    """Top-1 accuracy of ``head.predict`` on source validation (None without it)."""
    if val is None:
        return None
    with torch.no_grad():
        pred = head.predict(val.eval_features())
    return float((pred.cpu() == val.labels).float().mean())


def task_detectors(
    head: FittedHead,
    task: Task,
    scores: Sequence[Any],
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    conventions: Conventions | None = None,
) -> dict[str, Detector]:
    """The task's detectors (:func:`croft.evaluation.convention_detectors`), fitted on the
    task's ID bank (``task.bank``, else its training features)."""
    bank = task.bank if task.bank is not None else task.train
    return convention_detectors(head, scores, score_params, bank, conventions or Conventions())


def evaluate_task(
    head: FittedHead,
    task: Task,
    scores: Sequence[Any],
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    conventions: Conventions | None = None,
    detectors: Mapping[str, Detector] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Record fields (accuracy, n_id, detection, val_accuracy, val_nll, conventions, …) and
    per-sample arrays. ``conventions`` (default croft's) decide the detection side
    (:func:`croft.evaluation.evaluate`); fitted scores are fitted on the task's bank
    (:func:`task_detectors`) unless ``detectors`` are given.

    Full spectrum (``detection_full_spectrum``, positives ``id+covariate``, OpenOOD v1.5):
    every ID-class image evaluated is a positive against each OOD set, i.e. the standard
    positives plus source validation and every covariate-shifted set (``shifted:<name>``),
    recorded when there is at least one such set
    (:func:`croft.evaluation_frame.full_spectrum`)."""
    conv = conventions or Conventions()
    extra = {"source_val": task.val} if task.val is not None else {}
    covariate = {f"shifted:{k}": v for k, v in task.shifted.items()}
    if detectors is None:
        detectors = task_detectors(head, task, scores, score_params, conv)
    common = {"scores": scores, "detectors": detectors, "conventions": conv}
    with_fs = bool(task.ood_sets) and bool(extra or covariate)
    fs_extra = {**extra, **covariate} if with_fs else extra
    if task.detection_id is None:
        ev = evaluate(head, task.test, task.ood_sets, **common, extra_sets=fs_extra)
    else:  # accuracy on the test set, detection against another ID set
        ev = evaluate(head, task.test, {}, **common, extra_sets=fs_extra)
        det = evaluate(head, task.detection_id, task.ood_sets, **common)
        ev.detection = det.detection
        for key, value in det.per_sample.items():
            if key.startswith("id/"):
                key = "detection_id/" + key[3:]
            ev.per_sample[key] = value
    val_acc, val_nll = (None, None) if task.val is None else validation_fit(head, task.val)
    fields: dict[str, Any] = {"val_accuracy": val_acc, "val_nll": val_nll}
    fields.update(ev.to_dict())
    if with_fs:
        prefix = "id" if task.detection_id is None else "detection_id"
        names = score_names(ev.per_sample, prefix)
        fields["detection_full_spectrum"] = full_spectrum(
            ev.per_sample, names, prefix, list(fs_extra)
        )
        fields["full_spectrum_positives"] = [prefix, *fs_extra]
    if task.detection_id is not None:
        fields["n_detection_id"] = len(task.detection_id)
    if task.shifted:
        acc, sizes, per = shifted_eval(head, task.shifted, task.shifted_classes)
        fields["shifted_accuracy"] = acc
        fields["shifted_sets"] = list(task.shifted)  # table order (JSON sorts keys)
        fields["shifted_n"] = sizes
        ev.per_sample.update(per)
    return fields, ev.per_sample
