"""Choosing one grid point on validation data: accuracy, then loss, then the simpler model.

With 16 validation images per class (112 on PACS) validation accuracy ties often, and a
tie decided by label order picks whichever point sorts first. croft's rule
(:func:`select_grid_point`), used for every grid (never for epochs, see
:mod:`croft.methods.loop`):

1. the highest validation accuracy (``val_accuracy``);
2. among those, the lowest validation negative log-likelihood (``val_nll``, the mean
   cross-entropy of the head's logits on the validation set, :func:`validation_nll`);
   a candidate without ``val_nll`` ranks after every candidate with one;
3. among those, the simpler model: the smaller loss weights, compared key by key over
   the grid's ``lambda*`` options in sorted key order (``lambda1`` before ``lambda2``),
   so ``λ = 0`` (the term switched off) wins a full tie;
4. finally the label, so the result never depends on the order records are read in.

Accuracies within ``acc_tol`` (0: exact) and NLLs within ``nll_tol`` count as equal.
The functions read plain records (``metrics.json`` dicts), so the experiments runner and
the report share them; :func:`select_records` applies the rule to every (method, held-out
domain, seed) of a report, :func:`row_labels` names the report row of every run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from croft.errors import CroftError

__all__ = [
    "row_labels",
    "select_grid_point",
    "select_records",
    "selection_key",
    "simplicity",
    "validation_fit",
    "validation_nll",
]


@torch.no_grad()
def validation_fit(head: Any, val: Any, batch_size: int = 8192) -> tuple[float, float]:
    """``(accuracy, NLL)`` of ``head`` on ``val`` (a FeatureSet; view 0) from one pass of
    logits: top-1 accuracy (``head.predict``'s argmax) and the mean cross-entropy in nats."""
    x = head.check_features(val.eval_features())
    y = val.labels.to(x.device)
    total, hits = 0.0, []
    for start in range(0, x.shape[0], batch_size):
        logits = head.logits(x[start : start + batch_size])
        yb = y[start : start + batch_size]
        hits.append(logits.argmax(dim=1) == yb)
        total += float(F.cross_entropy(logits.double(), yb, reduction="sum"))
    acc = float(torch.cat(hits).float().mean())  # float32 mean, as every croft accuracy
    return acc, total / max(int(x.shape[0]), 1)


def validation_nll(head: Any, val: Any, batch_size: int = 8192) -> float:
    """Mean cross-entropy of ``head.logits`` on ``val`` (a FeatureSet; view 0), in nats."""
    return validation_fit(head, val, batch_size)[1]


def simplicity(options: Mapping[str, Any]) -> tuple[float, ...]:
    """The ``lambda*`` option values in sorted key order (smaller = simpler model)."""
    out = []
    for key in sorted(options):
        value = options[key]
        if key.startswith("lambda") and isinstance(value, (int, float)):
            out.append(float(value))
    return tuple(out)


def selection_key(
    rec: Mapping[str, Any],
    *,
    acc_key: str = "val_accuracy",
    nll_key: str = "val_nll",
) -> tuple[Any, ...]:
    """A sort key, smallest = preferred: ``(−acc, nll, λ…, label)`` (ties not rounded)."""
    acc = rec.get(acc_key)
    if acc is None:
        raise CroftError(f"{rec.get('label', '?')}: no {acc_key}; cannot select among grid points")
    nll = rec.get(nll_key)
    nll = math.inf if nll is None or not math.isfinite(float(nll)) else float(nll)
    return (-float(acc), nll, simplicity(rec.get("options") or {}), str(rec.get("label", "")))


def select_grid_point(
    candidates: Sequence[Mapping[str, Any]],
    *,
    acc_key: str = "val_accuracy",
    nll_key: str = "val_nll",
    acc_tol: float = 0.0,
    nll_tol: float = 0.0,
) -> Mapping[str, Any]:
    """The candidate the rule in the module docstring keeps (one record of ``candidates``).

    Each candidate is a record with ``acc_key``, optionally ``nll_key``, ``options`` (the
    grid point's method options) and ``label``.
    """
    if not candidates:
        raise CroftError("select_grid_point: no candidates")
    keys = [selection_key(c, acc_key=acc_key, nll_key=nll_key) for c in candidates]
    best_acc = min(k[0] for k in keys)
    pool = [i for i, k in enumerate(keys) if k[0] <= best_acc + acc_tol]
    best_nll = min(keys[i][1] for i in pool)
    if math.isfinite(best_nll):
        pool = [i for i in pool if keys[i][1] <= best_nll + nll_tol]
    else:
        pool = [i for i in pool if not math.isfinite(keys[i][1])]
    return candidates[min(pool, key=lambda i: (keys[i][2], keys[i][3]))]


def select_records(
    records: Sequence[Mapping[str, Any]], rule: str = "val_acc"
) -> list[dict[str, Any]]:
    """One grid point per (method, held-out domain, seed).

    Grid points are labelled ``method[key=value,...]``. ``val_acc`` (default) keeps the
    point with the best source-validation accuracy, ties broken by the lower validation
    NLL (``val_nll``), then the smaller ``lambda*`` values, then the label
    (:func:`croft.selection.select_grid_point`);
    ``oracle`` keeps the best held-out TEST accuracy and labels the row ``method (oracle)``,
    so that test-set selection can never pass unnoticed. A kept point records
    ``selected_from`` (its grid label) and ``selection_rule``.
    """
    if rule not in ("val_acc", "oracle"):
        raise CroftError(f"selection rule {rule!r}: use val_acc or oracle")
    groups: dict[tuple[str, str, int, Any], list[Mapping[str, Any]]] = {}
    for r in records:
        group = r["label"].split("[", 1)[0]
        key = (group, r["test_domain"], r["seed"], r.get("world_seed"))  # per world too
        groups.setdefault(key, []).append(r)
    out = []
    for (group, *_), members in groups.items():
        gridded = any("[" in m["label"] for m in members)
        if not gridded:
            out.extend(dict(m) for m in members)
            continue
        key = "accuracy" if rule == "oracle" else "val_accuracy"
        if any(m.get(key) is None for m in members):
            raise CroftError(f"{group}: runs without {key}; cannot select among grid points")
        if rule == "oracle":
            best = max(sorted(members, key=lambda m: m["label"]), key=lambda m: m[key])
        else:
            best = select_grid_point(members)
        chosen = dict(best)
        chosen["selected_from"] = best["label"]
        chosen["selection_rule"] = rule
        chosen["label"] = f"{group} (oracle)" if rule == "oracle" else group
        out.append(chosen)
    return out


def row_labels(
    all_runs: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """``{run_dir: row label}`` of every run: the label of the record
    :func:`select_records` kept for its (method, held-out domain, seed), i.e. the report
    table row it is pooled in, or, for a grid point not kept, the row it competed for."""
    chosen = {
        (str(r.get("selected_from", r["label"])).split("[", 1)[0], r["test_domain"], r["seed"]): r[
            "label"
        ]
        for r in records
    }
    return {
        str(r.get("run_dir", "")): chosen.get(
            (r["label"].split("[", 1)[0], r["test_domain"], r["seed"]), r["label"].split("[", 1)[0]
        )
        for r in all_runs
    }
