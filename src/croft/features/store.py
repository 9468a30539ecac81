"""The keyed feature store: resumable, torchrun-sharded extraction into a cache directory.

The key (backbone fingerprint, dataset-index hash, the images' identity, the view spec and
the shard size) and the directory it names are defined in :mod:`croft.features.manifest`.
A replaced or repaired image changes the key, so nothing stale is served; a different key
is a different directory, and a manifest whose key differs from the one asked for is an
error, never reused. Every shard carries a checksum verified when it is read
(:mod:`croft.features.shards`); a corrupted shard is removed and reported, and the next run
extracts it again.
This module opens the store and encodes the pending shards; reading them back into the
feature set at the end is :mod:`croft.features.assembly`.

Directory content::

    manifest.json               (schema croft.feature-store/1, see below)
    shard-00000.safetensors     records [0, S): "features" (n, D) or (n, V, D) float32
    shard-00001.safetensors     (zeros for undecodable images), "ok" uint8 (n,), with local
    ...                         features "local" (n, P, D) or (n, V, P, D) float16; metadata
                                key_hash, shard, start, stop, skipped (JSON list), checksum

Local features (``local_features=True``) are part of the key (``"local_features"``, only
when asked for, so older keys and their caches stay valid), so a store with them and one
without are different directories and neither is read for the other.

``manifest.json``: ``{"schema", "key_hash", "key", "complete", "num_records",
"num_kept", "num_skipped", "shard_size", "num_shards", "shards": [{"file", "start",
"stop", "skipped"}], "skipped": [{"index", "path", "error"}], "dataset": {"name",
"root"}, "backbone_spec", "batch_size", "world_size", "croft_version"}`` (``shards`` and
``skipped`` are filled once ``complete`` is true).

Resuming: shard ``s`` holds records ``[s*S, (s+1)*S)``; finished shards are kept, so a run
killed at any point and started again recomputes at most the shards in flight. Every file
is written to a temporary name and renamed (``os.replace``). Batches never straddle
shards and shard ``s`` belongs to rank ``s % world_size``, so the result is byte-identical
whatever the number of ranks or interruptions (same device, precision and batch size).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from croft._version import __version__
from croft.errors import CroftError
from croft.features.assembly import Bounds, write_feature_file
from croft.features.assembly import assemble as _assemble
from croft.features.extract import (
    DistContext,
    ImageViews,
    ViewSpec,
    barrier,
    check_templates,
    dist_context,
    encode_batches,
    plan_batches,
)
from croft.features.files import FeatureSet
from croft.features.manifest import (
    MANIFEST,
    STORE_SCHEMA,
    check_manifest,
    default_cache_dir,
    key_hash,
    store_directory,
    store_key,
    store_manifest,
    write_manifest,
)
from croft.features.shards import shard_done as _shard_done
from croft.features.shards import shard_name as _shard_name
from croft.features.shards import write_shard as _write_shard
from croft.fileio import parse_json
from croft.progress import progress as progress_bar

if TYPE_CHECKING:
    from croft.backbones import Backbone
    from croft.data import DatasetIndex

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SHARD_SIZE",
    "MANIFEST",
    "STORE_SCHEMA",
    "ExtractionInterrupted",
    "default_cache_dir",
    "extract_features",
    "key_hash",
    "local_feature_size",
    "store_directory",
    "store_key",
    "store_manifest",
    "write_feature_file",
]

DEFAULT_SHARD_SIZE = 1024
DEFAULT_BATCH_SIZE = 64


class ExtractionInterrupted(KeyboardInterrupt):
    """Ctrl-C during extraction; finished shards are kept in ``directory``."""

    def __init__(self, directory: Path, done: int, total: int) -> None:
        super().__init__(
            f"interrupted with {done} of {total} shards finished in {directory}; "
            "run the same command again to resume"
        )
        self.directory, self.done, self.total = directory, done, total


def local_feature_size(backbone: Backbone, num_images: int, view: ViewSpec | None = None) -> str:
    """One line stating the disk size of the local features of ``num_images`` images
    (fp16; e.g. ViT-B/16: 196 x 512, about 200 KB per image and view)."""
    from croft.backbones.local import local_size_text

    views = (view or ViewSpec()).views
    return local_size_text(num_images, views, backbone.local_tokens(), backbone.dim)


# -- extraction -----------------------------------------------------------------------------


def extract_features(
    backbone: Backbone,
    index: DatasetIndex,
    *,
    view: ViewSpec | None = None,
    templates: Sequence[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
    strict: bool = False,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    hash_contents: bool = False,
    local_features: bool = False,
) -> FeatureSet | None:
    """Encode every image of ``index`` with ``backbone`` through the keyed cache.

    Args:
        view: :class:`ViewSpec` (default: one eval view -> features ``(N, D)``; train
            views -> ``(N, V, D)``).
        templates: prompt templates; when given, ``text_features`` ``(C, T, D)``.
        cache_dir: store root (default :func:`default_cache_dir`).
        out: also write the assembled feature file there (rank 0).
        batch_size: image tensors per forward pass (``batch_size // V`` records).
        workers: DataLoader worker processes (decode + transform).
        shard_size: records per shard (part of the key).
        strict: an undecodable image raises :class:`CroftError` instead of being skipped.
        extra: merged into the result's ``extra``.
        hash_contents: key the cache on each image's sha256 instead of its ``stat``
            identity (see :meth:`~croft.data.DatasetIndex.file_identity`).
        local_features: also keep each view's local (patch) features ``(P, D)`` in fp16,
            from the same forward pass (``local_features`` of the result); their size is
            logged before extraction (:func:`local_feature_size`).

    Returns the assembled :class:`FeatureSet` (undecodable images left out; ``extra`` holds
    the provenance) on rank 0, ``None`` on other torchrun ranks. Under torchrun the
    process group is created here if needed (see :func:`croft.features.extract.dist_context`).
    """
    view = view or ViewSpec()
    _check_arguments(index, batch_size=batch_size, shard_size=shard_size, workers=workers)
    tpl = check_templates(templates) if templates is not None else None

    key = store_key(backbone, index, view, shard_size, hash_contents=hash_contents)
    name = backbone.name
    if local_features:
        key["local_features"] = {"tokens": backbone.local_tokens(), "dtype": "float16"}
        name += "-local"
        log.info("%s", local_feature_size(backbone, len(index), view))
    khash = key_hash(key)
    directory = store_directory(cache_dir or default_cache_dir(), name, view, khash)
    n = len(index)
    bounds = [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    with dist_context(backbone.device) as ctx:
        base_doc = _open_store(directory, key, khash, backbone, index, bounds, batch_size, ctx)
        mine = [s for s in range(len(bounds)) if s % ctx.world_size == ctx.rank]
        todo = _pending_shards(directory, khash, bounds, mine, strict=strict)
        try:
            _run_shards(
                backbone,
                index,
                view,
                directory,
                khash,
                [(s, *bounds[s]) for s in todo],
                batch_size=batch_size,
                workers=workers,
                strict=strict,
                progress=progress and ctx.is_main,
                cached=len(mine) - len(todo),
                local=local_features,
            )
        except KeyboardInterrupt:
            finished = sum(1 for s in range(len(bounds)) if (directory / _shard_name(s)).is_file())
            raise ExtractionInterrupted(directory, finished, len(bounds)) from None
        barrier(backbone.device)
        if not ctx.is_main:
            return None
        return _assemble(
            backbone,
            index,
            view,
            directory,
            khash,
            bounds,
            base_doc,
            tpl,
            out,
            extra or {},
            local=local_features,
        )


def _check_arguments(
    index: DatasetIndex, *, batch_size: Any, shard_size: Any, workers: Any
) -> None:
    """One-line errors for an empty index and bad batch/shard sizes or worker counts."""
    if len(index) == 0:
        raise CroftError(
            f"dataset index {index.name or str(index.root)!r} has no records to extract; "
            "check the split and domain filters"
        )
    for name, value, low in (("batch_size", batch_size, 1), ("shard_size", shard_size, 1)):
        if not isinstance(value, int) or value < low:
            raise CroftError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(workers, int) or workers < 0:
        raise CroftError(f"workers must be a non-negative integer, got {workers!r}")


def _open_store(
    directory: Path,
    key: dict[str, Any],
    khash: str,
    backbone: Backbone,
    index: DatasetIndex,
    bounds: Bounds,
    batch_size: int,
    ctx: DistContext,
) -> dict[str, Any]:
    """Create ``directory``, refuse a manifest written for another key and (rank 0) write
    the incomplete manifest, unless a complete one is there; returns that document."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CroftError(
            f"cannot create feature cache {directory}: {exc.strerror or exc}; pass a "
            "writable --cache directory (or set CROFT_CACHE_DIR)"
        ) from None
    manifest_path = directory / MANIFEST
    old = check_manifest(manifest_path, key, khash)
    base_doc = {
        "schema": STORE_SCHEMA,
        "key_hash": khash,
        "key": key,
        "complete": False,
        "num_records": len(index),
        "shard_size": key["shard_size"],
        "num_shards": len(bounds),
        "dataset": {"name": index.name, "root": str(index.root)},
        "backbone_spec": backbone.spec,
        "batch_size": batch_size,
        "world_size": ctx.world_size,
        "croft_version": str(__version__),
    }
    finished = isinstance(old, dict) and old.get("complete") is True
    if ctx.is_main and not finished:  # a complete manifest is never marked incomplete again
        write_manifest(manifest_path, base_doc)
    return base_doc


def _pending_shards(
    directory: Path, khash: str, bounds: Bounds, mine: list[int], *, strict: bool
) -> list[int]:
    """This rank's shards (``mine``) still to encode. Finished shards are checked (with
    ``strict``, one that skipped an image raises) and leftovers of killed writes of this
    rank's shards are removed."""
    done = {
        s: meta
        for s, (a, b) in enumerate(bounds)
        if (meta := _shard_done(directory / _shard_name(s), khash, s, a, b)) is not None
    }
    if strict:
        for s in sorted(done):
            _raise_strict(parse_json(done[s].get("skipped", "[]"), f"shard {s}: skipped"))
    for s in mine:
        for stale in directory.glob(f".{_shard_name(s)}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
    return [s for s in mine if s not in done]


def _raise_strict(skipped: list[dict[str, Any]]) -> None:
    if skipped:
        first = skipped[0]
        raise CroftError(
            f"{first['error']} [record {first['index']}, --strict]; or run without --strict "
            "to skip undecodable images"
        )


def _run_shards(
    backbone: Backbone,
    index: DatasetIndex,
    view: ViewSpec,
    directory: Path,
    khash: str,
    shards: list[tuple[int, int, int]],
    *,
    batch_size: int,
    workers: int,
    strict: bool,
    progress: bool,
    cached: int,
    local: bool = False,
) -> None:
    """Encode ``shards`` ``[(s, start, stop)]`` and write one file per shard."""
    if not shards:
        return
    per_batch = max(1, batch_size // view.views)
    plan = plan_batches([(a, b) for _, a, b in shards], per_batch)
    dataset = ImageViews(index.root, [r.path for r in index.records], backbone.preprocess, view)
    total = sum(b - a for _, a, b in shards)
    desc = f"extract {view.tag}" + (f" ({cached} shards cached)" if cached else "")
    bar = progress_bar(total, desc, "img", enabled=progress)
    feats: list[torch.Tensor] = []
    oks: list[torch.Tensor] = []
    locs: list[torch.Tensor] = []
    skipped: list[dict[str, Any]] = []
    filled = 0
    batches = encode_batches(backbone, dataset, [b for _, b in plan], workers=workers, local=local)
    try:
        for (pos, _), (idx, f, ok, errors, loc) in zip(plan, batches, strict=True):
            s, start, stop = shards[pos]
            feats.append(f if view.kind == "train" else f[:, 0])
            if loc is not None:
                locs.append(loc if view.kind == "train" else loc[:, 0])
            oks.append(ok)
            for i, good, err in zip(idx.tolist(), ok.tolist(), errors, strict=True):
                if not good:
                    skipped.append({"index": i, "path": index.records[i].path, "error": err})
            filled += len(idx)
            bar.update(len(idx))
            if filled == stop - start:
                meta = {
                    "croft_store": STORE_SCHEMA,
                    "key_hash": khash,
                    "shard": str(s),
                    "start": str(start),
                    "stop": str(stop),
                    "skipped": json.dumps(skipped, ensure_ascii=False),
                }
                args: tuple[Any, ...] = (torch.cat(feats), torch.cat(oks), meta)
                if local:
                    args += (torch.cat(locs),)
                _write_shard(directory / _shard_name(s), *args)
                if strict:
                    _raise_strict(skipped)
                feats, oks, locs, skipped, filled = [], [], [], [], 0
    finally:
        batches.close()
        bar.close()
