"""Frozen CLIP-like backbones loaded from local weights, with their preprocessing.

Spec strings (:func:`load_backbone`)::

    openclip:ARCH:PATH   open_clip architecture + a local checkpoint: a ``.pt``/``.bin``/
                         ``.pth`` state dict (``torch.load(weights_only=True)``; may be
                         wrapped as {"state_dict": ...} or {"model": ...}, ``module.``
                         prefixes are stripped) or a ``.safetensors`` file.
                         e.g. openclip:ViT-B-16:/models/vitb16_laion2b.safetensors
    openclip:ARCH@TAG    an open_clip pretrained tag (e.g. ViT-B-16@openai); downloads from
                         the hub, so only with allow_download=True (CLI: --allow-download).
    openai:PATH          an OpenAI CLIP TorchScript archive (ViT-B-16.pt, RN50.pt as the
    openai:ARCH:PATH     ``clip`` package saves them). Only its tensors are read: the
                         archive is parsed as data and nothing in it runs (see
                         :mod:`croft.backbones.torchscript`); the open_clip model is
                         inferred from the tensor shapes, or taken from ARCH when given.
                         A zip with a ``code/`` entry passed as ``openclip:ARCH:PATH`` is
                         read the same way.
    hf:DIR               a transformers CLIPModel directory (config.json + model.safetensors
                         or pytorch_model.bin, tokenizer files, preprocessor_config.json);
                         needs the extra ``pip install "croft-ood[hf]"``.

Prefixes are registered in :data:`BACKBONES` (a :class:`croft.registry.Registry` of
:class:`BackboneKind`), so a plug-in adds a prefix without editing the loader.

Offline first: a local path never touches the network; a missing file, an unknown
architecture or a hub tag without permission fails at once with one CroftError line.

QuickGELU: OpenAI weights were trained with QuickGELU, so ``openai:`` always builds with
it (also for an ARCH named without ``-quickgelu``) and records ``quick_gelu: true`` in the
fingerprint. For ``openclip:`` the activation comes from ``quick_gelu=`` / an
``ARCH-quickgelu`` name / the arch config, else from the weights' metadata (a
``quick_gelu`` or ``model_cfg`` entry in the checkpoint wrapper or safetensors header, an
``open_clip_config.json`` beside the file, the pretrained tag); an explicit choice that
contradicts the metadata is refused.

Preprocessing travels with the weights: pretrained tag or ``open_clip_config.json`` or
checkpoint metadata for ``openclip:`` (else what all of open_clip's tags for ARCH agree on,
else OpenAI CLIP's: mean/std below, bicubic, shorter side + centre crop); OpenAI's for
``openai:``; ``preprocessor_config.json`` for ``hf:``.

``croft-tiny-vit`` (ViT width 64, 2 layers, patch 8, 32 px; text width 64, 2 layers,
context 16; embedding 32) is registered for fast tests; it has no pretrained weights.
"""

from __future__ import annotations

from croft.backbones.archs import (
    TINY_VIT,
    TINY_VIT_CONFIG,
    list_architectures,
    register_architecture,
)
from croft.backbones.base import Backbone
from croft.backbones.hashing import file_sha256
from croft.backbones.loader import BACKBONES, BackboneKind, BackboneSpec, load_backbone, parse_spec
from croft.backbones.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Preprocess

register_architecture(TINY_VIT, TINY_VIT_CONFIG)

__all__ = [
    "BACKBONES",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "TINY_VIT",
    "TINY_VIT_CONFIG",
    "Backbone",
    "BackboneKind",
    "BackboneSpec",
    "Preprocess",
    "file_sha256",
    "list_architectures",
    "load_backbone",
    "parse_spec",
    "register_architecture",
]
