"""``load_backbone``: parse a spec string, check it cheaply, then build the backbone.

Every check that can fail on user input (unknown prefix, missing file, unknown
architecture, hub tag without permission) runs before torch/open_clip/transformers are
imported, so such errors come back in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from croft.backbones import archs
from croft.backbones.base import Backbone, check_precision
from croft.errors import CroftError

PREFIXES = ("openclip", "openai", "hf")
FORMS = "openclip:ARCH:PATH, openclip:ARCH@TAG, openai:PATH, openai:ARCH:PATH or hf:DIR"


@dataclass(frozen=True)
class BackboneSpec:
    """A parsed spec: ``kind`` in PREFIXES, an architecture, a local path or a hub tag."""

    kind: str
    arch: str | None
    path: Path | None
    tag: str | None
    text: str


def _local(path: str) -> Path:
    return Path(path).expanduser().absolute()


def parse_spec(spec: str) -> BackboneSpec:
    """Split a spec string into its parts (no file-system checks)."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in PREFIXES or not rest:
        raise CroftError(f"bad backbone spec {spec!r}; use {FORMS}")
    if kind == "hf":
        return BackboneSpec(kind, None, _local(rest), None, spec)
    if kind == "openclip":
        arch, sep, path = rest.partition(":")
        if sep and path:
            return BackboneSpec(kind, arch, _local(path), None, spec)
        if not sep and "@" in arch:
            arch, _, tag = arch.partition("@")
            if arch and tag:
                return BackboneSpec(kind, arch, None, tag, spec)
        raise CroftError(
            f"backbone spec {spec!r} names no weights; pass openclip:{arch or 'ARCH'}:PATH with a "
            f"local checkpoint, or openclip:{arch or 'ARCH'}@TAG with --allow-download"
        )
    # openai: PATH or ARCH:PATH (an arch name holds no path separator and is not a file)
    head, sep, tail = rest.partition(":")
    looks_like_arch = "/" not in head and "\\" not in head and not head.endswith((".pt", ".pth"))
    if sep and tail and looks_like_arch and not _local(rest).exists():
        return BackboneSpec(kind, head, _local(tail), None, spec)
    return BackboneSpec(kind, None, _local(rest), None, spec)


def _check_file(p: BackboneSpec) -> None:
    assert p.path is not None
    if p.kind == "hf":
        if not p.path.exists():
            raise CroftError(
                f"Hugging Face model directory not found: {p.path} (from backbone spec "
                f"{p.text!r}); pass a local folder holding config.json and the weights"
            )
        return
    if not p.path.is_file():
        what = "a directory" if p.path.is_dir() else "not found"
        expected = (
            "an OpenAI CLIP .pt archive (e.g. ViT-B-16.pt)"
            if p.kind == "openai"
            else "a local .pt, .bin or .safetensors checkpoint"
        )
        raise CroftError(
            f"weight file {what}: {p.path} (from backbone spec {p.text!r}); pass {expected}"
        )


def load_backbone(
    spec: str,
    *,
    device: Any = "cpu",
    precision: str = "fp32",
    allow_download: bool = False,
    quick_gelu: bool | None = None,
) -> Backbone:
    """Load a frozen backbone from a spec string (see :mod:`croft.backbones`).

    Args:
        spec: ``openclip:ARCH:PATH``, ``openclip:ARCH@TAG``, ``openai:[ARCH:]PATH`` or
            ``hf:DIR``.
        device: where to put the model (``"cpu"``, ``"cuda:0"``, a ``torch.device``).
        precision: ``fp32``, ``fp16`` or ``bf16``.
        allow_download: permit a hub download for ``openclip:ARCH@TAG``; nothing else
            ever touches the network.
        quick_gelu: force the activation (None: from the weights' metadata or the arch);
            contradicting what the weights were trained with is an error.
    """
    check_precision(precision)
    p = parse_spec(spec)
    if p.tag is not None:
        if not allow_download:
            raise CroftError(
                f"backbone spec {spec!r} names the hub tag {p.tag!r} and downloads are off; pass "
                f"a local file as openclip:{p.arch}:PATH, or allow the download with "
                "--allow-download (allow_download=True)"
            )
    else:
        _check_file(p)
    if p.arch is not None:
        if p.kind == "openclip" and p.path is not None:
            from croft.backbones.openclip import register_sidecar_architecture

            register_sidecar_architecture(p.arch, p.path)
        archs.require_config(p.arch, spec)

    if p.kind == "hf":
        from croft.backbones.hf import load_hf

        assert p.path is not None
        backbone: Backbone = load_hf(spec, p.path, quick_gelu=quick_gelu, precision=precision)
    elif p.kind == "openai":
        from croft.backbones.openclip import load_openai

        assert p.path is not None
        backbone = load_openai(spec, p.arch, p.path, quick_gelu=quick_gelu, precision=precision)
    else:
        from croft.backbones.openclip import load_openclip

        assert p.arch is not None
        backbone = load_openclip(
            spec, p.arch, p.path, p.tag, quick_gelu=quick_gelu, precision=precision
        )
    return backbone.to(device)
