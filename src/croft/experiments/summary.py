"""Mean ± std over runs per method label (the demo's tables and its summary numbers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from croft.tables import mean_std, render


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
