"""Feature extraction shared by the protocols (always through the keyed feature store)."""

from __future__ import annotations

from typing import Any

import torch

from croft.experiments.config import ExperimentBase
from croft.experiments.task import pick, pool
from croft.features.files import FeatureSet


def store_options(cfg: ExperimentBase, show: bool) -> dict[str, Any]:
    """Keyword arguments of every ``extract_features`` call of an experiment."""
    return {
        "cache_dir": cfg.cache or None,
        "batch_size": cfg.batch_size,
        "workers": cfg.workers,
        "progress": show,
        "local_features": bool(getattr(cfg, "local_features", False)),
    }


def extract_ood(
    cfg: ExperimentBase,
    backbone: Any,
    common: dict[str, Any],
    full: Any,
    text: torch.Tensor,
    held_out: str | None = None,
) -> dict[str, FeatureSet]:
    """One extraction per extra OOD dataset (``cfg.ood``), labels -1, ``full``'s classes.

    ``held_out=None``: the sets whose root is fixed; a domain name: the per-fold sets
    (root with ``{held_out}``) read for that held-out domain."""
    ood_sets: dict[str, FeatureSet] = {}
    for spec in cfg.ood:
        if spec.per_fold != (held_out is not None):
            continue
        one = spec if held_out is None else spec.for_held_out(held_out)
        ood_sets[spec.name] = _extract_one(cfg, one, backbone, common, full, text)
    return ood_sets


def _extract_one(
    cfg: ExperimentBase,
    spec: Any,
    backbone: Any,
    common: dict[str, Any],
    full: Any,
    text: torch.Tensor,
) -> FeatureSet:
    from croft.data import read_layout
    from croft.features import ViewSpec, extract_features

    ood_index = read_layout(spec.root, spec.layout, **spec.options)
    oview = ViewSpec.eval_view() if cfg.ood_transform == "eval" else ViewSpec.train_views(1, 0)
    ofs = extract_features(backbone, ood_index, view=oview, **common)
    if ofs.features.dim() == 3:
        ofs.features = ofs.features[:, 0]
        if ofs.local_features is not None:
            ofs.local_features = ofs.local_features[:, 0]
    return pick(
        pool(ofs, ood_index),
        ood_index.records,
        class_names=list(full.class_names),
        text=text,
        name=spec.name,
        ood=True,
    )
