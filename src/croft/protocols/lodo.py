"""Leave-one-domain-out runs (Setup-II shaped): fit, evaluate, keep every result.

Setup-I (ImageNet class split) runs use the same machinery: a :class:`Task` may also
carry covariate-shifted test sets (``shifted``, accuracy only, recorded as
``shifted_accuracy``) and a separate ID set for detection (``detection_id``).

Each (method, held-out domain, seed) run gets a directory
``runs/<label>/<domain>_seed<seed>/`` holding ``config.json`` (the resolved method
config), ``scores.npz`` (per-sample scores), ``env.json`` (versions, commit, device) and,
written last, ``metrics.json``. A rerun skips runs whose ``metrics.json`` exists, so an
interrupted grid resumes where it stopped and loses at most the run in flight.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from croft.errors import CroftError
from croft.evaluation import evaluate, head_outputs
from croft.features.files import FeatureSet
from croft.methods import METHODS, make_config
from croft.methods.base import FittedHead
from croft.tables import mean_std, render


@dataclass
class Task:
    """The data of one held-out domain and seed."""

    test_domain: str
    seed: int
    train: FeatureSet
    val: FeatureSet | None
    test: FeatureSet
    ood_sets: dict[str, FeatureSet]
    bank: FeatureSet | None = None  # KNN bank; default: the training features (view 0)
    # Setup-I additions (empty / None: Setup-II behaviour)
    shifted: dict[str, FeatureSet] = field(default_factory=dict)  # accuracy only
    shifted_classes: dict[str, list[int]] = field(default_factory=dict)  # allowed predictions
    detection_id: FeatureSet | None = None  # ID positives for detection; default: ``test``
    meta: dict[str, Any] = field(default_factory=dict)  # merged into each record


@dataclass(frozen=True)
class MethodRun:
    """A table row: a label, a registered method and its options."""

    label: str
    method: str
    options: Mapping[str, Any] = field(default_factory=dict)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=float))
    os.replace(tmp, path)


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def run_dir(out_dir: str | os.PathLike[str], label: str, domain: str, seed: int) -> Path:
    return Path(out_dir) / "runs" / label / f"{domain}_seed{seed}"


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


def _shifted_eval(
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


def run_grid(
    tasks: Iterable[Task],
    methods: Sequence[MethodRun],
    out_dir: str | os.PathLike[str],
    *,
    scores: Sequence[str] = ("energy", "knn"),
    score_params: Mapping[str, Mapping[str, Any]] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Fit and evaluate every method on every task; returns all result records."""
    out = Path(out_dir)
    for m in methods:  # validate every method and option before any work
        make_config(METHODS.get(m.method).config_cls, dict(m.options))
    from dataclasses import asdict

    from croft.provenance import environment

    records = []
    for task in tasks:
        for m in methods:
            rdir = run_dir(out, m.label, task.test_domain, task.seed)
            done = rdir / "metrics.json"
            if done.is_file():
                rec = json.loads(done.read_text())
            else:
                spec = METHODS.get(m.method)
                options = {"seed": task.seed, **m.options}
                if "seed" not in spec.config_cls.__dataclass_fields__:
                    options.pop("seed")
                cfg = make_config(spec.config_cls, options)
                t0 = time.perf_counter()
                fitted = spec.fit(task.train, task.val, cfg, device=device)
                fit_s = time.perf_counter() - t0
                extra = {"source_val": task.val} if task.val is not None else {}
                val_acc = None
                if task.val is not None:
                    with torch.no_grad():
                        pred = fitted.head.predict(task.val.eval_features())
                    val_acc = float((pred.cpu() == task.val.labels).float().mean())
                common = {
                    "scores": scores,
                    "score_params": score_params,
                    "bank": task.bank if task.bank is not None else task.train,
                }
                if task.detection_id is None:
                    ev = evaluate(fitted.head, task.test, task.ood_sets, **common, extra_sets=extra)
                else:  # accuracy on the test set, detection against another ID set
                    ev = evaluate(fitted.head, task.test, {}, **common, extra_sets=extra)
                    det = evaluate(fitted.head, task.detection_id, task.ood_sets, **common)
                    ev.detection = det.detection
                    for key, value in det.per_sample.items():
                        if key.startswith("id/"):
                            key = "detection_id/" + key[3:]
                        ev.per_sample[key] = value
                rec = {
                    "label": m.label,
                    "method": m.method,
                    "options": dict(m.options),
                    "test_domain": task.test_domain,
                    "seed": task.seed,
                    "selected_epoch": fitted.selected_epoch,
                    "fit_seconds": fit_s,
                    "val_accuracy": val_acc,
                    "scores": list(scores),
                    "ood_sets": list(task.ood_sets),
                    **ev.to_dict(),
                }
                if task.detection_id is not None:
                    rec["n_detection_id"] = len(task.detection_id)
                if task.shifted:
                    acc, sizes, per = _shifted_eval(fitted.head, task.shifted, task.shifted_classes)
                    rec["shifted_accuracy"] = acc
                    rec["shifted_sets"] = list(task.shifted)  # table order (JSON sorts keys)
                    rec["shifted_n"] = sizes
                    ev.per_sample.update(per)
                rec.update(task.meta)
                rdir.mkdir(parents=True, exist_ok=True)
                _write_json(rdir / "config.json", {"method": m.method, "config": asdict(cfg)})
                _write_json(rdir / "env.json", environment())
                _write_npz(rdir / "scores.npz", ev.per_sample)
                _write_json(done, rec)
            records.append(rec)
            if on_result is not None:
                on_result(rec)
    return records


def summary_rows(
    records: Sequence[Mapping[str, Any]],
    ood_names: Sequence[str],
    scores: Sequence[str] = ("energy",),
    metrics: Sequence[str] = ("auroc", "fpr95_id_pos"),
) -> tuple[list[str], list[list[str]]]:
    """Methods × (accuracy, then metric per OOD set and score), mean ± std in %."""
    labels = list(dict.fromkeys(r["label"] for r in records))
    header = ["method", "acc"]
    for o in ood_names:
        for s in scores:
            header += [f"{o}/{s}/{_short(m)}" for m in metrics]
    rows = []
    for lab in labels:
        rs = [r for r in records if r["label"] == lab]
        row = [lab, mean_std([r["accuracy"] for r in rs])]
        for o in ood_names:
            for s in scores:
                for m in metrics:
                    row.append(mean_std([r["detection"][o][s][m] for r in rs]))
        rows.append(row)
    return header, rows


def _short(metric: str) -> str:
    return {"auroc": "AUROC", "fpr95_id_pos": "FPR95", "aupr_in": "AUPR"}.get(metric, metric)


def summary_table(records: Sequence[Mapping[str, Any]], ood_names: Sequence[str], **kw: Any) -> str:
    header, rows = summary_rows(records, ood_names, **kw)
    return render(header, rows)


def summary_numbers(
    records: Sequence[Mapping[str, Any]], ood_names: Sequence[str], scores: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Means per method label: accuracy and each (ood, score, metric)."""
    out: dict[str, dict[str, float]] = {}
    for lab in dict.fromkeys(r["label"] for r in records):
        rs = [r for r in records if r["label"] == lab]
        d = {"accuracy": float(np.mean([r["accuracy"] for r in rs])), "runs": float(len(rs))}
        for o in ood_names:
            for s in scores:
                for m in rs[0]["detection"][o][s]:
                    d[f"{o}/{s}/{m}"] = float(np.mean([r["detection"][o][s][m] for r in rs]))
        out[lab] = d
    return out
