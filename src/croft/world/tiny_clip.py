"""The tiny world CLIP: an open_clip architecture, its shipped checkpoint and files.

A checkpoint is a folder with two files, the layout of open_clip's ``local-dir:`` models:

``open_clip_model.safetensors``   the open_clip ``CLIP`` state dict (float32).
``open_clip_config.json``        ``model_cfg`` (the open_clip model config),
                                 ``preprocess_cfg`` (image size, mean, std), ``tokenizer``
                                 (word vocabulary, context length), ``logit_scale`` (the
                                 learned scale, ``exp`` applied), ``architecture``,
                                 ``world_version``, ``training`` (settings, steps, wall time)
                                 and ``weights_sha256``.

Plain open_clip loads it either way::

    open_clip.create_model("local-dir:" + str(tiny_clip_checkpoint().parent))
    open_clip.add_model_config(<a file TINY_CLIP_ARCH.json holding tiny_clip_config()>)
    open_clip.create_model(TINY_CLIP_ARCH, pretrained=str(tiny_clip_checkpoint()))

Texts must go through :class:`~croft.world.tokenizer.WordTokenizer`, not open_clip's BPE.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from croft.errors import CroftError
from croft.fileio import parse_json
from croft.world.tokenizer import WordTokenizer

if TYPE_CHECKING:
    import torch

__all__ = [
    "CONFIG_NAME",
    "TINY_CLIP_ARCH",
    "WEIGHTS_NAME",
    "build_model_config",
    "load_tiny_clip",
    "read_checkpoint_config",
    "register_tiny_clip",
    "save_checkpoint",
    "tiny_clip_checkpoint",
    "tiny_clip_config",
]

TINY_CLIP_ARCH = "croft-world-rn-tiny"
WEIGHTS_NAME = "open_clip_model.safetensors"
CONFIG_NAME = "open_clip_config.json"
ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "world"
#: World v2's tiny CLIP (preset ``"study"``), the same architecture pre-trained on v2.
ASSET_DIR_V2 = Path(__file__).resolve().parents[1] / "assets" / "world_v2"
_ASSETS = {"demo": ASSET_DIR, "study": ASSET_DIR_V2}
#: Images are normalised with these per-channel statistics (close to the world's own).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def build_model_config(
    vocab_size: int,
    *,
    image_size: int = 32,
    embed_dim: int = 128,
    vision_layers: tuple[int, ...] = (2, 2, 2, 2),
    vision_width: int = 16,
    text_width: int = 128,
    text_layers: int = 4,
    text_heads: int = 4,
    context_length: int = 12,
) -> dict[str, Any]:
    """An open_clip model config: a ModifiedResNet image tower and a small text transformer."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "layers": list(vision_layers),
            "width": vision_width,
            "head_width": 64,
            "patch_size": None,
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": vocab_size,
            "width": text_width,
            "heads": text_heads,
            "layers": text_layers,
            "pool_type": "argmax",
        },
    }


def tiny_clip_checkpoint(world: str = "demo") -> Path:
    """The shipped safetensors file (its config JSON lies beside it) of a world's tiny CLIP:
    ``"demo"`` (world v1, ``assets/world``) or ``"study"`` (world v2, ``assets/world_v2``).
    Load it as any open_clip checkpoint: ``openclip:{TINY_CLIP_ARCH}:{path}``."""
    if world not in _ASSETS:
        raise CroftError(
            f"no shipped tiny CLIP for world {world!r}; choose one of {sorted(_ASSETS)}"
        )
    folder = _ASSETS[world]
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise CroftError(
            f"the tiny world CLIP is missing at {path}; rebuild it with "
            f"`croft world pretrain --preset {world} --out {folder}`"
        )
    return path


def read_checkpoint_config(weights: str | Path | None = None) -> dict[str, Any]:
    """The JSON beside a tiny-CLIP safetensors file (default: the shipped one)."""
    path = Path(weights) if weights is not None else tiny_clip_checkpoint()
    if path.is_dir():
        path = path / WEIGHTS_NAME
    cfg_path = path.parent / CONFIG_NAME
    try:
        cfg = parse_json(cfg_path.read_text(), str(cfg_path))
    except CroftError:
        raise
    except (OSError, ValueError) as exc:
        raise CroftError(f"cannot read the tiny CLIP config {cfg_path}: {exc}") from exc
    for key in ("model_cfg", "preprocess_cfg", "tokenizer", "logit_scale"):
        if key not in cfg:
            raise CroftError(f"{cfg_path} lacks {key!r}; is it a tiny world CLIP config?")
    return cfg


def tiny_clip_config(weights: str | Path | None = None) -> dict[str, Any]:
    """The open_clip model config of the shipped (or given) tiny CLIP checkpoint."""
    return read_checkpoint_config(weights)["model_cfg"]


def register_tiny_clip(weights: str | Path | None = None) -> str:
    """Make :data:`TINY_CLIP_ARCH` known to open_clip (``add_model_config``); returns it.

    The architecture is taken from the given checkpoint's JSON (default: the shipped one).
    """
    _ensure_arch(tiny_clip_config(weights))
    return TINY_CLIP_ARCH


def _ensure_arch(model_cfg: dict[str, Any]) -> None:
    import open_clip

    if open_clip.get_model_config(TINY_CLIP_ARCH) != model_cfg:
        folder = Path(tempfile.mkdtemp(prefix="croft-arch-"))
        path = folder / f"{TINY_CLIP_ARCH}.json"
        path.write_text(json.dumps(model_cfg))
        open_clip.add_model_config(path)


def load_tiny_clip(weights: str | Path | None = None) -> tuple[Any, WordTokenizer, dict[str, Any]]:
    """``(model in eval mode, tokenizer, config JSON)`` of a tiny CLIP checkpoint."""
    import open_clip

    path = Path(weights) if weights is not None else tiny_clip_checkpoint()
    if path.is_dir():
        path = path / WEIGHTS_NAME
    cfg = read_checkpoint_config(path)
    if not path.is_file():
        raise CroftError(f"tiny CLIP weights not found: {path}")
    want = cfg.get("weights_sha256")
    if want and _sha256(path) != want:
        raise CroftError(
            f"{path} does not match the sha256 in {CONFIG_NAME} beside it; the two files "
            "come from different runs: rerun `croft world pretrain --out` for that folder"
        )
    _ensure_arch(cfg["model_cfg"])
    model = open_clip.create_model(TINY_CLIP_ARCH, pretrained=str(path))
    model.eval()
    tok = WordTokenizer(cfg["tokenizer"]["vocab"], int(cfg["tokenizer"]["context_length"]))
    return model, tok, cfg


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(
    out_dir: str | Path,
    state_dict: dict[str, torch.Tensor],
    model_cfg: dict[str, Any],
    tokenizer: WordTokenizer,
    *,
    logit_scale: float,
    training: dict[str, Any],
    world_version: str,
) -> Path:
    """Write the weights and config JSON into ``out_dir`` atomically; returns the weights path.

    Both files are first written beside their targets, then renamed into place with
    SIGINT/SIGTERM held back, so an interrupted save leaves the old pair or the new pair.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights, config = out / WEIGHTS_NAME, out / CONFIG_NAME
    tmp_w = out / f".{WEIGHTS_NAME}.{os.getpid()}.tmp"
    tmp_c = out / f".{CONFIG_NAME}.{os.getpid()}.tmp"
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        save_file(tensors, str(tmp_w), metadata={"format": "pt"})
        doc = {
            "architecture": TINY_CLIP_ARCH,
            "model_cfg": model_cfg,
            "preprocess_cfg": {
                "size": model_cfg["vision_cfg"]["image_size"],
                "mean": list(MEAN),
                "std": list(STD),
                "interpolation": "bicubic",
                "resize_mode": "shortest",
            },
            "tokenizer": tokenizer.to_dict(),
            "logit_scale": float(logit_scale),
            "world_version": world_version,
            "training": training,
            "weights_sha256": _sha256(tmp_w),
        }
        tmp_c.write_text(json.dumps(doc, indent=1) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        for p in (tmp_w, tmp_c):
            os.chmod(p, 0o666 & ~umask)
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            os.replace(tmp_w, weights)
            os.replace(tmp_c, config)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    finally:
        for p in (tmp_w, tmp_c):
            p.unlink(missing_ok=True)
    return weights
