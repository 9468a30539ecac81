"""Fit a method and record where the head came from, so a saved head is self-describing.

:func:`fit_method` (behind :func:`croft.methods.fit`) puts the provenance into
``head.meta``, so ``save_head(result.head, dir)`` from Python writes the same ``head.json``
as ``croft fit``; :func:`fit_and_save` does both and also writes ``config.json``. The
provenance (:func:`provenance`) is: ``method``, ``config``, ``history``,
``selected_epoch``, ``selection`` (see :func:`croft.methods.loop.selection_record`),
``prompts``, ``backbone_spec`` and ``backbone`` (fingerprint) when known, the training
feature file when given as a path, and, with validation features, ``ood_threshold``: the
energy score (:func:`croft.scores.energy`, higher = more ID) that keeps ``tpr`` of the
validation images, which :func:`croft.load` uses to flag OOD images.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from croft.features.files import FeatureSet, fill_template
from croft.fileio import atomic_write_text
from croft.methods.base import METHODS, FitResult, FittedHead, make_config
from croft.methods.io import check_head_dir, save_head
from croft.methods.training import config_dict
from croft.scores import energy

FeaturesLike = FeatureSet | str | os.PathLike[str]
log = logging.getLogger(__name__)


def energy_threshold(head: FittedHead, id_val: FeatureSet, tpr: float = 0.95) -> float:
    """Energy-score threshold keeping ``tpr`` of ``id_val`` (its ``1 - tpr`` quantile)."""
    with torch.no_grad():
        e = energy(head.logits(head.check_features(id_val.eval_features())))
    return float(np.percentile(e.cpu().double().numpy(), 100.0 * (1.0 - tpr)))


def backbone_info(train: FeatureSet, cfg: Any) -> dict[str, Any]:
    """``{"backbone_spec", "backbone"}``: the config's ``backbone`` spec when it sets one
    (prompt learners), else the feature file's (``extra``); the stored fingerprint is kept
    only when it belongs to that spec."""
    stored_spec = train.extra.get("backbone_spec")
    stored_fp = train.extra.get("backbone")
    spec = getattr(cfg, "backbone", None)
    if not isinstance(spec, str) or not spec or spec == stored_spec:
        return {"backbone_spec": stored_spec, "backbone": stored_fp}
    return {"backbone_spec": spec, "backbone": None}


def provenance(
    method: str,
    cfg: Any,
    result: FitResult,
    train: FeatureSet,
    val: FeatureSet | None,
    *,
    train_path: str | None = None,
    tpr: float = 0.95,
) -> dict[str, Any]:
    """The head.json record of a fit (see the module docstring); JSON-able."""
    rec: dict[str, Any] = {
        "config": config_dict(cfg),
        "method": method,
        "history": result.history,
        "selected_epoch": result.selected_epoch,
        "selection": result.selection,
        "prompts": [fill_template(t, c) for t in train.templates[:1] for c in train.class_names],
        **backbone_info(train, cfg),
    }
    if train_path is not None:
        rec["train_features"] = train_path
    if val is not None:
        value = energy_threshold(result.head, val, tpr)
        rec["ood_threshold"] = {"score": "energy", "tpr": tpr, "value": value}
    return rec


def _features(data: FeaturesLike | None) -> tuple[FeatureSet | None, str | None]:
    if data is None or isinstance(data, FeatureSet):
        return data, None
    from croft.features import load_features

    return load_features(data), str(Path(data).resolve())


def fit_method(
    method: str,
    train: FeaturesLike,
    val: FeaturesLike | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    tpr: float = 0.95,
    options: Mapping[str, Any] | None = None,
) -> FitResult:
    """Fit ``method`` with ``options`` over its config defaults; provenance in ``head.meta``.

    ``train``/``val`` are feature sets or feature files.
    """
    spec = METHODS.get(method)
    opts = dict(options or {})
    cfg = make_config(spec.config_cls, opts)
    train_fs, train_path = _features(train)
    val_fs, _ = _features(val)
    assert train_fs is not None
    result = spec.fit(train_fs, val_fs, cfg, device=device, progress=progress)
    prov = provenance(method, cfg, result, train_fs, val_fs, train_path=train_path, tpr=tpr)
    result.head.meta = {**result.head.meta, **prov}
    return result


#: ``croft fit``'s learning-rate rule: the scale-aware one (docs/conventions.md#lr-scaling),
#: the authors' ``lr`` as given at OpenAI CLIP's logit scale 100 and scaled to any other
#: backbone's; :func:`fit_method`, ``croft run`` and the ``official`` presets keep the
#: methods' own default ``none`` (the authors' rate as given).
DEFAULT_FIT_LR_SCALING = "logit_scale"


def _warn_untrained(method: str, result: FitResult, has_val: bool) -> None:
    """One warning line when the head saved has no OOD threshold or did not train."""
    if not has_val:
        epochs = " and the last epoch is kept" if result.history else ""
        log.warning(
            "%s: fitted without --val: the saved head has no OOD threshold (croft predict "
            "flags nothing)%s; give --val to set one%s",
            method,
            epochs,
            " and select the epoch" if result.history else "",
        )
    sel = result.selection or {}
    if sel.get("kept_init"):
        log.warning(
            "%s: the selected model is its initialisation (validation accuracy %.3f at epoch "
            "0 was not beaten); try --set select_epoch=best_after_warmup, a larger --set lr, "
            "or a larger validation file",
            method,
            float(sel.get("val_init") or float("nan")),
        )


def fit_and_save(
    method: str,
    train: FeaturesLike,
    out: str | os.PathLike[str],
    val: FeaturesLike | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    tpr: float = 0.95,
    options: Mapping[str, Any] | None = None,
    **more_options: Any,
) -> tuple[FitResult, Path]:
    """Fit and write the head directory ``out`` exactly as ``croft fit`` does.

    ``out`` gets ``head.safetensors``, ``head.json`` (with the provenance, including the
    OOD threshold when ``val`` is given) and ``config.json``; :func:`croft.load` reads it.
    Method options come as ``options`` (a mapping, e.g. parsed ``--set`` values) and/or as
    keywords; ``lr_scaling`` defaults to :data:`DEFAULT_FIT_LR_SCALING`. Warns (one line)
    when the head has no threshold or kept its initialisation. Returns the fit result and
    the directory.
    """
    check_head_dir(out)  # before training: never overwrite a user's non-empty folder
    opts = {**dict(options or {}), **more_options}
    fields = {f.name for f in dataclasses.fields(METHODS.get(method).config_cls)}
    if "lr_scaling" in fields and "lr_scaling" not in opts:
        opts["lr_scaling"] = DEFAULT_FIT_LR_SCALING
    result = fit_method(method, train, val, device=device, progress=progress, tpr=tpr, options=opts)
    path = save_head(result.head, out)
    text = json.dumps(result.head.meta["config"], indent=2, sort_keys=True)
    atomic_write_text(path / "config.json", text)
    _warn_untrained(method, result, val is not None)
    return result, path
