"""Groups of rows to diagnose: training domains, pooled training set, named sets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.croft.head import AdapterHead


@dataclass
class Group:
    """Rows of one domain or set: raw features ``(N, D)``, labels ``(N,)`` (``-1`` unknown)."""

    x: torch.Tensor
    y: torch.Tensor
    source: str

    @property
    def labelled(self) -> bool:
        return bool((self.y >= 0).all())


def subsample(x: torch.Tensor, y: torch.Tensor, max_rows: int, seed: int):  # noqa: ANN202
    if max_rows <= 0 or x.shape[0] <= max_rows:
        return x, y
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_rows]
    idx = idx.sort().values
    return x[idx], y[idx]


def make_groups(
    train: FeatureSet, sets: Mapping[str, FeatureSet], max_rows: int = 0, seed: int = 0
) -> tuple[dict[str, Group], list[str]]:
    """``(groups, hessian_names)``: training domains, pooled train, each set.

    ``hessian_names`` are the labelled groups whose Hessians are measured: the training
    domains (or ``train`` without domain labels) and every fully labelled set.
    """
    groups: dict[str, Group] = {}
    x, y = train.eval_features(), train.labels
    names: list[str] = []
    if train.domains is not None and len(torch.unique(train.domains)) > 1:
        for d in sorted(int(v) for v in torch.unique(train.domains)):
            name = train.domain_names[d] if d < len(train.domain_names) else f"domain{d}"
            m = train.domains == d
            groups[f"train:{name}"] = Group(*subsample(x[m], y[m], max_rows, seed), train.source)
            names.append(f"train:{name}")
        groups["train"] = Group(*subsample(x, y, max_rows, seed), train.source)
    else:
        groups["train"] = Group(*subsample(x, y, max_rows, seed), train.source)
        names.append("train")
    for name, fs in sets.items():
        if name == "train" or name.startswith("train:"):
            raise CroftError(f"set name {name!r} clashes with a training group; rename it")
        groups[name] = Group(*subsample(fs.eval_features(), fs.labels, max_rows, seed), fs.source)
        if groups[name].labelled:
            names.append(name)
    return groups, names


def check_inputs(head: AdapterHead, label: str, train: FeatureSet, sets: Mapping[str, FeatureSet]):  # noqa: ANN201
    """One-line errors for feature sets that do not fit ``head``."""
    for name, fs in {"train": train, **sets}.items():
        if fs.dim != head.feature_dim:
            raise CroftError(
                f"{name} ({fs.source}) has {fs.dim}-d features but head {label} expects "
                f"{head.feature_dim}-d; use features from the backbone the head was fitted on"
            )
        known = bool((fs.labels >= 0).all())
        if known and fs.class_names != head.class_names:
            raise CroftError(
                f"{name} ({fs.source}) is labelled with classes {fs.class_names[:4]}… that "
                f"differ from head {label}'s; diagnose on data with the head's class list"
            )
    train.require_labels()
