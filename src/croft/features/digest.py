"""Integrity of safetensors files: a tensor checksum and canonical (byte-stable) headers.

:func:`tensor_digest` is the ``checksum`` a feature file or shard carries;
:func:`verify_digest` refuses tensors that do not match it; :func:`canonical_safetensors`
sorts the header so equal content gives equal bytes. Re-exported by
:mod:`croft.features.files`.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import torch

from croft.errors import CroftError

__all__ = ["canonical_safetensors", "tensor_digest", "verify_digest"]


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """``sha256:<hex>`` over each tensor's name, dtype, shape and bytes (names sorted)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return "sha256:" + h.hexdigest()


def verify_digest(tensors: dict[str, torch.Tensor], meta: dict[str, str], where: Any) -> None:
    """Raise CroftError when ``meta`` carries a ``checksum`` the tensors do not match."""
    expected = meta.get("checksum")
    if expected is not None and tensor_digest(tensors) != expected:
        raise CroftError(
            f"{where} is corrupted (its checksum does not match its contents); delete it and "
            "extract it again"
        )


def canonical_safetensors(raw: bytes) -> bytes:
    """The same safetensors bytes with a deterministic header (sorted metadata and tensor
    entries): safetensors writes its metadata map in an arbitrary order per process, so two
    writes of equal content could differ in bytes; after this they are equal."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out: dict[str, Any] = {}
    meta = header.pop("__metadata__", None)
    if meta is not None:
        out["__metadata__"] = dict(sorted(meta.items()))
    for name in sorted(header):
        out[name] = header[name]
    text = json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + raw[8 + n :]
