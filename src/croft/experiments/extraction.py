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
    }


def extract_ood(
    cfg: ExperimentBase, backbone: Any, common: dict[str, Any], full: Any, text: torch.Tensor
) -> dict[str, FeatureSet]:
    """One extraction per extra OOD dataset (``cfg.ood``), labels -1, ``full``'s classes."""
    from croft.data import read_layout
    from croft.features import ViewSpec, extract_features

    ood_sets: dict[str, FeatureSet] = {}
    for spec in cfg.ood:
        ood_index = read_layout(spec.root, spec.layout, **spec.options)
        oview = ViewSpec.eval_view() if cfg.ood_transform == "eval" else ViewSpec.train_views(1, 0)
        ofs = extract_features(backbone, ood_index, view=oview, **common)
        if ofs.features.dim() == 3:
            ofs.features = ofs.features[:, 0]
        ood_sets[spec.name] = pick(
            pool(ofs, ood_index),
            ood_index.records,
            class_names=list(full.class_names),
            text=text,
            name=spec.name,
            ood=True,
        )
    return ood_sets
