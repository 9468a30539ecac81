"""Prompt learning through a frozen text encoder (CoOp, CoCoOp, DPLCLIP).

A prompt is ``[SOS] [ctx_1 … ctx_M] [class name tokens] [.] [EOS] [pad…]``: the ``M``
context token embeddings are learned, everything else comes from the frozen text tower.
The tower is anything that satisfies :class:`TextTower` (``croft.backbones``'s
``Backbone`` does): ``token_embedding`` gives the raw token embeddings (before positional
embeddings) and ``encode_text_embeddings`` runs the rest of the text encoder on them
(positional embeddings, transformer, final norm, pooling at the EOS token of ``tokens``,
projection), so ``encode_text_embeddings(token_embedding(t), t) == encode_text(texts)``;
:class:`ClassPrompts` checks that identity once and refuses a tower that breaks it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.base import FittedHead, register_head

#: Encode prompts with a shared prefix and no padding where the tower offers it exactly
#: (:meth:`ClassPrompts.encode`); False: every prompt at full length (the reference path,
#: kept for tests and benchmarks).
SHARED_PREFIX = True


@runtime_checkable
class TextTower(Protocol):
    """The text side of a backbone, as the prompt learners use it."""

    @property
    def dim(self) -> int:
        """Output feature dimension ``D`` (the image feature dimension)."""
        ...

    @property
    def logit_scale(self) -> float: ...

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``(n, L)``."""
        ...

    def token_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raw token embeddings ``(n, L, W)`` (no positional embedding)."""
        ...

    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Differentiable text features ``(n, D)`` from embeddings ``(n, L, W)``."""
        ...

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Text features ``(n, D)``."""
        ...


def resolve_text_tower(
    method: str,
    backbone: str,
    train: FeatureSet,
    text_tower: TextTower | None,
    device: str | torch.device,
) -> tuple[TextTower, str]:
    """The tower to train with and the backbone spec to record in the head.

    ``text_tower`` (an object) wins; else ``backbone`` or ``train.extra['backbone_spec']`` is
    loaded with ``croft.backbones.load_backbone`` on ``device``.
    """
    spec = backbone or str(train.extra.get("backbone_spec", "") or "")
    if isinstance(text_tower, str):
        raise CroftError(
            f"text_tower={text_tower!r}: text_tower takes a TextTower object; to name a "
            "backbone use backbone=<spec>"
        )
    if text_tower is not None:
        return text_tower, spec
    if not spec:
        raise CroftError(
            f"{train.source}: {method} needs the backbone's text encoder but no backbone is "
            "known; pass backbone=<spec> (or text_tower=...) or use features that record "
            "extra['backbone_spec']"
        )
    return load_tower(spec, device), spec


def load_tower(spec: str, device: str | torch.device) -> TextTower:
    """Load backbone ``spec`` through ``croft.backbones`` (imported lazily)."""
    try:
        from croft.backbones import load_backbone  # type: ignore[import-not-found]
    except ImportError as exc:
        raise CroftError(
            f"cannot load backbone {spec!r}: croft.backbones is unavailable ({exc}); "
            "pass text_tower=... instead"
        ) from None
    return load_backbone(spec, device=device)


def tower_parameters(tower: Any) -> list[nn.Parameter]:
    """The tower's parameters: its own (an ``nn.Module``) or its ``model``'s."""
    params = getattr(tower, "parameters", None)
    if callable(params):
        return list(params())
    model = getattr(tower, "model", None)
    return list(model.parameters()) if isinstance(model, nn.Module) else []


@contextmanager
def frozen(tower: Any) -> Iterator[None]:
    """Within the block, no tower parameter requires grad and an ``nn.Module`` tower is in
    eval mode; both are restored afterwards."""
    live = [p for p in tower_parameters(tower) if p.requires_grad]
    training = tower.training if isinstance(tower, nn.Module) else None
    for p in live:
        p.requires_grad_(False)
    if isinstance(tower, nn.Module):
        tower.eval()
    try:
        yield
    finally:
        for p in live:
            p.requires_grad_(True)
        if isinstance(tower, nn.Module) and training:
            tower.train()


def prompt_text(class_name: str, n_ctx: int, placeholder: str = "X") -> str:
    """``"X X … X class name."`` with ``n_ctx`` placeholders (``_`` in names becomes space)."""
    return " ".join([placeholder] * n_ctx + [class_name.replace("_", " ") + "."])


def init_context(
    tower: TextTower, n_ctx: int, ctx_init: str, std: float, device: torch.device
) -> torch.Tensor:
    """Initial context ``(M, W)``: the token embeddings of ``ctx_init`` (``M`` = its token
    count) or ``N(0, std²)`` draws from the global RNG (``M = n_ctx``)."""
    if ctx_init.strip():
        tok = tower.tokenize([ctx_init.strip()]).to(device)
        m = int((tok[0] != 0).sum()) - 2  # minus SOS and EOS
        if m < 1:
            raise CroftError(f"ctx_init={ctx_init!r} has no tokens; give words or leave it empty")
        with torch.no_grad():
            return tower.token_embedding(tok)[0, 1 : 1 + m].detach().float().clone()
    width = int(tower.token_embedding(tower.tokenize(["X"]).to(device)).shape[-1])
    return torch.randn(n_ctx, width, device=device) * std


class ClassPrompts:
    """Frozen token embeddings around the learned context, one prompt per class.

    ``prefix`` ``(C, 1, W)`` is the SOS embedding, ``suffix`` ``(C, L-1-M, W)`` the class
    name, full stop, EOS and padding; ``tokens`` ``(C, L)`` locate the EOS for pooling.
    """

    def __init__(
        self,
        tower: TextTower,
        class_names: Sequence[str],
        n_ctx: int,
        device: str | torch.device,
        check: bool = True,
    ) -> None:
        self.tower, self.n_ctx = tower, int(n_ctx)
        texts = [prompt_text(c, n_ctx) for c in class_names]
        tokens = tower.tokenize(texts).to(device)
        ctx_ids = tokens[:, 1 : 1 + n_ctx]
        if tokens.shape[1] < n_ctx + 3 or not bool((ctx_ids == ctx_ids[0, 0]).all()):
            raise CroftError(
                "the text tower's tokenizer does not map the context placeholder 'X' to one "
                f"token per position (or the context length {tokens.shape[1]} is too short "
                f"for {n_ctx} context tokens); use a CLIP BPE tokenizer or fewer n_ctx"
            )
        with torch.no_grad():
            emb = tower.token_embedding(tokens)
            if check:
                ref = tower.encode_text(texts).float()
                got = tower.encode_text_embeddings(emb, tokens).float()
                if not torch.allclose(got, ref.to(got.device), rtol=1e-3, atol=1e-4):
                    raise CroftError(
                        "the text tower's encode_text_embeddings(token_embedding(t), t) differs "
                        "from encode_text(texts); token_embedding must return raw token "
                        "embeddings without positional embeddings"
                    )
        self.tokens = tokens
        self.prefix = emb[:, :1].detach()
        self.suffix = emb[:, 1 + n_ctx :].detach()
        self._shared = self._shared_encoder(check) if SHARED_PREFIX else None

    def _shared_encoder(self, check: bool) -> tuple[Any, torch.Tensor, int] | None:
        """``(encode, eos, S)`` when the tower encodes a shared prefix exactly
        (``shared_prefix_encoder``, e.g. :mod:`croft.backbones.text_prefix`): ``eos`` the
        EOS position in each class's tail, ``S`` the tail length kept (up to the last EOS)."""
        make = getattr(self.tower, "shared_prefix_encoder", None)
        enc = make() if callable(make) else None
        eos = self.tokens.argmax(-1) - (1 + self.n_ctx)  # argmax pooling: the EOS token
        if enc is None or not bool((eos >= 0).all()):
            return None
        shared = (enc, eos, int(eos.max()) + 1)
        if check:  # once: the shared-prefix path against the full-length forward
            g = torch.Generator().manual_seed(0)  # not the global RNG: fits stay the same
            ctx = torch.randn(1, self.n_ctx, self.prefix.shape[-1], generator=g)
            ctx = ctx.to(self.prefix.device)
            with torch.no_grad():
                ref = self._encode_full(ctx)
                got = self._encode_shared(shared, ctx)
            if not torch.allclose(got, ref, rtol=1e-3, atol=1e-4):
                return None
        return shared

    @property
    def num_classes(self) -> int:
        return int(self.tokens.shape[0])

    def encode(self, ctx: torch.Tensor) -> torch.Tensor:
        """Text features for context ``ctx``: ``(M, W)`` -> ``(C, D)``; ``(B, M, W)`` ->
        ``(B, C, D)`` (one context per image or per domain). Raw, not normalised."""
        single = ctx.dim() == 2
        ctx = ctx[None] if single else ctx
        if self._shared is not None:
            out = self._encode_shared(self._shared, ctx)
        else:
            out = self._encode_full(ctx)
        return out[0] if single else out

    def _encode_shared(self, shared: tuple[Any, torch.Tensor, int], ctx: torch.Tensor):  # noqa: ANN202
        """``(B, M, W)`` -> ``(B, C, D)``: head ``[SOS] ctx`` once per context, the class
        tails cut after their EOS (exact: causal attention, pooled at EOS)."""
        enc, eos, s = shared
        dt = self.prefix.dtype
        sos = self.prefix[:1].expand(ctx.shape[0], 1, self.prefix.shape[-1])
        return enc(torch.cat([sos, ctx.to(dt)], dim=1), self.suffix[:, :s], eos)

    def _encode_full(self, ctx: torch.Tensor) -> torch.Tensor:
        """``(B, M, W)`` -> ``(B, C, D)``: every prompt at full length, one by one."""
        b, c = ctx.shape[0], self.num_classes
        dt = self.prefix.dtype
        ctx_all = ctx.to(dt)[:, None].expand(b, c, *ctx.shape[1:])  # (B, C, M, W)
        pre = self.prefix[None].expand(b, *self.prefix.shape)
        suf = self.suffix[None].expand(b, *self.suffix.shape)
        emb = torch.cat([pre, ctx_all, suf], dim=2).reshape(b * c, -1, self.prefix.shape[-1])
        tok = self.tokens[None].expand(b, *self.tokens.shape).reshape(b * c, -1)
        return self.tower.encode_text_embeddings(emb, tok).float().reshape(b, c, -1)


@register_head
class PromptTextHead(FittedHead):
    """Cosine classifier on learned prompts' class text features (CoOp; DPLCLIP ``train_mean``).

    Buffers: ``text`` ``(C, D)`` class text features of the learned prompts (unit norm),
    ``ctx`` ``(M, W)`` the learned context (provenance; prediction does not need the tower).
    Logits ``(N, C) = s · n(x) · n(text)ᵀ``.
    """

    head_name = "prompt_text"

    def __init__(
        self,
        class_names: list[str],
        feature_dim: int,
        logit_scale: float,
        n_ctx: int = 16,
        width: int = 512,
        backbone: str = "",
    ) -> None:
        super().__init__(class_names, feature_dim, logit_scale)
        self.register_buffer("text", torch.zeros(len(class_names), feature_dim))
        self.register_buffer("ctx", torch.zeros(n_ctx, width))
        self.backbone = backbone

    def spec(self) -> dict[str, Any]:
        n_ctx, width = self.ctx.shape
        return {"n_ctx": int(n_ctx), "width": int(width), "backbone": self.backbone}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * F.normalize(x, dim=-1) @ F.normalize(self.text, dim=-1).T

    def classifier(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.logit_scale * F.normalize(self.text, dim=-1)
        return w, self.text.new_zeros(self.num_classes)

    @torch.no_grad()
    def zero_shot_point(self, zs: FittedHead) -> FittedHead:
        """The zero-shot text features (interpolation then runs in text-feature space,
        since learned and hand-written prompts have different context shapes)."""
        head = copy.deepcopy(self)
        head.text.copy_(zs.text.to(head.text))
        return head


def prompt_text_head(
    class_names: list[str], text: torch.Tensor, ctx: torch.Tensor, scale: float, backbone: str
) -> PromptTextHead:
    """A :class:`PromptTextHead` holding ``n(text)`` ``(C, D)`` and ``ctx`` ``(M, W)``."""
    head = PromptTextHead(class_names, text.shape[1], scale, ctx.shape[0], ctx.shape[1], backbone)
    head.text.copy_(F.normalize(text.detach().float(), dim=-1))
    head.ctx.copy_(ctx.detach().float())
    return head.to(text.device)


class _TowerCache:
    """The tower and its class prompts; shared, never copied (``deepcopy`` returns it)."""

    def __init__(self, tower: TextTower | None = None, prompts: ClassPrompts | None = None):
        self.tower, self.prompts = tower, prompts

    def __deepcopy__(self, memo: dict[int, Any]) -> _TowerCache:
        return self


class TowerHead(FittedHead):
    """Base of heads that run the text tower at prediction time (CoCoOp, DPLCLIP ``image``).

    The tower is not part of the saved head: :meth:`attach_text_tower` supplies it, or the
    first prediction loads ``backbone`` with ``croft.backbones.load_backbone`` onto the
    head's device (a full backbone load, once per head). Every prediction then encodes
    ``C`` prompts per image (``N·C`` text-encoder forwards), in chunks of ``chunk`` images.
    """

    chunk = 64

    def __init__(
        self, class_names: list[str], feature_dim: int, logit_scale: float, backbone: str = ""
    ) -> None:
        super().__init__(class_names, feature_dim, logit_scale)
        self.backbone = backbone
        self._tower = _TowerCache()

    def attach_text_tower(self, tower: TextTower, prompts: ClassPrompts | None = None) -> None:
        """Use ``tower`` (on the head's device) for prediction instead of loading ``backbone``."""
        self._tower = _TowerCache(tower, prompts)

    def _device(self) -> torch.device:
        return next(iter(list(self.parameters()) + list(self.buffers()))).device

    def class_prompts(self, n_ctx: int) -> ClassPrompts:
        cache = self._tower
        if cache.tower is None:
            if not self.backbone:
                raise CroftError(
                    f"this {self.head_name} head needs its text encoder and records no backbone; "
                    "call head.attach_text_tower(tower) before predicting"
                )
            cache.tower = load_tower(self.backbone, self._device())
        if cache.prompts is None or cache.prompts.n_ctx != n_ctx:
            cache.prompts = ClassPrompts(cache.tower, self.class_names, n_ctx, self._device())
        return cache.prompts

    def image_context(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image context ``(N, M, W)`` for raw features ``x`` ``(N, D)``."""
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``s · n(x_i) · n(t_ic)ᵀ``, ``t_ic`` the class-``c`` prompt of image ``i``'s context."""
        out = []
        for xs in x.split(self.chunk):
            ctx = self.image_context(xs)
            text = F.normalize(self.class_prompts(ctx.shape[1]).encode(ctx), dim=-1)
            xn = F.normalize(xs, dim=-1)
            out.append(self.logit_scale * torch.einsum("nd,ncd->nc", xn, text))
        return torch.cat(out) if out else x.new_zeros(0, self.num_classes)
