"""open_clip models from state dicts: the architecture a CLIP state dict implies, fitting
a state dict to an architecture (one-line errors that name the architectures the weights
look like), building with the right activation (GELU / QuickGELU) and the preprocessing
open_clip's pretrained tags agree on. open_clip and torch are imported inside functions."""

from __future__ import annotations

import copy
import inspect
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from croft.backbones import archs
from croft.backbones.checkpoint import OPENAI_EXTRA_KEYS
from croft.errors import CroftError, first_line

if TYPE_CHECKING:
    from torch import nn


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
        raise CroftError(f"cannot build architecture {arch}: {first_line(exc)}") from None


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


def tag_preprocess(arch: str) -> dict[str, Any] | None:
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
