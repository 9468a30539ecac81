"""The last step of extraction: read every shard back and assemble the feature set.

:func:`assemble` reads the shards of a finished store (:func:`croft.features.shards.
read_shards`, each checked), completes the manifest (``complete``, ``num_kept``, the shard
and skipped lists) and builds the :class:`~croft.features.files.FeatureSet` of the decodable
images with its provenance, written to ``out`` when asked (:func:`write_feature_file`).
Called by :func:`croft.features.store.extract_features`, which re-exports
:func:`write_feature_file`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from croft.errors import CroftError
from croft.features.extract import ViewSpec, extract_text_features
from croft.features.files import FeatureSet, save_features
from croft.features.manifest import MANIFEST, write_manifest
from croft.features.shards import kept_ranges as _kept_ranges
from croft.features.shards import read_shards

if TYPE_CHECKING:
    from croft.backbones import Backbone
    from croft.data import DatasetIndex

log = logging.getLogger("croft.features.store")  # the store's logger, as before the split

__all__ = ["Bounds", "assemble", "write_feature_file"]

Bounds = list[tuple[int, int]]


def write_feature_file(fs: FeatureSet, path: str | os.PathLike[str]) -> Path:
    """:func:`~croft.features.save_features` (kept as the store's name for it)."""
    return save_features(fs, path)


def assemble(
    backbone: Backbone,
    index: DatasetIndex,
    view: ViewSpec,
    directory: Path,
    khash: str,
    bounds: Bounds,
    base_doc: dict[str, Any],
    templates: list[str] | None,
    out: str | os.PathLike[str] | None,
    extra: dict[str, Any],
    *,
    local: bool = False,
) -> FeatureSet:
    """Read every shard, complete the manifest and build (and write to ``out``) the
    feature set of the decodable images."""
    features, ok, skipped, shard_docs, local_feats = read_shards(
        directory, khash, bounds, local=local
    )
    doc = dict(base_doc)
    doc.update(
        complete=True,
        num_kept=int(ok.sum()),
        num_skipped=len(skipped),
        shards=shard_docs,
        skipped=skipped,
    )
    manifest_path = directory / MANIFEST
    write_manifest(manifest_path, doc)
    if not bool(ok.any()):
        raise CroftError(
            f"none of the {len(ok)} images under {index.root} could be decoded (listed in "
            f"{manifest_path}); check the dataset folder"
        )
    text = extract_text_features(backbone, index.class_names, templates) if templates else None
    info: dict[str, Any] = {
        "backbone": backbone.fingerprint(),
        "backbone_spec": backbone.spec,
        "index_hash": index.hash(),
        "dataset": index.name,
        "view": view.to_dict(),
        "store_key": khash,
        "num_records": len(ok),
        "kept_ranges": _kept_ranges(ok),
        "skipped": [{"index": d["index"], "path": d["path"]} for d in skipped],
    }
    info.update(extra)
    fs = FeatureSet(
        features=features[ok],
        labels=torch.tensor(index.labels(), dtype=torch.int64)[ok],
        class_names=list(index.class_names),
        domains=torch.tensor(index.domain_ids(), dtype=torch.int64)[ok],
        domain_names=list(index.domain_names),
        text_features=text,
        templates=templates or [],
        logit_scale=backbone.logit_scale,
        extra=info,
        source=str(out) if out is not None else str(directory),
        local_features=None if local_feats is None else local_feats[ok],
    )
    if out is not None:
        write_feature_file(fs, out)
    if skipped:
        log.warning(
            "skipped %d undecodable image%s (listed in %s)",
            len(skipped),
            "s" if len(skipped) != 1 else "",
            manifest_path,
        )
    return fs
