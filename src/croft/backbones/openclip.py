"""open_clip backbones: local state dicts (``openclip:``) and OpenAI TorchScript archives
(``openai:``). open_clip and torch are imported inside functions only."""

from __future__ import annotations

import copy
import inspect
import json
import math
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from croft.backbones import archs
from croft.backbones.base import Backbone
from croft.backbones.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Preprocess
from croft.errors import CroftError

if TYPE_CHECKING:
    import torch
    from torch import nn

OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
WRAPPER_KEYS = ("state_dict", "model")
PREFIXES = ("module.", "_orig_mod.")
OPENAI_QUICK_GELU_WHERE = "OpenAI CLIP weights (trained with QuickGELU)"


def open_clip_module() -> Any:
    """Import open_clip (slow: seconds) and make croft's architectures known to it."""
    try:
        import open_clip
    except ImportError:
        raise CroftError(
            'open_clip is not installed; install it with: pip install "croft-ood[clip]"'
        ) from None
    archs.install_into_open_clip()
    return open_clip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- reading weight files ------------------------------------------------------------------


def is_torchscript_archive(path: Path) -> bool:
    """True for a TorchScript zip (``torch.jit.save``), as OpenAI's clip package ships."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _strip_prefixes(sd: dict[str, Any]) -> dict[str, Any]:
    for prefix in PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def read_torchscript_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """State dict of a TorchScript archive, parsed as data: nothing in it is run (see
    :mod:`croft.backbones.torchscript`); OpenAI's extra entries are dropped."""
    from croft.backbones.torchscript import read_state_dict

    sd = read_state_dict(path)
    for key in OPENAI_EXTRA_KEYS:
        sd.pop(key, None)
    return sd


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a ``.pt``/``.bin``/``.pth`` state dict (``weights_only=True``; possibly wrapped
    in ``{"state_dict": ...}`` or ``{"model": ...}`` with ``module.`` prefixes), a
    ``.safetensors`` file, or an OpenAI TorchScript archive.

    Returns the state dict and the metadata found beside it (wrapper keys, safetensors
    header metadata, ``{"torchscript": True}`` for TorchScript archives).
    """
    import torch

    meta: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                sd: dict[str, Any] = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except Exception as exc:  # noqa: BLE001
            raise CroftError(f"cannot read safetensors file {path}: {_first_line(exc)}") from None
        return _strip_prefixes(sd), meta
    if is_torchscript_archive(path):
        return read_torchscript_state_dict(path), {"torchscript": True}
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CroftError(
            f"cannot read {path} as a weights-only torch checkpoint ({_first_line(exc)}); "
            "save it with torch.save(model.state_dict(), path) or as .safetensors"
        ) from None
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                meta = {k: v for k, v in obj.items() if k != key}
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CroftError(f"{path} holds no state dict (found {type(obj).__name__})")
    sd = _strip_prefixes(obj)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CroftError(
            f"{path} is not a plain state dict: {len(bad)} non-tensor entries (e.g. {bad[0]!r}); "
            "wrap the weights as {'state_dict': model.state_dict()}"
        )
    return sd, meta


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no"):
        return False
    return None


def _as_dict(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def weights_metadata(
    meta: dict[str, Any], path: Path
) -> tuple[bool | None, str, dict[str, Any] | None]:
    """(quick_gelu the weights were trained with or None, where that was read, preprocess
    config or None) from checkpoint metadata or an ``open_clip_config.json`` beside it."""
    if meta.get("torchscript"):
        return True, OPENAI_QUICK_GELU_WHERE + f" in {path}", None
    qg = _as_bool(meta.get("quick_gelu"))
    model_cfg = _as_dict(meta.get("model_cfg"))
    if qg is None and model_cfg is not None:
        qg = bool(model_cfg.get("quick_gelu", False))
    pp = _as_dict(meta.get("preprocess_cfg"))
    where = f"metadata of {path}"
    sibling = path.parent / "open_clip_config.json"
    if (qg is None or pp is None) and sibling.is_file():
        try:
            side = json.loads(sibling.read_text())
        except (OSError, ValueError):
            side = {}
        if qg is None and isinstance(side.get("model_cfg"), dict):
            qg, where = bool(side["model_cfg"].get("quick_gelu", False)), str(sibling)
        if pp is None and isinstance(side.get("preprocess_cfg"), dict):
            pp = side["preprocess_cfg"]
    return qg, where, pp


# -- architectures from state dicts ----------------------------------------------------------


def _count(sd: dict[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def infer_config(sd: dict[str, Any]) -> dict[str, Any] | None:
    """open_clip model config implied by a CLIP state dict in OpenAI key layout (also
    open_clip's ``CLIP``; ``text.``-prefixed text towers are accepted). Head width 64, as in
    all OpenAI models. None when the keys do not look like a CLIP model."""
    sd = {(k[5:] if k.startswith("text.") else k): v for k, v in sd.items()}
    try:
        if "visual.proj" in sd:
            conv = sd["visual.conv1.weight"]
            patch = int(conv.shape[-1])
            grid = math.isqrt(int(sd["visual.positional_embedding"].shape[0]) - 1)
            vision: dict[str, Any] = {
                "image_size": patch * grid,
                "layers": _count(
                    sd, r"visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_weight"
                ),
                "width": int(conv.shape[0]),
                "head_width": 64,
                "patch_size": patch,
            }
        elif "visual.attnpool.positional_embedding" in sd:
            grid = math.isqrt(int(sd["visual.attnpool.positional_embedding"].shape[0]) - 1)
            vision = {
                "image_size": grid * 32,
                "layers": [_count(sd, rf"visual\.layer{b}\.(\d+)\.") for b in (1, 2, 3, 4)],
                "width": int(sd["visual.layer1.0.conv1.weight"].shape[0]),
                "head_width": 64,
                "patch_size": None,
            }
        else:
            return None
        width = int(sd["ln_final.weight"].shape[0])
        text = {
            "context_length": int(sd["positional_embedding"].shape[0]),
            "vocab_size": int(sd["token_embedding.weight"].shape[0]),
            "width": width,
            "heads": max(1, width // 64),
            "layers": _count(sd, r"transformer\.resblocks\.(\d+)\."),
        }
        return {
            "embed_dim": int(sd["text_projection"].shape[-1]),
            "vision_cfg": vision,
            "text_cfg": text,
        }
    except (KeyError, IndexError, ValueError, AttributeError):
        return None


def _shape_summary(config: dict[str, Any]) -> tuple[Any, ...] | None:
    v, t = config.get("vision_cfg", {}), config.get("text_cfg", {})
    if v.get("timm_model_name") or t.get("hf_model_name") or t.get("embed_cls"):
        return None
    layers = v.get("layers", 12)
    layers = tuple(layers) if isinstance(layers, (list, tuple)) else int(layers)
    size = v.get("image_size", 224)
    if isinstance(size, (list, tuple)):
        size = size[0] if len(set(size)) == 1 else tuple(size)
    patch = None if isinstance(layers, tuple) else v.get("patch_size", 16)
    return (
        config.get("embed_dim"),
        layers,
        v.get("width", 768),
        patch,
        size,
        t.get("width", 512),
        t.get("layers", 12),
        t.get("context_length", 77),
        t.get("vocab_size", 49408),
    )


def guess_architectures(sd: dict[str, Any], limit: int = 3) -> list[str]:
    """Known architecture names whose shapes match the state dict (best first)."""
    inferred = infer_config(sd)
    if inferred is None:
        return []
    target = _shape_summary(inferred)
    hits = [n for n, c in archs.all_configs().items() if _shape_summary(c) == target]
    hits.sort(key=lambda n: (n.endswith(archs.QUICKGELU_SUFFIX), len(n), n))
    return hits[:limit]


def _shape(t: Any) -> str:
    return "(" + ",".join(str(s) for s in t.shape) + ")"


def fit_state_dict(
    model: nn.Module, sd: dict[str, Any], *, arch: str, path: Path
) -> dict[str, Any]:
    """``sd`` adapted to ``model``'s key layout (which may live on the meta device); a misfit
    raises one CroftError naming keys and the architectures the weights look like."""
    oc = open_clip_module()
    sd = dict(sd)
    for key in OPENAI_EXTRA_KEYS:
        sd.pop(key, None)
    if hasattr(model, "text") and "text_projection" in sd:
        sd = oc.model.convert_to_custom_text_state_dict(sd)
    own = model.state_dict()
    for name, _ in model.named_buffers():  # traced archives also store non-persistent buffers
        if name not in own:
            sd.pop(name, None)
    for key in ("logit_scale", "logit_bias"):
        if key in sd and key in own and sd[key].ndim != own[key].ndim:
            sd[key] = sd[key].reshape(own[key].shape)
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    reshaped = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])})")
        if reshaped:
            shown = ", ".join(f"{k} {_shape(sd[k])} vs {_shape(own[k])}" for k in reshaped[:3])
            parts.append(f"{len(reshaped)} keys with other shapes (file vs arch: {shown})")
        guesses = [g for g in guess_architectures(sd) if g != arch]
        hint = (
            f"the weights look like {' or '.join(guesses)}: pass openclip:{guesses[0]}:{path}"
            if guesses
            else "no known architecture matches their shapes; register the right one with "
            "croft.backbones.register_architecture"
        )
        raise CroftError(
            f"weights {path} do not fit architecture {arch}: {'; '.join(parts)}; {hint}"
        )
    return sd


def build_model(
    config: dict[str, Any], *, arch: str, quick_gelu: bool, device: str = "cpu"
) -> nn.Module:
    """An open_clip model for ``config`` (random init, fp32, no downloads); on the ``meta``
    device it costs nothing and serves to check a state dict's keys and shapes."""
    import torch

    open_clip_module()
    from open_clip.coca_model import CoCa
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = copy.deepcopy(config)
    cfg["quick_gelu"] = bool(quick_gelu)
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    if vision.get("timm_model_name"):
        vision["timm_model_pretrained"] = False
    if text.get("hf_model_name"):
        text["hf_model_pretrained"] = False
    custom = cfg.pop("custom_text", False) or bool(text.get("hf_model_name"))
    cls = (CoCa if "multimodal_cfg" in cfg else CustomTextCLIP) if custom else CLIP
    accepted = set(inspect.signature(cls.__init__).parameters)
    cfg = {k: v for k, v in cfg.items() if k in accepted}
    try:
        with torch.device(device):
            return cls(**cfg)
    except Exception as exc:  # noqa: BLE001 - surface config problems as one line
        raise CroftError(f"cannot build architecture {arch}: {_first_line(exc)}") from None


def load_weights(
    config: dict[str, Any], sd: dict[str, Any], *, arch: str, quick_gelu: bool, path: Path
) -> nn.Module:
    """Check ``sd`` against a meta-device model first (fast errors), then build and load."""
    sd = fit_state_dict(
        build_model(config, arch=arch, quick_gelu=quick_gelu, device="meta"),
        sd,
        arch=arch,
        path=path,
    )
    model = build_model(config, arch=arch, quick_gelu=quick_gelu)
    model.load_state_dict(sd, strict=True)
    return model


def resolve_quick_gelu(
    arch: str,
    config: dict[str, Any],
    requested: bool | None,
    trained: bool | None,
    trained_where: str,
) -> bool:
    """The activation to build with. An explicit choice (``requested``, an ``-quickgelu``
    name, or a ``quick_gelu`` key in the config) that contradicts what the weights say they
    were trained with is refused; otherwise the weights' word wins over the default GELU."""
    explicit, why = requested, f"quick_gelu={requested}"
    if arch.endswith(archs.QUICKGELU_SUFFIX):
        if requested is False:
            raise CroftError(
                f"architecture {arch} uses QuickGELU but quick_gelu=False was passed; "
                f"name {arch[: -len(archs.QUICKGELU_SUFFIX)]} instead or drop quick_gelu"
            )
        explicit, why = True, f"architecture {arch}"
    elif explicit is None and "quick_gelu" in config:
        explicit, why = bool(config["quick_gelu"]), f"architecture {arch}'s config"
    if explicit is not None and trained is not None and explicit != trained:
        act = "QuickGELU" if trained else "GELU"
        fix = (
            f"{archs.base_name(arch)}-quickgelu or quick_gelu=True"
            if trained
            else f"{archs.base_name(arch)} or quick_gelu=False"
        )
        raise CroftError(
            f"activation mismatch: {trained_where} says the weights were trained with {act}, "
            f"but {why} asks for {'GELU' if trained else 'QuickGELU'}; pass {fix}"
        )
    if explicit is not None:
        return explicit
    return bool(trained) if trained is not None else False


def _preprocess(image_size: Any, pp: dict[str, Any] | None) -> Preprocess:
    pp = pp or {}
    return Preprocess(
        image_size=image_size,
        mean=tuple(pp.get("mean", OPENAI_CLIP_MEAN)),
        std=tuple(pp.get("std", OPENAI_CLIP_STD)),
        interpolation=pp.get("interpolation", "bicubic"),
        resize_mode=pp.get("resize_mode", "shortest"),
    )


def _tag_preprocess(arch: str) -> dict[str, Any] | None:
    """The preprocessing all of open_clip's pretrained tags for ``arch`` agree on, if any."""
    oc = open_clip_module()
    base = archs.base_name(arch)
    keys = ("mean", "std", "interpolation", "resize_mode")
    seen = set()
    for tag in oc.pretrained.list_pretrained_tags_by_model(base):
        cfg = oc.pretrained.get_pretrained_cfg(base, tag)
        seen.add(
            tuple(
                (k, tuple(v) if isinstance(v, (list, tuple)) else v)
                for k in keys
                if (v := cfg.get(k)) is not None
            )
        )
    if len(seen) != 1:
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in next(iter(seen))}


# -- the backbone ----------------------------------------------------------------------------


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
                    f"cannot create the tokenizer of {self.name}: {_first_line(exc)}"
                ) from None
        return self._tokenizer(list(texts)).long()


def _sidecar(path: Path) -> dict[str, Any]:
    """The ``open_clip_config.json`` beside a checkpoint, or ``{}``."""
    sibling = path.parent / "open_clip_config.json"
    if not sibling.is_file():
        return {}
    try:
        doc = json.loads(sibling.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def register_sidecar_architecture(arch: str, path: Path) -> None:
    """Register ``arch`` from the ``model_cfg`` beside ``path`` when it is not known yet."""
    if archs.get_config(arch) is not None:
        return
    side = _sidecar(path)
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
    side = _sidecar(path) if path is not None else {}
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
            raise CroftError(f"download of {arch}@{tag} failed: {_first_line(exc)}") from None
        sd, _ = read_checkpoint(path)
        trained, where = bool(tag_cfg.get("quick_gelu", False)), f"open_clip tag {base}@{tag}"
        pp = tag_cfg
    else:
        assert path is not None
        sd, meta = read_checkpoint(path)
        trained, where, pp = weights_metadata(meta, path)
        if pp is None:
            pp = _tag_preprocess(arch)
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
