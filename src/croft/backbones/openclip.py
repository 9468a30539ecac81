"""open_clip backbones: local state dicts (``openclip:``) and OpenAI TorchScript archives
(``openai:``). open_clip and torch are imported inside functions only.

Weight files are read by :mod:`croft.backbones.checkpoint`; models are inferred, fitted
and built by :mod:`croft.backbones.openclip_model`. Their public names are re-exported
here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from croft.backbones import archs
from croft.backbones.base import Backbone
from croft.backbones.checkpoint import (
    OPENAI_EXTRA_KEYS,
    OPENAI_QUICK_GELU_WHERE,
    PREFIXES,
    WRAPPER_KEYS,
    is_torchscript_archive,
    read_checkpoint,
    read_sidecar,
    read_torchscript_state_dict,
    weights_metadata,
)
from croft.backbones.openclip_model import (
    build_model,
    fit_state_dict,
    guess_architectures,
    infer_config,
    load_weights,
    open_clip_module,
    resolve_quick_gelu,
    tag_preprocess,
)
from croft.backbones.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Preprocess
from croft.errors import CroftError, first_line

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "OPENAI_EXTRA_KEYS",
    "OPENAI_QUICK_GELU_WHERE",
    "PREFIXES",
    "WRAPPER_KEYS",
    "OpenClipBackbone",
    "build_model",
    "fit_state_dict",
    "guess_architectures",
    "infer_config",
    "is_torchscript_archive",
    "load_openai",
    "load_openclip",
    "load_weights",
    "open_clip_module",
    "read_checkpoint",
    "read_torchscript_state_dict",
    "register_sidecar_architecture",
    "resolve_quick_gelu",
    "weights_metadata",
]


def _preprocess(image_size: Any, pp: dict[str, Any] | None) -> Preprocess:
    pp = pp or {}
    return Preprocess(
        image_size=image_size,
        mean=tuple(pp.get("mean", OPENAI_CLIP_MEAN)),
        std=tuple(pp.get("std", OPENAI_CLIP_STD)),
        interpolation=pp.get("interpolation", "bicubic"),
        resize_mode=pp.get("resize_mode", "shortest"),
    )


class OpenClipBackbone(Backbone):
    """An open_clip ``CLIP``/``CustomTextCLIP`` model (also built from OpenAI weights)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        tokenizer_arch: str | None,
        tokenizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self._tokenizer_arch = tokenizer_arch
        self._tokenizer: Any = tokenizer

    def _logit_scale_param(self) -> torch.Tensor:
        return self.model.logit_scale

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    def local_tokens(self) -> int:
        from croft.backbones.local import local_tokens

        return local_tokens(self.model, f"backbone {self.name}")

    def _encode_image_local(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from croft.backbones.local import encode_image_local

        return encode_image_local(self.model, images, f"backbone {self.name}")

    def _token_embedding_module(self) -> nn.Embedding:
        from torch import nn

        tower = getattr(self.model, "text", self.model)
        table = getattr(tower, "token_embedding", None)
        if not isinstance(table, nn.Embedding):
            raise CroftError(
                f"{self.name} has no CLIP-style token embedding table; prompt learning needs one"
            )
        return table

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        if self._tokenizer is None:
            oc = open_clip_module()
            tower = getattr(self.model, "text", self.model)
            ctx = int(getattr(tower, "context_length", 77))
            try:
                if self._tokenizer_arch is not None:
                    self._tokenizer = oc.get_tokenizer(self._tokenizer_arch, context_length=ctx)
                else:
                    self._tokenizer = oc.tokenizer.SimpleTokenizer(context_length=ctx)
            except Exception as exc:  # noqa: BLE001 - e.g. an HF tokenizer not available offline
                raise CroftError(
                    f"cannot create the tokenizer of {self.name}: {first_line(exc)}"
                ) from None
        return self._tokenizer(list(texts)).long()


def register_sidecar_architecture(arch: str, path: Path) -> None:
    """Register ``arch`` from the ``model_cfg`` beside ``path`` when it is not known yet."""
    if archs.get_config(arch) is not None:
        return
    side = read_sidecar(path)
    if isinstance(side.get("model_cfg"), dict) and side.get("architecture", arch) == arch:
        archs.register_architecture(arch, side["model_cfg"])


def _sidecar_tokenizer(side: dict[str, Any], path: Path | None) -> Any:
    """A :class:`WordTokenizer` when the sidecar describes one, else ``None`` (BPE)."""
    tok = side.get("tokenizer")
    if not isinstance(tok, dict) or tok.get("kind", "word") != "word" or "vocab" not in tok:
        return None
    from croft.backbones.word_tokenizer import WordTokenizer

    try:
        return WordTokenizer(tok["vocab"], int(tok.get("context_length", 12)))
    except (TypeError, ValueError) as exc:
        raise CroftError(f"the tokenizer in the config beside {path} is invalid: {exc}") from None


def load_openclip(
    spec: str,
    arch: str,
    path: Path | None,
    tag: str | None,
    *,
    quick_gelu: bool | None,
    precision: str,
) -> OpenClipBackbone:
    """``openclip:ARCH:PATH`` (``path``) or ``openclip:ARCH@TAG`` (``tag``; downloads).

    A checkpoint with an ``open_clip_config.json`` beside it that carries ``model_cfg`` (and
    ``architecture``) registers that architecture when it is unknown, and one that carries a
    ``tokenizer`` of kind ``word`` is tokenized with :class:`WordTokenizer`.
    """
    side = read_sidecar(path) if path is not None else {}
    if path is not None:
        register_sidecar_architecture(arch, path)
    config = archs.require_config(arch, spec)
    oc = open_clip_module()
    pp: dict[str, Any] | None
    if tag is not None:
        base = archs.base_name(arch)
        tag_cfg = oc.pretrained.get_pretrained_cfg(arch, tag) or oc.pretrained.get_pretrained_cfg(
            base, tag
        )
        if not tag_cfg:
            known = ", ".join(oc.pretrained.list_pretrained_tags_by_model(base)) or "none"
            raise CroftError(
                f"unknown pretrained tag {tag!r} for {arch} in {spec!r}; known: {known}"
            )
        try:
            path = Path(oc.pretrained.download_pretrained(tag_cfg))
        except Exception as exc:  # noqa: BLE001
            raise CroftError(f"download of {arch}@{tag} failed: {first_line(exc)}") from None
        sd, _ = read_checkpoint(path)
        trained, where = bool(tag_cfg.get("quick_gelu", False)), f"open_clip tag {base}@{tag}"
        pp = tag_cfg
    else:
        assert path is not None
        sd, meta = read_checkpoint(path)
        trained, where, pp = weights_metadata(meta, path)
        if pp is None:
            pp = tag_preprocess(arch)
    qg = resolve_quick_gelu(arch, config, quick_gelu, trained, where)
    model = load_weights(config, sd, arch=arch, quick_gelu=qg, path=path)
    config["quick_gelu"] = qg
    return OpenClipBackbone(
        model,
        tokenizer_arch=archs.base_name(arch),
        tokenizer=_sidecar_tokenizer(side, path),
        name=arch,
        dim=config["embed_dim"],
        preprocess=_preprocess(config["vision_cfg"].get("image_size", 224), pp),
        precision=precision,
        source="openclip",
        spec=spec,
        architecture=config,
        weight_files=[path],
        quick_gelu=qg,
    )


def _openai_name(path: Path, sd: dict[str, Any]) -> str:
    stem = path.stem.replace("/", "-").replace("@", "-").removesuffix("px")
    guesses = guess_architectures(sd, limit=10)
    if stem in guesses:
        return stem
    return guesses[0] if guesses else "openai-clip"


def load_openai(
    spec: str, arch: str | None, path: Path, *, quick_gelu: bool | None, precision: str
) -> OpenClipBackbone:
    """``openai:PATH`` / ``openai:ARCH:PATH``: an OpenAI CLIP TorchScript archive, read for its
    state dict only, built as an open_clip model with QuickGELU (as OpenAI trained it)."""
    config = archs.require_config(arch, spec) if arch is not None else None
    if not is_torchscript_archive(path):
        raise CroftError(
            f"{path} is not a TorchScript archive as OpenAI's clip package saves them; for a "
            f"state dict file use openclip:ARCH:{path}"
        )
    sd = read_torchscript_state_dict(path)
    if config is None:
        config = infer_config(sd)
        if config is None:
            raise CroftError(
                f"{path} does not hold an OpenAI CLIP model (no visual.proj / attnpool or text "
                "keys); pass the architecture as openai:ARCH:PATH or use openclip:ARCH:PATH"
            )
        arch = _openai_name(path, sd)
        tokenizer_arch = None
    else:
        tokenizer_arch = archs.base_name(arch)
    assert arch is not None
    qg = resolve_quick_gelu(arch, config, quick_gelu, True, f"{OPENAI_QUICK_GELU_WHERE} in {path}")
    model = load_weights(config, sd, arch=arch, quick_gelu=qg, path=path)
    config["quick_gelu"] = qg
    return OpenClipBackbone(
        model,
        tokenizer_arch=tokenizer_arch,
        name=arch,
        dim=config["embed_dim"],
        preprocess=Preprocess.openai(config["vision_cfg"].get("image_size", 224)),
        precision=precision,
        source="openai",
        spec=spec,
        architecture=config,
        weight_files=[path],
        quick_gelu=qg,
    )
