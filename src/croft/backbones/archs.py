"""Architecture configs for open_clip models, looked up without importing open_clip.

Configs are open_clip model-config dicts (``embed_dim``, ``vision_cfg``, ``text_cfg``,
optionally ``quick_gelu``, ``custom_text``). Lookup order: architectures registered here
with :func:`register_architecture`, then open_clip's live registry (only if open_clip is
already imported), then the JSON files shipped in open_clip's ``model_configs/`` folder
(read directly, so an unknown name fails fast without the multi-second open_clip import).

``NAME-quickgelu`` resolves to ``NAME``'s config with ``quick_gelu: true`` when no config
of that exact name exists.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from croft.errors import CroftError
from croft.fileio import parse_json

QUICKGELU_SUFFIX = "-quickgelu"

TINY_VIT = "croft-tiny-vit"
TINY_VIT_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}
"""A tiny ViT CLIP for tests (random weights only). Head width 64 as in OpenAI CLIP, so its
state dict is also a valid OpenAI-format state dict whose shapes determine the model."""

_REGISTERED: dict[str, dict[str, Any]] = {}


def _check_config(name: str, config: dict[str, Any]) -> None:
    if not isinstance(config, dict):
        raise CroftError(
            f"architecture {name!r}: config must be a dict, got {type(config).__name__}"
        )
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
    if missing:
        raise CroftError(
            f"architecture {name!r}: config lacks {', '.join(missing)}; an open_clip model config "
            "needs embed_dim, vision_cfg and text_cfg"
        )


def register_architecture(name: str, config: dict[str, Any]) -> None:
    """Register an open_clip model config under ``name`` (re-registering replaces it).

    It becomes usable in ``openclip:NAME:PATH`` specs and, once open_clip is imported, in
    ``open_clip.create_model(NAME)`` / ``open_clip.get_tokenizer(NAME)`` too.
    """
    _check_config(name, config)
    _REGISTERED[name] = copy.deepcopy(config)
    if "open_clip" in sys.modules:
        install_into_open_clip()


def install_into_open_clip() -> None:
    """Copy croft's registered configs into open_clip's model-config registry."""
    factory = sys.modules.get("open_clip.factory")
    configs = getattr(factory, "_MODEL_CONFIGS", None)
    if isinstance(configs, dict):
        for name, config in _REGISTERED.items():
            configs[name] = copy.deepcopy(config)


@lru_cache(maxsize=1)
def _shipped_configs() -> dict[str, dict[str, Any]]:
    """open_clip's bundled ``model_configs/*.json``, read from disk without importing it."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for loc in spec.submodule_search_locations:
        for file in sorted(Path(loc, "model_configs").glob("*.json")):
            try:
                cfg = parse_json(file.read_text(), str(file))
            except (OSError, ValueError):
                continue
            if isinstance(cfg, dict) and all(
                k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")
            ):
                out[file.stem] = cfg
    return out


def _live_configs() -> dict[str, dict[str, Any]]:
    factory = sys.modules.get("open_clip.factory")
    configs = getattr(factory, "_MODEL_CONFIGS", None)
    return configs if isinstance(configs, dict) else {}


def _lookup(name: str) -> dict[str, Any] | None:
    for table in (_REGISTERED, _live_configs(), _shipped_configs()):
        if name in table:
            return copy.deepcopy(table[name])
    return None


def get_config(name: str) -> dict[str, Any] | None:
    """The config for ``name`` (a deep copy), or None when unknown."""
    config = _lookup(name)
    if config is None and name.endswith(QUICKGELU_SUFFIX):
        config = _lookup(name[: -len(QUICKGELU_SUFFIX)])
        if config is not None:
            config["quick_gelu"] = True
    return config


def base_name(name: str) -> str:
    """The registered name whose config ``name`` resolves to (drops a synthesised suffix)."""
    if _lookup(name) is None and name.endswith(QUICKGELU_SUFFIX):
        return name[: -len(QUICKGELU_SUFFIX)]
    return name


def list_architectures() -> list[str]:
    """All known architecture names (registered here, open_clip's live and shipped)."""
    return sorted(set(_REGISTERED) | set(_live_configs()) | set(_shipped_configs()))


def all_configs() -> dict[str, dict[str, Any]]:
    """Every known config by name (shallow view; do not mutate)."""
    out = dict(_shipped_configs())
    out.update(_live_configs())
    out.update(_REGISTERED)
    return out


def require_config(name: str, spec: str) -> dict[str, Any]:
    """:func:`get_config` or a one-line CroftError with close matches."""
    config = get_config(name)
    if config is not None:
        return config
    close = difflib.get_close_matches(name, list_architectures(), n=4, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}; " if close else ""
    raise CroftError(
        f"unknown architecture {name!r} in backbone spec {spec!r}; {hint}pass an open_clip "
        "model name (open_clip.list_models()) or register one with "
        "croft.backbones.register_architecture(name, config)"
    )


def needs_hub(config: dict[str, Any]) -> bool:
    """Whether a config builds its text tower from a Hugging Face hub model (refused offline)."""
    text = config.get("text_cfg")
    return isinstance(text, dict) and bool(text.get("hf_model_name"))


def _family(name: str) -> str:
    """``ViT-B-16`` -> ``ViT``, ``RN50x4`` -> ``RN``, ``EVA02-L-14`` -> ``EVA``, ``mt5-base`` ->
    ``mt5`` (digits end a family name only after a capitalised word)."""
    token = re.split(r"[-_]", name)[0]
    return token if token.islower() else re.sub(r"\d+(x\d+)?$", "", token) or token


def _plain_first(name: str) -> tuple[int, list[Any]]:
    """Short names first (``ViT-B-16`` before ``ViT-B-16-plus``), numbers in numeric order."""
    parts = [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]
    return len(re.split(r"[-_]", name)), [(isinstance(t, str), t) for t in parts]


def architecture_lines(verbose: bool = False, shown: int = 8) -> list[str]:
    """The known open_clip architectures, one line per family (``ViT (60): ViT-B-16, …``):
    the first ``shown`` names of each and a count of the rest (all with ``verbose``).
    ``NAME-quickgelu`` aliases are left out (any NAME takes the suffix); ``*`` marks a config
    whose text tower comes from the Hugging Face hub (needs ``--allow-download``)."""
    configs = all_configs()
    names = [n for n in sorted(configs, key=_plain_first) if not n.endswith(QUICKGELU_SUFFIX)]
    families: dict[str, list[str]] = {}
    for name in names:
        families.setdefault(_family(name), []).append(
            name + ("*" if needs_hub(configs[name]) else "")
        )
    lines = []
    for family, members in sorted(families.items(), key=lambda kv: kv[0].lower()):
        listed = members if verbose else members[:shown]
        more = len(members) - len(listed)
        tail = f", … (+{more})" if more else ""
        lines.append(f"{family} ({len(members)}): {', '.join(listed)}{tail}")
    return lines
