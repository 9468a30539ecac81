"""Hugging Face CLIP backbones (``hf:DIR``), read from a local directory only.

transformers is the optional extra ``croft-ood[hf]`` and is imported inside functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from croft.backbones.base import Backbone
from croft.backbones.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Preprocess
from croft.errors import CroftError, first_line
from croft.fileio import read_json

if TYPE_CHECKING:
    import torch
    from torch import nn

# PIL resampling codes as stored in preprocessor_config.json
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
TEXT_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "hidden_act",
    "layer_norm_eps",
    "eos_token_id",
)
VISION_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
)
SINGLE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CONFIG_FILES = (
    "config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)
"""Files of an ``hf:`` folder beside the weights that change its features (fingerprinted)."""
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path, "Hugging Face file")
    except OSError as exc:
        raise CroftError(f"cannot read {path}: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise CroftError(f"{path} does not hold a JSON object")
    return data


@contextmanager
def transformers_output() -> Iterator[None]:
    """transformers' progress bars ("Loading weights") only where croft shows live bars (a
    terminal, not ``--quiet``), and its warnings silenced when croft runs quietly; both
    settings are restored afterwards."""
    from transformers.utils import logging as hf_logging

    from croft.progress import is_quiet, live_bars

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    if not live_bars():
        hf_logging.disable_progress_bar()
    if is_quiet():
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(level)


def weight_files(path: Path) -> list[Path]:
    """The weight files of a saved HF model directory (single or sharded)."""
    for name in SINGLE_WEIGHTS:
        if (path / name).is_file():
            return [path / name]
    for name in INDEXES:
        if (path / name).is_file():
            shards = sorted(set(_read_json(path / name).get("weight_map", {}).values()))
            missing = [s for s in shards if not (path / s).is_file()]
            if missing or not shards:
                raise CroftError(f"{path / name} lists shards that are missing: {missing[:3]}")
            return [path / s for s in shards]
    present = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
    raise CroftError(
        f"no weights in Hugging Face model directory {path} (expected model.safetensors or "
        f"pytorch_model.bin; found {present}); save the model with save_pretrained"
    )


def _side(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in ("shortest_edge", "height", "width"):
            if isinstance(value.get(key), int):
                return value[key]
    return None


def hf_preprocess(path: Path, default_size: int) -> Preprocess:
    """Preprocessing from ``preprocessor_config.json`` (or ``processor_config.json``'s
    ``image_processor``); OpenAI CLIP's at the model's image size when neither exists."""
    cfg: dict[str, Any] | None = None
    if (path / "preprocessor_config.json").is_file():
        cfg = _read_json(path / "preprocessor_config.json")
    elif (path / "processor_config.json").is_file():
        nested = _read_json(path / "processor_config.json").get("image_processor")
        cfg = nested if isinstance(nested, dict) else None
    if cfg is None:
        return Preprocess.openai(default_size)
    size = cfg.get("size", default_size)
    crop = cfg.get("do_center_crop", True)
    image_size = _side(cfg.get("crop_size")) if crop else None
    image_size = image_size or _side(size) or default_size
    squash = isinstance(size, dict) and "shortest_edge" not in size
    resample = cfg.get("resample", 3)
    interpolation = PIL_RESAMPLE.get(resample, resample) if isinstance(resample, int) else resample
    return Preprocess(
        image_size=image_size,
        mean=tuple(cfg.get("image_mean", OPENAI_CLIP_MEAN)),
        std=tuple(cfg.get("image_std", OPENAI_CLIP_STD)),
        interpolation=str(interpolation).lower(),
        resize_mode="squash" if squash else "shortest",
    )


class HFClipBackbone(Backbone):
    """A transformers ``CLIPModel``."""

    def __init__(self, model: nn.Module, *, directory: Path, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.directory = directory
        self._tokenizer: Any = None

    def _logit_scale_param(self) -> torch.Tensor:
        return self.model.logit_scale

    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_image_features(pixel_values=images))

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_text_features(input_ids=tokens))

    def _token_embedding_module(self) -> nn.Embedding:
        return self.model.text_model.embeddings.token_embedding

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        if self._tokenizer is None:
            from transformers import CLIPTokenizer

            try:
                with transformers_output():
                    self._tokenizer = CLIPTokenizer.from_pretrained(
                        str(self.directory), local_files_only=True
                    )
            except Exception as exc:  # noqa: BLE001
                raise CroftError(
                    f"no usable CLIP tokenizer in {self.directory} ({first_line(exc)}); save one "
                    "there with tokenizer.save_pretrained"
                ) from None
        length = int(self.model.config.text_config.max_position_embeddings)
        out = self._tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=length,
            return_tensors="pt",
        )
        return out["input_ids"].long()


def _arch_name(vision: Any) -> str:
    """A path-independent name such as ``hf-ViT-B-16`` (``hf-ViT-w64-8`` when unusual)."""
    size = {384: "S", 512: "M", 768: "B", 1024: "L", 1280: "H", 1408: "g", 1664: "bigG"}
    width = int(vision.hidden_size)
    patch = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
    return f"hf-ViT-{size.get(width, f'w{width}')}-{patch}"


def _pooled(out: Any) -> torch.Tensor:
    """transformers 4.x returns the projected features; 5.x an output with ``pooler_output``."""
    import torch

    return out if isinstance(out, torch.Tensor) else out.pooler_output


def load_hf(spec: str, path: Path, *, quick_gelu: bool | None, precision: str) -> HFClipBackbone:
    """``hf:DIR``: a CLIPModel saved with ``save_pretrained`` (config.json + weights)."""
    if not path.is_dir():
        raise CroftError(
            f"hf: expects a Hugging Face model directory, but {path} is a file; pass the folder "
            "holding config.json"
        )
    if not (path / "config.json").is_file():
        raise CroftError(
            f"{path} has no config.json, so it is not a Hugging Face model directory; pass the "
            "folder written by CLIPModel.save_pretrained"
        )
    config = _read_json(path / "config.json")
    if config.get("model_type") != "clip":
        raise CroftError(
            f"{path} holds a {config.get('model_type')!r} model; hf: loads CLIP models "
            "(model_type 'clip') only"
        )
    files = weight_files(path)
    try:
        from transformers import CLIPModel
    except ImportError:
        raise CroftError(
            'hf: backbones need transformers; install it with: pip install "croft-ood[hf]"'
        ) from None
    try:
        with transformers_output():
            model, info = CLIPModel.from_pretrained(
                str(path), local_files_only=True, output_loading_info=True
            )
    except Exception as exc:  # noqa: BLE001
        raise CroftError(
            f"cannot load the Hugging Face CLIP model in {path}: {first_line(exc)}"
        ) from None
    bad = [
        f"{len(keys)} {kind.replace('_', ' ')} ({', '.join(keys[:3])})"
        for kind in ("missing_keys", "mismatched_keys", "unexpected_keys")
        if (
            keys := sorted(
                str(k) for k in info.get(kind, ()) if not str(k).endswith("position_ids")
            )
        )
    ]
    if bad:
        raise CroftError(f"weights in {path} do not fit its config.json: {'; '.join(bad)}")
    model = model.float()
    text, vision = model.config.text_config, model.config.vision_config
    trained_qg = text.hidden_act == "quick_gelu" and vision.hidden_act == "quick_gelu"
    if quick_gelu is not None and quick_gelu != trained_qg:
        raise CroftError(
            f"quick_gelu={quick_gelu} contradicts {path / 'config.json'} (hidden_act "
            f"{text.hidden_act!r}); drop quick_gelu for hf: backbones"
        )
    architecture = {
        "model_type": "clip",
        "projection_dim": model.config.projection_dim,
        "text_config": {k: getattr(text, k, None) for k in TEXT_KEYS},
        "vision_config": {k: getattr(vision, k, None) for k in VISION_KEYS},
    }
    return HFClipBackbone(
        model,
        directory=path,
        name=_arch_name(vision),
        dim=int(model.config.projection_dim),
        preprocess=hf_preprocess(path, int(vision.image_size)),
        precision=precision,
        source="hf",
        spec=spec,
        architecture=architecture,
        weight_files=files,
        quick_gelu=trained_qg,
        config_files=[path / n for n in CONFIG_FILES if (path / n).is_file()],
    )
