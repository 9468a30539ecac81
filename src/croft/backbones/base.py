"""The :class:`Backbone` interface: a frozen CLIP-like model with its preprocessing."""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from croft.backbones.preprocess import Preprocess
from croft.errors import CroftError
from croft.fileio import canonical_hash

if TYPE_CHECKING:
    import torch
    from torch import nn

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
TEXT_BATCH = 512


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise CroftError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return precision


class Backbone(abc.ABC):
    """A frozen image/text encoder pair (parameters never require grad, eval mode always).

    Attributes:
        name: architecture name (e.g. ``ViT-B-16``).
        dim: embedding dimension D shared by both encoders.
        logit_scale: the learned temperature with ``exp`` applied (100 for OpenAI CLIP).
        preprocess: how images must be prepared (travels with the weights).
        device: where the model lives; inputs are moved there.
        precision: ``fp32``, ``fp16`` or ``bf16`` (weights and activations).
        source: ``openclip``, ``openai`` or ``hf``.
        spec: the spec string it was loaded from.

    Outputs of the encoders are raw (not L2-normalised) and always float32.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        dim: int,
        preprocess: Preprocess,
        precision: str,
        source: str,
        spec: str,
        architecture: dict[str, Any],
        weight_files: Sequence[Path],
        quick_gelu: bool | None,
    ) -> None:
        import torch

        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.dim = int(dim)
        self.preprocess = preprocess
        self.precision = check_precision(precision)
        self.source = source
        self.spec = spec
        self.architecture = json.loads(json.dumps(architecture))  # tuples -> lists
        self.weight_files = [Path(p) for p in weight_files]
        self.quick_gelu = quick_gelu
        self.device = next(model.parameters()).device
        self._sha256: str | None = None
        if precision != "fp32":
            self.model.to(getattr(torch, PRECISIONS[precision]))
        self.logit_scale = float(self._logit_scale_param().detach().float().exp().item())

    # -- what a concrete backbone provides ------------------------------------------------

    @abc.abstractmethod
    def _logit_scale_param(self) -> torch.Tensor:
        """The model's log temperature."""

    @abc.abstractmethod
    def _encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in model dtype/device -> (B,D)."""

    @abc.abstractmethod
    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n,L) on device -> (n,D); must look up tokens through ``_token_embedding_module``."""

    @abc.abstractmethod
    def _token_embedding_module(self) -> nn.Embedding:
        """The text tower's token embedding table."""

    @abc.abstractmethod
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (n, L) int64 token ids (L = the model's context length), on CPU."""

    # -- public API -----------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, PRECISIONS[self.precision])

    @property
    def context_length(self) -> int:
        """Token sequence length L that :meth:`tokenize` produces."""
        return int(self.tokenize([""]).shape[1])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) preprocessed images -> (B,D) raw float32 features (no grad)."""
        import torch

        self._check_images(images)
        with torch.no_grad():
            out = self._encode_image(images.to(self.device, self.dtype))
        return out.float()

    def local_tokens(self) -> int:
        """``P``, the local (patch) features per image :meth:`encode_image_local` gives; a
        backbone without them raises one CroftError line."""
        raise CroftError(
            f"backbone {self.name} ({self.source}) provides no local (patch) features; "
            "use an open_clip or OpenAI CLIP (ViT or attention-pool ResNet) backbone"
        )

    def _encode_image_local(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,3,H,W) in model dtype/device -> ((B,D) global, (B,P,D) local)."""
        self.local_tokens()
        raise NotImplementedError  # pragma: no cover - local_tokens raised

    def encode_image_local(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,3,S,S) preprocessed images -> ``(global (B,D), local (B,P,D))`` raw float32
        features from one forward pass; ``global`` equals :meth:`encode_image`'s. The local
        features are projected into the joint space (see :mod:`croft.backbones.local`)."""
        import torch

        self._check_images(images)
        with torch.no_grad():
            pooled, local = self._encode_image_local(images.to(self.device, self.dtype))
        return pooled.float(), local.float()

    def _check_images(self, images: torch.Tensor) -> None:
        size = self.preprocess.image_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (size, size):
            raise CroftError(
                f"{self.name} expects images of shape (B, 3, {size}, {size}), got "
                f"{tuple(images.shape)}; prepare them with backbone.preprocess.eval_transform()"
            )

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n,L) token ids -> (n,D) raw float32 features (no grad)."""
        import torch

        chunks = []
        with torch.no_grad():
            for start in range(0, tokens.shape[0], TEXT_BATCH):
                chunk = tokens[start : start + TEXT_BATCH].to(self.device)
                chunks.append(self._encode_tokens(chunk).float())
        if not chunks:
            return torch.zeros(0, self.dim, device=self.device)
        return torch.cat(chunks)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (n,D) raw float32 features (no grad)."""
        if isinstance(texts, str):
            texts = [texts]
        return self.encode_tokens(self.tokenize(list(texts)))

    def token_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n,L) token ids -> (n,L,W) token embeddings (no positional term), model dtype."""
        return self._token_embedding_module()(tokens.to(self.device))

    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(n,L,W) token embeddings + the (n,L) tokens they stand for -> (n,D) float32.

        Runs the text tower on ``embeds`` in place of the looked-up token embeddings; the
        tokens only locate the end-of-text position for pooling. Differentiable: gradients
        flow to ``embeds`` (the encoder's own parameters stay frozen).
        """
        table = self._token_embedding_module()
        if embeds.ndim != 3 or tuple(embeds.shape[:2]) != tuple(tokens.shape):
            raise CroftError(
                f"embeddings of shape (n, L, W) must match tokens (n, L); got "
                f"{tuple(embeds.shape)} and {tuple(tokens.shape)}"
            )
        if embeds.shape[2] != table.embedding_dim:
            raise CroftError(
                f"{self.name} token embeddings have width {table.embedding_dim}, "
                f"got {embeds.shape[2]}"
            )
        replacement = embeds.to(self.device, table.weight.dtype)
        handle = table.register_forward_hook(lambda _mod, _inp, _out: replacement)
        try:
            out = self._encode_tokens(tokens.to(self.device))
        finally:
            handle.remove()
        return out.float()

    def to(self, device: Any) -> Backbone:
        """Move the model to ``device`` (in place) and return self."""
        import torch

        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def weights_sha256(self) -> str:
        """SHA-256 of the weight file (several files: of their names and hashes), cached."""
        from croft.backbones import hashing

        if self._sha256 is None:
            digests = [hashing.file_sha256(p) for p in self.weight_files]
            if len(digests) == 1:
                self._sha256 = digests[0]
            else:
                joined = "\n".join(
                    f"{p.name} {d}" for p, d in zip(self.weight_files, digests, strict=True)
                )
                self._sha256 = hashlib.sha256(joined.encode()).hexdigest()
        return self._sha256

    def fingerprint(self) -> dict[str, Any]:
        """What determines this backbone's features: JSON-ready, path-independent."""
        return {
            "source": self.source,
            "name": self.name,
            "architecture": self.architecture,
            "weights_sha256": self.weights_sha256(),
            "precision": self.precision,
            "preprocess": self.preprocess.to_dict(),
            "quick_gelu": self.quick_gelu,
        }

    def fingerprint_hash(self) -> str:
        """Hex SHA-256 of the canonical JSON of :meth:`fingerprint`."""
        return canonical_hash(self.fingerprint())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, "
            f"precision={self.precision!r}, device={str(self.device)!r}, "
            f"image_size={self.preprocess.image_size})"
        )
