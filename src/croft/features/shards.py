"""Shard files of the feature store: one safetensors file per block of records.

A shard holds ``features`` ``(n, D)`` or ``(n, V, D)`` float32 (zeros for undecodable
images) and ``ok`` uint8 ``(n,)``, plus, when the store keeps local features, ``local``
float16 ``(n, P, D)`` or ``(n, V, P, D)`` (zeros for undecodable images); its metadata
carries the store key hash, the shard number and record range, the skipped images (JSON)
and a ``checksum`` (:func:`~croft.features.files.tensor_digest`) verified whenever the
shard is read.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from croft.errors import CroftError
from croft.features.files import (
    FeatureSet,
    canonical_safetensors,
    tensor_digest,
    verify_digest,
)
from croft.fileio import atomic_write_bytes


def shard_name(s: int) -> str:
    return f"shard-{s:05d}.safetensors"


def write_shard(
    path: Path,
    features: torch.Tensor,
    ok: torch.Tensor,
    meta: dict[str, str],
    local: torch.Tensor | None = None,
) -> None:
    """One shard file, atomically (tests patch this to simulate a kill)."""
    from safetensors.torch import save

    tensors = {"features": features.contiguous(), "ok": ok.to(torch.uint8).contiguous()}
    if local is not None:
        tensors["local"] = local.to(torch.float16).contiguous()
    meta = {**meta, "checksum": tensor_digest(tensors)}
    atomic_write_bytes(path, canonical_safetensors(save(tensors, metadata=meta)))


def _shard_meta(path: Path) -> dict[str, str] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception:  # noqa: BLE001 - missing or unreadable: not finished
        return None


def shard_done(path: Path, khash: str, s: int, start: int, stop: int) -> dict[str, str] | None:
    meta = _shard_meta(path)
    if (
        meta is None
        or meta.get("key_hash") != khash
        or meta.get("shard") != str(s)
        or meta.get("start") != str(start)
        or meta.get("stop") != str(stop)
    ):
        return None
    return meta


def read_shard(
    path: Path, start: int, stop: int, meta: dict[str, str], *, local: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A shard's rows ``(features, ok, local or None)``, verified against its checksum; a
    corrupted shard (or one without the ``local`` tensor asked for) is removed (so the next
    run extracts it again) and reported in one line."""
    from safetensors.torch import load_file

    try:
        t = load_file(str(path))
        feats, ok = t["features"], t["ok"].bool()
        loc = t.get("local")
        if local and loc is None:
            raise ValueError("it holds no local features")
        if "checksum" not in meta:
            raise ValueError("it carries no checksum")
        verify_digest(t, meta, f"feature shard {path}")
    except Exception as exc:  # noqa: BLE001
        with contextlib.suppress(OSError):
            path.unlink()
        why = (
            str(exc).split(";")[0]
            if isinstance(exc, CroftError)
            else f"feature shard {path} is unreadable ({exc})"
        )
        raise CroftError(
            f"{why} -- removed it; run the same command again to extract it anew"
        ) from None
    rows = stop - start
    if feats.shape[0] != rows or ok.shape != (rows,) or (loc is not None and loc.shape[0] != rows):
        raise CroftError(f"feature shard {path} has the wrong number of rows; delete it and rerun")
    return feats, ok, (loc if local else None)


def read_shards(
    directory: Path, khash: str, bounds: list[tuple[int, int]], *, local: bool = False
) -> tuple[
    torch.Tensor, torch.Tensor, list[dict[str, Any]], list[dict[str, Any]], torch.Tensor | None
]:
    """Every shard's features and ``ok`` flags concatenated in record order, the skipped
    images, the manifest's ``shards`` entries and (``local``) the local features."""
    feats, oks, locs, shard_docs = [], [], [], []
    skipped: list[dict[str, Any]] = []
    for s, (a, b) in enumerate(bounds):
        path = directory / shard_name(s)
        meta = shard_done(path, khash, s, a, b)
        if meta is None:
            raise CroftError(
                f"feature shard {path} is missing after extraction (did a rank fail?); "
                "run the same command again to finish it"
            )
        f, ok, loc = read_shard(path, a, b, meta, local=local)
        feats.append(f)
        if loc is not None:
            locs.append(loc)
        oks.append(ok)
        bad = json.loads(meta.get("skipped", "[]"))
        skipped.extend(bad)
        shard_docs.append({"file": path.name, "start": a, "stop": b, "skipped": len(bad)})
    loc = torch.cat(locs) if local else None
    return torch.cat(feats), torch.cat(oks), skipped, shard_docs, loc


def kept_ranges(ok: torch.Tensor) -> list[list[int]]:
    ranges: list[list[int]] = []
    for i in ok.nonzero().flatten().tolist():
        if ranges and ranges[-1][1] == i:
            ranges[-1][1] = i + 1
        else:
            ranges.append([i, i + 1])
    return ranges


def kept_indices(fs: FeatureSet) -> torch.Tensor:
    """Record index (into the extracted dataset index) of each row of an extracted set."""
    ranges = fs.extra.get("kept_ranges")
    if ranges is None:
        return torch.arange(len(fs))
    return torch.cat([torch.arange(a, b) for a, b in ranges] or [torch.zeros(0, dtype=torch.long)])
