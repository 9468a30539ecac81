"""SHA-256 of weight files, cached so gigabytes are hashed once.

The cache is a small JSON file, ``$CROFT_CACHE_DIR/sha256.json`` (default
``~/.cache/croft/sha256.json``), keyed by absolute path and valid while the file's size,
modification time and status-change time (``ctime``: any write or ``utime`` call moves it,
so a file rewritten in place with its size and mtime restored is hashed again) are
unchanged. Files below 1 MiB (configs, vocabularies) are always hashed afresh: file-system
clocks tick coarsely (milliseconds), so a small file edited twice within one tick keeps
size, mtime and ctime, and hashing it costs less than reading the cache.
The cache is rewritten atomically (temporary file + ``os.replace``); an unreadable cache
is ignored and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from croft.fileio import atomic_write_json, cache_dir, parse_json

_CHUNK = 1 << 20
_SMALL = 1 << 20  # bytes: hashed every time, faster than reading the cache


def _cache_file() -> Path:
    return cache_dir() / "sha256.json"


def _hash_file(path: Path) -> str:
    """Hash the whole file (no cache)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache(file: Path) -> dict[str, dict]:
    try:
        data = parse_json(file.read_text(), str(file))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(file: Path, data: dict[str, dict]) -> None:
    # a read-only home must not stop a run; the hash is simply not cached
    with contextlib.suppress(OSError):
        atomic_write_json(file, data, indent=0)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of ``path``, from the cache when (path, size, mtime_ns, ctime_ns) are
    unchanged."""
    p = Path(path).resolve()
    st = p.stat()
    if st.st_size < _SMALL:
        return _hash_file(p)
    key = str(p)
    cache = _cache_file()
    entries = _read_cache(cache)
    hit = entries.get(key)
    if (
        isinstance(hit, dict)
        and hit.get("size") == st.st_size
        and hit.get("mtime_ns") == st.st_mtime_ns
        and hit.get("ctime_ns") == st.st_ctime_ns
        and isinstance(hit.get("sha256"), str)
    ):
        return hit["sha256"]
    digest = _hash_file(p)
    entries = _read_cache(cache)  # re-read: another process may have added entries meanwhile
    entries = {k: v for k, v in entries.items() if os.path.exists(k)}  # forget deleted files
    entries[key] = {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "sha256": digest,
    }
    _write_cache(cache, entries)
    return digest
