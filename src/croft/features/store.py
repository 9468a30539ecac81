"""The keyed feature store: resumable, torchrun-sharded extraction into a cache directory.

Key: what determines the features -- the backbone fingerprint (weights sha256, precision,
architecture, preprocessing), the dataset-index hash (paths, labels, classes, domains),
the images' identity (``files``: each file's size, mtime_ns and ctime_ns, or its sha256
with ``hash_contents=True``; see :meth:`~croft.data.DatasetIndex.file_identity`), the
view spec (``eval`` | ``train`` with ``V`` views and a base seed) and the shard size. A
replaced or repaired image changes the key, so nothing stale is served. Its sha256 is in
the directory name (``<cache>/<backbone>-<view tag>-<key hash[:16]>/``) and the full key
in the manifest; a different key is a different directory, and a manifest whose key
differs from the one asked for is an error, never reused. Every shard carries a checksum
verified when it is read (:mod:`croft.features.shards`); a corrupted shard is removed and
reported, and the next run extracts it again.

Directory content::

    manifest.json               (schema croft.feature-store/1, see below)
    shard-00000.safetensors     records [0, S): "features" (n, D) or (n, V, D) float32
    shard-00001.safetensors     (zeros for undecodable images), "ok" uint8 (n,); metadata
    ...                         key_hash, shard, start, stop, skipped (JSON list), checksum

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
import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from croft.errors import CroftError
from croft.features.extract import (
    ImageViews,
    ViewSpec,
    barrier,
    check_templates,
    dist_context,
    encode_batches,
    extract_text_features,
    plan_batches,
)
from croft.features.files import (
    FeatureSet,
    save_features,
)
from croft.features.shards import (
    kept_ranges as _kept_ranges,
)
from croft.features.shards import (
    read_shard as _read_shard,
)
from croft.features.shards import (
    shard_done as _shard_done,
)
from croft.features.shards import (
    shard_name as _shard_name,
)
from croft.features.shards import (
    write_shard as _write_shard,
)
from croft.fileio import atomic_write_bytes, cache_dir, canonical_json
from croft.progress import progress as progress_bar

if TYPE_CHECKING:
    from croft.backbones import Backbone
    from croft.data import DatasetIndex

log = logging.getLogger(__name__)

STORE_SCHEMA = "croft.feature-store/1"
MANIFEST = "manifest.json"
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


def default_cache_dir() -> Path:
    """``$CROFT_CACHE_DIR/features`` or ``~/.cache/croft/features``."""
    return cache_dir() / "features"


_canonical = canonical_json


def store_key(
    backbone: Backbone,
    index: DatasetIndex,
    view: ViewSpec,
    shard_size: int,
    *,
    hash_contents: bool = False,
) -> dict[str, Any]:
    """The full key of an extraction (JSON-ready). ``files`` is the images' identity
    (:meth:`~croft.data.DatasetIndex.file_identity`), so a replaced or repaired image gives
    another key and is extracted again."""
    return {
        "schema": STORE_SCHEMA,
        "backbone": backbone.fingerprint(),
        "preprocess": backbone.preprocess.to_dict(),
        "index_hash": index.hash(),
        "files": {
            "mode": "sha256" if hash_contents else "stat",
            "hash": index.file_identity(contents=hash_contents),
        },
        "num_records": len(index),
        "view": view.to_dict(),
        "shard_size": int(shard_size),
    }


def key_hash(key: dict[str, Any]) -> str:
    """Hex sha256 of the canonical JSON of ``key``."""
    return hashlib.sha256(_canonical(key).encode()).hexdigest()


def store_directory(
    cache_dir: str | os.PathLike[str], name: str, view: ViewSpec, khash: str
) -> Path:
    """``<cache>/<name>-<view tag>-<key hash[:16]>``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "backbone"
    return Path(cache_dir).expanduser() / f"{slug}-{view.tag}-{khash[:16]}"


# -- files ----------------------------------------------------------------------------------


def write_feature_file(fs: FeatureSet, path: str | os.PathLike[str]) -> Path:
    """:func:`~croft.features.save_features` (kept as the store's name for it)."""
    return save_features(fs, path)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode())


# -- extraction -----------------------------------------------------------------------------


def _check_manifest(path: Path, key: dict[str, Any], khash: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or doc.get("schema") != STORE_SCHEMA:
        raise CroftError(
            f"{path} is not a croft feature-store manifest; remove {path.parent} and run again"
        )
    if doc.get("key_hash") != khash or _canonical(doc.get("key")) != _canonical(key):
        raise CroftError(
            f"feature cache {path.parent} was written for another key (backbone, preprocessing, "
            f"dataset or views differ); remove that directory or pass another --cache"
        )
    return doc


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

    Returns the assembled :class:`FeatureSet` (undecodable images left out; ``extra`` holds
    the provenance) on rank 0, ``None`` on other torchrun ranks. Under torchrun the
    process group is created here if needed (see :func:`croft.features.extract.dist_context`).
    """
    view = view or ViewSpec()
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
    tpl = check_templates(templates) if templates is not None else None

    key = store_key(backbone, index, view, shard_size, hash_contents=hash_contents)
    khash = key_hash(key)
    directory = store_directory(cache_dir or default_cache_dir(), backbone.name, view, khash)
    manifest_path = directory / MANIFEST
    n = len(index)
    bounds = [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    with dist_context(backbone.device) as ctx:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CroftError(
                f"cannot create feature cache {directory}: {exc.strerror or exc}; pass a "
                "writable --cache directory (or set CROFT_CACHE_DIR)"
            ) from None
        _check_manifest(manifest_path, key, khash)
        base_doc = {
            "schema": STORE_SCHEMA,
            "key_hash": khash,
            "key": key,
            "complete": False,
            "num_records": n,
            "shard_size": shard_size,
            "num_shards": len(bounds),
            "dataset": {"name": index.name, "root": str(index.root)},
            "backbone_spec": backbone.spec,
            "batch_size": batch_size,
            "world_size": ctx.world_size,
            "croft_version": _version(),
        }
        if ctx.is_main:
            _write_json(manifest_path, base_doc)

        done = {
            s: meta
            for s, (a, b) in enumerate(bounds)
            if (meta := _shard_done(directory / _shard_name(s), khash, s, a, b)) is not None
        }
        if strict:
            for s in sorted(done):
                _raise_strict(json.loads(done[s].get("skipped", "[]")))
        mine = [s for s in range(len(bounds)) if s % ctx.world_size == ctx.rank]
        for s in mine:  # leftovers of killed writes of this rank's shards
            for stale in directory.glob(f".{_shard_name(s)}.*.tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()
        todo = [s for s in mine if s not in done]
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
            )
        except KeyboardInterrupt:
            finished = sum(1 for s in range(len(bounds)) if (directory / _shard_name(s)).is_file())
            raise ExtractionInterrupted(directory, finished, len(bounds)) from None
        barrier(backbone.device)
        if not ctx.is_main:
            return None
        return _assemble(
            backbone, index, view, directory, khash, bounds, base_doc, tpl, out, extra or {}
        )


def _version() -> str:
    from croft._version import __version__

    return str(__version__)


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
    skipped: list[dict[str, Any]] = []
    filled = 0
    batches = encode_batches(backbone, dataset, [b for _, b in plan], workers=workers)
    try:
        for (pos, _), (idx, f, ok, errors) in zip(plan, batches, strict=True):
            s, start, stop = shards[pos]
            feats.append(f if view.kind == "train" else f[:, 0])
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
                _write_shard(directory / _shard_name(s), torch.cat(feats), torch.cat(oks), meta)
                if strict:
                    _raise_strict(skipped)
                feats, oks, skipped, filled = [], [], [], 0
    finally:
        batches.close()
        bar.close()


def _assemble(
    backbone: Backbone,
    index: DatasetIndex,
    view: ViewSpec,
    directory: Path,
    khash: str,
    bounds: list[tuple[int, int]],
    base_doc: dict[str, Any],
    templates: list[str] | None,
    out: str | os.PathLike[str] | None,
    extra: dict[str, Any],
) -> FeatureSet:
    feats, oks, shard_docs = [], [], []
    skipped: list[dict[str, Any]] = []
    for s, (a, b) in enumerate(bounds):
        path = directory / _shard_name(s)
        meta = _shard_done(path, khash, s, a, b)
        if meta is None:
            raise CroftError(
                f"feature shard {path} is missing after extraction (did a rank fail?); "
                "run the same command again to finish it"
            )
        f, ok = _read_shard(path, a, b, meta)
        feats.append(f)
        oks.append(ok)
        bad = json.loads(meta.get("skipped", "[]"))
        skipped.extend(bad)
        shard_docs.append({"file": path.name, "start": a, "stop": b, "skipped": len(bad)})
    ok = torch.cat(oks)
    doc = dict(base_doc)
    doc.update(
        complete=True,
        num_kept=int(ok.sum()),
        num_skipped=len(skipped),
        shards=shard_docs,
        skipped=skipped,
    )
    manifest_path = directory / MANIFEST
    _write_json(manifest_path, doc)
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
        features=torch.cat(feats)[ok],
        labels=torch.tensor(index.labels(), dtype=torch.int64)[ok],
        class_names=list(index.class_names),
        domains=torch.tensor(index.domain_ids(), dtype=torch.int64)[ok],
        domain_names=list(index.domain_names),
        text_features=text,
        templates=templates or [],
        logit_scale=backbone.logit_scale,
        extra=info,
        source=str(out) if out is not None else str(directory),
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


def store_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a store directory's ``manifest.json``."""
    path = Path(directory) / MANIFEST
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise CroftError(f"cannot read feature-store manifest {path}: {exc}") from None
