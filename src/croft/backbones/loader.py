"""``load_backbone``: parse a spec string, check it cheaply, then build the backbone.

Every check that can fail on user input (unknown prefix, missing file, unknown
architecture, hub tag without permission) runs before torch/open_clip/transformers are
imported, so such errors come back in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from croft.backbones import archs
from croft.backbones.base import Backbone, check_precision
from croft.errors import CroftError
from croft.registry import Registry


@dataclass(frozen=True)
class BackboneSpec:
    """A parsed spec: ``kind`` (a registered prefix), an architecture, a local path or a
    hub tag."""

    kind: str
    arch: str | None
    path: Path | None
    tag: str | None
    text: str


@dataclass(frozen=True)
class BackboneKind:
    """One spec prefix: ``parse(rest, spec) -> BackboneSpec`` (no file-system reads beyond
    ``exists``), ``load(parsed, quick_gelu=, precision=) -> Backbone`` (imports heavy
    libraries inside), and the spec forms it accepts (for error messages)."""

    parse: Callable[[str, str], BackboneSpec]
    load: Callable[..., Backbone]
    forms: str
    expected_file: str = "a local weight file"
    directory: bool = False  # the spec names a folder, not a file


BACKBONES: Registry[BackboneKind] = Registry("backbone kind")
"""Backbones by spec prefix; a plug-in registers ``BACKBONES.register("prefix", "summary")``
with a :class:`BackboneKind`."""


def _local(path: str) -> Path:
    return Path(path).expanduser().absolute()


def _forms() -> str:
    return ", ".join(e.obj.forms for e in BACKBONES)


def parse_spec(spec: str) -> BackboneSpec:
    """Split a spec string into its parts (no file-system checks)."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in BACKBONES or not rest:
        raise CroftError(f"bad backbone spec {spec!r}; use {_forms()}")
    return BACKBONES.get(kind).parse(rest, spec)


def _parse_hf(rest: str, spec: str) -> BackboneSpec:
    return BackboneSpec("hf", None, _local(rest), None, spec)


def _parse_openclip(rest: str, spec: str) -> BackboneSpec:
    arch, sep, path = rest.partition(":")
    if sep and path:
        return BackboneSpec("openclip", arch, _local(path), None, spec)
    if not sep and "@" in arch:
        arch, _, tag = arch.partition("@")
        if arch and tag:
            return BackboneSpec("openclip", arch, None, tag, spec)
    raise CroftError(
        f"backbone spec {spec!r} names no weights; pass openclip:{arch or 'ARCH'}:PATH with a "
        f"local checkpoint, or openclip:{arch or 'ARCH'}@TAG with --allow-download"
    )


def _parse_openai(rest: str, spec: str) -> BackboneSpec:
    # PATH or ARCH:PATH (an arch name holds no path separator and is not a file)
    head, sep, tail = rest.partition(":")
    looks_like_arch = "/" not in head and "\\" not in head and not head.endswith((".pt", ".pth"))
    if sep and tail and looks_like_arch and not _local(rest).exists():
        return BackboneSpec("openai", head, _local(tail), None, spec)
    return BackboneSpec("openai", None, _local(rest), None, spec)


def _load_hf(p: BackboneSpec, *, quick_gelu: bool | None, precision: str) -> Backbone:
    from croft.backbones.hf import load_hf

    assert p.path is not None
    return load_hf(p.text, p.path, quick_gelu=quick_gelu, precision=precision)


def _load_openai(p: BackboneSpec, *, quick_gelu: bool | None, precision: str) -> Backbone:
    from croft.backbones.openclip import load_openai

    assert p.path is not None
    return load_openai(p.text, p.arch, p.path, quick_gelu=quick_gelu, precision=precision)


def _load_openclip(p: BackboneSpec, *, quick_gelu: bool | None, precision: str) -> Backbone:
    from croft.backbones.openclip import load_openclip

    assert p.arch is not None
    return load_openclip(p.text, p.arch, p.path, p.tag, quick_gelu=quick_gelu, precision=precision)


BACKBONES.register("openclip", "open_clip architecture + local checkpoint (or hub tag)")(
    BackboneKind(
        _parse_openclip,
        _load_openclip,
        "openclip:ARCH:PATH, openclip:ARCH@TAG",
        "a local .pt, .bin or .safetensors checkpoint",
    )
)
BACKBONES.register("openai", "OpenAI CLIP TorchScript archive, read as data")(
    BackboneKind(
        _parse_openai,
        _load_openai,
        "openai:PATH, openai:ARCH:PATH",
        "an OpenAI CLIP .pt archive (e.g. ViT-B-16.pt)",
    )
)
BACKBONES.register("hf", "transformers CLIPModel directory")(
    BackboneKind(
        _parse_hf,
        _load_hf,
        "hf:DIR",
        "a Hugging Face CLIPModel folder (config.json + weights)",
        True,
    )
)
PREFIXES = tuple(BACKBONES.names())


def _check_file(p: BackboneSpec) -> None:
    assert p.path is not None
    kind = BACKBONES.get(p.kind)
    if kind.directory:
        if not p.path.exists():
            raise CroftError(
                f"model directory not found: {p.path} (from backbone spec {p.text!r}); pass "
                f"{kind.expected_file}"
            )
        return
    if not p.path.is_file():
        what = "a directory" if p.path.is_dir() else "not found"
        raise CroftError(
            f"weight file {what}: {p.path} (from backbone spec {p.text!r}); pass "
            f"{kind.expected_file}"
        )


HUB_KEYS = ("hf_model_name", "hf_tokenizer_name")


def _refuse_hub_names(config: dict[str, Any], p: BackboneSpec, spec: str) -> None:
    """An architecture whose text tower or tokenizer is a Hugging Face hub model would be
    fetched by open_clip on build: refuse that offline, naming where the name was read."""
    text_cfg = config.get("text_cfg")
    if not isinstance(text_cfg, dict):
        return
    for key in HUB_KEYS:
        name = text_cfg.get(key)
        if name:
            from croft.backbones.checkpoint import SIDECAR, read_sidecar

            where: object = f"architecture {p.arch}"
            if p.path is not None and "model_cfg" in read_sidecar(p.path):
                where = p.path.parent / SIDECAR
            raise CroftError(
                f"{where}: text_cfg.{key} {str(name)[:80]!r} names a hub model, which would be "
                f"downloaded and downloads are off; use a backbone whose text tower is in the "
                f"weights, or allow the download with --allow-download (backbone {spec!r})"
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
        config = archs.require_config(p.arch, spec)
        if not allow_download:
            _refuse_hub_names(config, p, spec)

    backbone = BACKBONES.get(p.kind).load(p, quick_gelu=quick_gelu, precision=precision)
    return backbone.to(device)
