"""The feature store's key, directory and manifest.

Key: what determines the features -- the backbone fingerprint (weights sha256, precision,
architecture, preprocessing), the dataset-index hash (paths, labels, classes, domains),
the images' identity (``files``: each file's size, mtime_ns and ctime_ns, or its sha256
with ``hash_contents=True``; see :meth:`~croft.data.DatasetIndex.file_identity`), the
view spec (``eval`` | ``train`` with ``V`` views and a base seed) and the shard size. Its
sha256 is in the directory name (``<cache>/<backbone>-<view tag>-<key hash[:16]>/``) and
the full key in the manifest; a manifest whose key differs from the one asked for is an
error, never reused. The manifest's fields are listed in :mod:`croft.features.store`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from croft.errors import CroftError
from croft.fileio import atomic_write_bytes, cache_dir, canonical_hash, canonical_json, parse_json

if TYPE_CHECKING:
    from croft.backbones import Backbone
    from croft.data import DatasetIndex
    from croft.features.extract import ViewSpec

STORE_SCHEMA = "croft.feature-store/1"
MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    """``$CROFT_CACHE_DIR/features`` or ``~/.cache/croft/features``."""
    return cache_dir() / "features"


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
    return canonical_hash(key)


def store_directory(
    cache_dir: str | os.PathLike[str], name: str, view: ViewSpec, khash: str
) -> Path:
    """``<cache>/<name>-<view tag>-<key hash[:16]>``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "backbone"
    return Path(cache_dir).expanduser() / f"{slug}-{view.tag}-{khash[:16]}"


#: What a complete manifest says about the features; one that already says the same is not
#: rewritten (a read-only cache holding every shard stays usable).
RESULT_FIELDS = ("key_hash", "complete", "num_records", "num_kept", "shards", "skipped")


def write_manifest(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically, unless the manifest there is complete and states
    the same result (:data:`RESULT_FIELDS`): then nothing is written."""
    old = _read(path)
    if (
        isinstance(old, dict)
        and old.get("complete") is True
        and all(old.get(k) == doc.get(k) for k in RESULT_FIELDS)
    ):
        return
    atomic_write_bytes(path, (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode())


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_manifest(path: Path, key: dict[str, Any], khash: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = parse_json(path.read_text(encoding="utf-8"), str(path))
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or doc.get("schema") != STORE_SCHEMA:
        raise CroftError(
            f"{path} is not a croft feature-store manifest; remove {path.parent} and run again"
        )
    if doc.get("key_hash") != khash or canonical_json(doc.get("key")) != canonical_json(key):
        raise CroftError(
            f"feature cache {path.parent} was written for another key (backbone, preprocessing, "
            f"dataset or views differ); remove that directory or pass another --cache"
        )
    return doc


def store_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a store directory's ``manifest.json``."""
    path = Path(directory) / MANIFEST
    try:
        return dict(parse_json(path.read_text(encoding="utf-8"), str(path)))
    except CroftError:
        raise
    except (OSError, ValueError) as exc:
        raise CroftError(f"cannot read feature-store manifest {path}: {exc}") from None
