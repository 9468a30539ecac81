"""Saving and loading fitted heads: ``head.safetensors`` + ``head.json`` in a directory.

``head.json`` holds the method, head class, variant, config, class names, prompts,
feature dimension, logit scale, croft version and anything in ``head.meta``
(training history, OOD threshold). No pickles.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from croft.errors import CroftError
from croft.fileio import atomic_write_text, atomic_write_with
from croft.methods.base import HEADS, FittedHead

FORMAT = "croft.head/1"


def save_head(head: FittedHead, directory: str | os.PathLike[str], **extra: Any) -> Path:
    """Write ``head`` to ``directory`` (created); ``extra`` is merged into the JSON metadata."""
    from safetensors.torch import save_file

    from croft._version import __version__

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    meta: dict[str, Any] = {
        "format": FORMAT,
        "head": head.head_name,
        "spec": head.spec(),
        "class_names": head.class_names,
        "feature_dim": head.feature_dim,
        "logit_scale": head.logit_scale,
        "croft_version": __version__,
        **head.meta,
        **extra,
    }
    atomic_write_with(out / "head.safetensors", lambda p: save_file(tensors, str(p)))
    text = json.dumps(meta, indent=2, sort_keys=True, default=str)
    atomic_write_text(out / "head.json", text)
    return out


def read_head_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / "head.json"
    if not path.is_file():
        raise CroftError(f"{directory}: no head.json here; pass a directory written by 'croft fit'")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CroftError(f"{path}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CroftError(f"{path}: unknown head format {meta.get('format')!r} (expected {FORMAT})")
    return meta


def load_head(
    directory: str | os.PathLike[str],
    *,
    expect_dim: int | None = None,
    expect_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> FittedHead:
    """Load a head; refuse a feature dimension or class count that differs from the expected."""
    from safetensors.torch import load_file

    meta = read_head_meta(directory)
    dim, classes = int(meta["feature_dim"]), list(meta["class_names"])
    if expect_dim is not None and expect_dim != dim:
        raise CroftError(
            f"{directory}: head expects {dim}-d features but the features are {expect_dim}-d; "
            "use features from the backbone the head was fitted on"
        )
    if expect_classes is not None and expect_classes != len(classes):
        raise CroftError(
            f"{directory}: head has {len(classes)} classes but the data has {expect_classes}; "
            "evaluate on data with the same class list"
        )
    cls = HEADS.get(meta["head"])
    head = cls.from_spec(dict(meta.get("spec", {})), classes, dim, float(meta["logit_scale"]))
    weights = Path(directory) / "head.safetensors"
    if not weights.is_file():
        raise CroftError(f"{directory}: head.safetensors is missing")
    state = load_file(str(weights))
    try:
        head.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CroftError(f"{weights}: tensors do not fit a {meta['head']} head ({first})") from None
    head.meta = {
        k: v
        for k, v in meta.items()
        if k not in ("format", "head", "spec", "class_names", "feature_dim", "logit_scale")
    }
    return head.to(device)
