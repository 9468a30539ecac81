"""Reporting the field's way: near/far averages, full-spectrum detection, a metrics frame.

* **Tags**: each OOD set may be tagged ``near`` or ``far`` (an ``ood`` entry's ``tag:`` in
  the YAML); :func:`tag_averages` averages a metric over the sets of each tag.
* **Full spectrum** (OpenOOD v1.5's FSOOD, ``positives: id+covariate``): every ID-class
  image evaluated counts as a positive against each OOD set, the covariate-shifted ones
  included (the held-out domain, Setup-I's shifted ImageNets, source validation), whatever
  the conventions' correct-only rule; :func:`pooled_detection` computes it from the
  per-sample scores the standard evaluation already has.
* :func:`metrics_frame`: a fitted head and feature sets in, a pandas DataFrame of metrics
  per (method, score, OOD set, positives) out (with ``near avg``/``far avg`` rows), the
  same numbers a run's report shows, without a run folder. pandas is optional
  (``pip install pandas``) and imported only here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from croft.conventions import Conventions
from croft.errors import CroftError
from croft.evaluation import DEFAULT_SCORES, _metrics, evaluate
from croft.features.files import FeatureSet
from croft.methods.base import FittedHead

TAGS = ("near", "far")
#: The label of the standard and the full-spectrum column sets.
POSITIVES = ("id", "id+covariate")
METRIC_KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95_id_pos", "fpr95_ood_pos", "fpr95_paper")


def check_tag(tag: str, where: str) -> str:
    """``""``, ``near`` or ``far``, else one CroftError line naming ``where``."""
    if tag not in ("", *TAGS):
        raise CroftError(f"{where}: tag {tag!r}: use near or far (or leave it out)")
    return tag


def pooled_detection(
    positives: Sequence[Mapping[str, np.ndarray]],
    ood_scores: Mapping[str, Mapping[str, np.ndarray]],
    names: Sequence[str],
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Detection metrics ``{ood set: {score: metrics}}`` with the rows of every positive
    set (each ``{score: (n,) array}``) pooled as ID against each OOD set's scores."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for ood, per_score in ood_scores.items():
        out[ood] = {
            n: _metrics(np.concatenate([p[n] for p in positives]), per_score[n]) for n in names
        }
    return out


def per_sample_sets(
    per_sample: Mapping[str, np.ndarray], prefix: str, names: Sequence[str]
) -> dict[str, dict[str, np.ndarray]]:
    """``{set: {score: array}}`` of the per-sample keys ``{prefix}/{set}/{score}``."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in per_sample.items():
        head, _, rest = key.partition("/")
        if head != prefix:
            continue
        name, _, score = rest.rpartition("/")
        if score in names and name:
            out.setdefault(name, {})[score] = value
    return out


def full_spectrum(
    per_sample: Mapping[str, np.ndarray],
    names: Sequence[str],
    id_prefix: str,
    covariate: Sequence[str],
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Full-spectrum metrics from an :class:`~croft.evaluation.Evaluation`'s per-sample
    scores: positives ``{id_prefix}/{score}`` (every ID row) plus ``extra/{c}/{score}`` of
    each covariate set ``c``; negatives ``ood/{set}/{score}``."""
    pos = [{n: per_sample[f"{id_prefix}/{n}"] for n in names}]
    pos += [{n: per_sample[f"extra/{c}/{n}"] for n in names} for c in covariate]
    return pooled_detection(pos, per_sample_sets(per_sample, "ood", names), names)


def tag_averages(
    detection: Mapping[str, Mapping[str, Mapping[str, Any]]],
    tags: Mapping[str, str],
    score: str,
    metric: str,
) -> dict[str, float | None]:
    """``{"near": mean, "far": mean}`` of ``metric`` over the OOD sets of each tag (``None``
    where no tagged set has a value)."""
    out: dict[str, float | None] = {}
    for tag in TAGS:
        vals = [
            v
            for o, per in detection.items()
            if tags.get(o) == tag and (v := per.get(score, {}).get(metric)) is not None
        ]
        out[tag] = float(np.mean(vals)) if vals else None
    return out


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise CroftError(
            "metrics_frame needs pandas: pip install pandas (or pip install 'croft-ood[frame]')"
        ) from None
    return pd


def metrics_frame(
    head: FittedHead,
    id_features: FeatureSet,
    ood_features: Mapping[str, FeatureSet],
    *,
    scores: Sequence[str] = DEFAULT_SCORES,
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    bank: FeatureSet | None = None,
    covariate: Mapping[str, FeatureSet] | None = None,
    tags: Mapping[str, str] | None = None,
    conventions: Conventions | None = None,
    method: str | None = None,
) -> Any:
    """Detection metrics of ``head`` as a pandas DataFrame, one row per (method, score,
    OOD set, positives).

    ``id_features`` are the positives (labels in the head's classes), ``ood_features``
    ``{name: features}`` the OOD sets, ``bank`` the ID features a fitted score needs (KNN).
    ``covariate`` (``{name: features}``, ID classes under covariate shift, e.g. the held-out
    domain beside source validation) adds the full-spectrum rows (``positives`` =
    ``id+covariate``). ``tags`` (``{ood set: near | far}``) fills the ``tag`` column and
    adds rows ``near avg`` / ``far avg``. Columns: ``method`` (``method`` or the head's
    ``meta["method"]``), ``score``, ``ood_set``, ``tag``, ``positives``, then the metrics of
    :func:`croft.metrics.detection_metrics` as fractions. Numbers are those
    :func:`croft.evaluation.evaluate` (hence ``croft run``'s report) gives.
    """
    pd = _pandas()
    tags = {k: check_tag(v, f"tags[{k!r}]") for k, v in (tags or {}).items()}
    covariate = dict(covariate or {})
    ev = evaluate(
        head,
        id_features,
        ood_features,
        scores=scores,
        score_params=score_params,
        bank=bank,
        conventions=conventions,
        extra_sets=covariate,
    )
    names = score_names(ev.per_sample, "id")
    label = method or str(head.meta.get("method", type(head).__name__))
    blocks = [("id", ev.detection)]
    if covariate:
        blocks.append(("id+covariate", full_spectrum(ev.per_sample, names, "id", list(covariate))))
    rows: list[dict[str, Any]] = []
    for positives, det in blocks:
        for score in names:
            for ood in det:
                metrics = det[ood][score]
                rows.append(_row(label, score, ood, tags.get(ood, ""), positives, metrics))
            for tag in TAGS:
                if any(tags.get(o) == tag for o in det):
                    avg = {m: tag_averages(det, tags, score, m)[tag] for m in METRIC_KEYS}
                    rows.append(_row(label, score, f"{tag} avg", tag, positives, avg))
    return pd.DataFrame(
        rows, columns=["method", "score", "ood_set", "tag", "positives", *METRIC_KEYS]
    )


#: per-sample keys under ``id/`` that are not scores
_NOT_SCORES = ("labels", "pred", "pred_detection", "capped")


def score_names(per_sample: Mapping[str, np.ndarray], prefix: str = "id") -> list[str]:
    """The score names of an evaluation's per-sample arrays ``{prefix}/{score}``."""
    lead = f"{prefix}/"
    return [
        k[len(lead) :]
        for k in per_sample
        if k.startswith(lead) and "/" not in k[len(lead) :] and k[len(lead) :] not in _NOT_SCORES
    ]


def _row(
    method: str, score: str, ood: str, tag: str, positives: str, metrics: Mapping[str, Any]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "method": method,
        "score": score,
        "ood_set": ood,
        "tag": tag,
        "positives": positives,
    }
    row.update({m: metrics.get(m) for m in METRIC_KEYS})
    return row
