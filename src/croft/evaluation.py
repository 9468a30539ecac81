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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from croft.conventions import Conventions, cap_per_class
from croft.conventions import resolve as resolve_conventions
from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.fileio import atomic_write_with, cache_dir, canonical_hash
from croft.methods.base import FittedHead
from croft.methods.saving import energy_threshold
from croft.metrics import accuracy, detection_metrics
from croft.score_lists import ScoreSpec, score_specs
from croft.scores import SCORES, Detector, ScoreInputs

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SCORES",
    "Conventions",
    "Evaluation",
    "class_embeddings",
    "convention_detectors",
    "default_scores",
    "detection_head",
    "energy_threshold",
    "evaluate",
    "fit_detectors",
    "head_outputs",
    "resolve_conventions",
    "text_encoder",
]

#: The scores ``croft eval`` and :func:`evaluate` compute unless told otherwise.
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


def default_scores(fitted: bool = True) -> list[str]:
    """:data:`DEFAULT_SCORES`, without the fitted ones (they need ID training features)
    when ``fitted`` is false."""
    return [n for n in DEFAULT_SCORES if fitted or SCORES.get(n).fit is None]


def class_embeddings(head: FittedHead) -> torch.Tensor | None:
    """Unit-norm class embeddings ``(C, D)`` of the head's linear classifier
    (:meth:`~croft.methods.base.FittedHead.classifier`): CLIP heads' text features;
    ``None`` when the logits are not linear in the embedding (Tip-Adapter, CoCoOp)."""
    pair = head.classifier()
    return None if pair is None else torch.nn.functional.normalize(pair[0].detach(), dim=1)


_BACKBONES: dict[str, Any] = {}


def text_encoder(head: FittedHead) -> Callable[[list[str]], torch.Tensor] | None:
    """``encode(prompts) -> (n, D)`` raw text features from the head's backbone (its
    ``backbone_spec``, loaded once per process), cached on disk per backbone and prompt
    list (croft's cache folder), so a 70k-word list runs the text tower once; prompts
    that tokenize alike (a small vocabulary's unknown words) are encoded once. ``None``
    when the head records no backbone."""
    spec = head.meta.get("backbone_spec")
    if not isinstance(spec, str) or not spec:
        return None

    def encode(prompts: list[str]) -> torch.Tensor:
        from safetensors.torch import load_file, save_file

        key = canonical_hash({"backbone": head.meta.get("backbone") or spec, "text": prompts}, 24)
        path = cache_dir() / "text_features" / f"{key}.safetensors"
        if path.is_file():
            try:
                return load_file(str(path))["text"]
            except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
                log.warning("text-feature cache %s unreadable; recomputing", path)
        if spec not in _BACKBONES:
            from croft.backbones import load_backbone

            _BACKBONES[spec] = load_backbone(spec)
        bb = _BACKBONES[spec]
        tokens = bb.tokenize(list(prompts))  # prompts that tokenize alike are encoded once
        uniq, inverse = torch.unique(tokens, dim=0, return_inverse=True)
        feats = bb.encode_tokens(uniq)[inverse.to(bb.device)]
        feats = feats.float().cpu().contiguous()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_with(path, lambda p: save_file({"text": feats}, str(p)))
        return feats

    return encode


def fit_detectors(
    head: FittedHead,
    scores: Sequence[str | Mapping[str, Any] | ScoreSpec],
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    bank: FeatureSet | None = None,
    sweeps: Mapping[str, tuple[str, Sequence[Any]]] | None = None,
    saved: Mapping[str, Detector] | None = None,
) -> dict[str, Detector]:
    """One fitted :class:`~croft.scores.Detector` per score entry, keyed by its label.

    ``scores``: names or ``{name, params…, label}`` entries (:func:`croft.score_lists.score_specs`;
    ``score_params`` is the older ``{name: params}`` form). Every detector is fitted alike
    on ``bank`` (ID training or validation features): the head's outputs on it, its
    labels, the head's class embeddings (:func:`class_embeddings`), the head, and a text
    encoder for scores that ask for one; ``bank`` may be ``None`` when no requested score
    needs fitting. ``sweeps`` (``{score: (param, values)}``,
    :meth:`~croft.conventions.Conventions.sweeps`) adds a detector ``score@value`` per value
    beside a plain entry of that score; one that cannot be fitted (``k`` above the bank
    size) is skipped with a logged warning. ``saved`` (:func:`croft.detector_states.load_states`
    of the head's folder): an entry with a saved detector's label and score, and no other
    parameters, reuses its saved state (and parameters) instead of being fitted.
    """
    specs = score_specs(scores)
    names = {s.name for s in specs}  # parameters of scores not requested are ignored
    specs = score_specs(specs, {k: v for k, v in (score_params or {}).items() if k in names})
    extra: list[ScoreSpec] = []
    for spec in specs:
        if spec.name in (sweeps or {}) and spec.label == spec.name:
            param, values = (sweeps or {})[spec.name]
            extra += [
                ScoreSpec(spec.name, {**spec.params, param: v}, f"{spec.name}@{v}") for v in values
            ]
    detectors = {s.label: s.detector() for s in specs}
    for label, det in (saved or {}).items():  # a saved state: unless other parameters are asked
        want = detectors.get(label)
        if want is not None and det.name == want.name and want.params in ({}, det.params):
            detectors[label] = det
    variants = {s.label: s.detector() for s in extra if s.label not in detectors}
    stateful = [
        lb for lb, d in {**detectors, **variants}.items() if d.needs_fit and d.state is None
    ]
    if not stateful:
        return {**detectors, **variants}
    if bank is None:
        det = {**detectors, **variants}[stateful[0]]
        raise CroftError(
            f"the {det.label} score needs {det.spec.fit_on} to fit on: croft eval needs "
            "--bank FILE (Python: bank=)"
        )
    out = head_outputs(head, bank.eval_features())
    fit_args = (out, bank.labels, class_embeddings(head), head)
    encode = text_encoder(head)
    context = {} if encode is None else {"encode_text": encode}
    for label in stateful:
        if label in detectors:
            detectors[label].fit(*fit_args, **context)
            continue
        try:
            variants[label].fit(*fit_args, **context)
        except CroftError as exc:
            log.warning("%s skipped: %s", label, exc)
            del variants[label]
    return {**detectors, **variants}


def convention_detectors(
    head: FittedHead,
    scores: Sequence[str | Mapping[str, Any] | ScoreSpec],
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    bank: FeatureSet | None = None,
    conventions: Conventions | None = None,
    saved: Mapping[str, Detector] | None = None,
) -> dict[str, Detector]:
    """:func:`fit_detectors` on ``head``'s detection view under ``conventions`` (its
    sweeps included): the detectors :func:`evaluate` uses, to share between several
    evaluations of one head. ``saved``: states saved with the head, reused."""
    conv = conventions or Conventions()
    det = detection_head(head, conv)
    return fit_detectors(det, scores, score_params, bank, conv.sweeps(), saved)


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
    scores: Sequence[str | Mapping[str, Any] | ScoreSpec] = DEFAULT_SCORES,
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    bank: FeatureSet | None = None,
    id_correct_only: bool = False,
    extra_sets: Mapping[str, FeatureSet] | None = None,
    detectors: Mapping[str, Detector] | None = None,
    conventions: Conventions | None = None,
) -> Evaluation:
    """Accuracy of ``head`` on ``id_set`` and detection of each OOD set.

    ``bank`` (ID training or validation features) is required for fitted scores (knn,
    mahalanobis, vim, neglabel); its embeddings come from the head (adapted features for
    adapter heads).
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
    _check_inputs(head, id_set)
    det_head = detection_head(head, conv)
    if detectors is None:
        detectors = convention_detectors(head, scores, score_params, bank, conv)
    names = list(detectors)

    id_scores, det_logits = _score_set(detectors, id_set, det_head)
    id_logits = det_logits
    if det_head is not head:
        id_logits = head_outputs(head, id_set.eval_features()).logits
    acc = accuracy(id_logits.cpu(), id_set.labels)
    kept, keep = _id_positives(id_set, det_logits, conv, [d.name for d in detectors.values()])
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
            n: _metrics(id_scores[n][keep[conv.positives(detectors[n].name)]], ood_scores[n])
            for n in names
        }
        for n in names:
            result.per_sample[f"ood/{ood_name}/{n}"] = ood_scores[n]
    for extra_name, fs in (extra_sets or {}).items():
        extra_scores, _ = _score_set(detectors, fs, det_head)
        for n in names:
            result.per_sample[f"extra/{extra_name}/{n}"] = extra_scores[n]
    return result


def _check_inputs(head: FittedHead, id_set: FeatureSet) -> None:
    """One-line errors before any work: an ID set with other classes or unknown labels
    (score names and parameters are checked where the detectors are built)."""
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
