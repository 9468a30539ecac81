"""Prompts that share a prefix, through an open_clip CLIP text tower, without padding.

The prompt learners encode ``B × C`` prompts ``[head_b] [tail_c]``: a head ``(P, W)`` per
context (``[SOS] ctx_1 … ctx_M``, the same for every class) and a tail ``(S, W)`` per
class (class name, full stop, EOS, padding). The CLIP text transformer is causal and is
pooled at the EOS token, so two exact savings apply:

* tokens after the last EOS change no pooled output: the tails are cut after it
  (``S`` = the longest class's tail up to its EOS, not the context length);
* a head token attends only to head tokens, so its states in every layer are the same
  for every class: they are computed once per head (``B·P`` token passes, not ``B·C·P``)
  and each class's tail attends to them (keys and values of the head, once per head).

The arithmetic is the same up to float rounding (other matmul shapes): float64 logits
agree with the full-length per-prompt forward to ~1e-14 (``tests/test_prompt_speed.py``).
Only open_clip's ``CLIP`` with its own ``ResidualAttentionBlock`` (nn.MultiheadAttention
with packed in-projections, causal mask, argmax pooling) qualifies
(:func:`shared_prefix_encoder` returns None otherwise; the caller then runs every prompt
through ``encode_text_embeddings``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Encoder = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _block_ok(block: Any) -> bool:
    attn = getattr(block, "attn", None)
    return (
        type(block).__name__ == "ResidualAttentionBlock"
        and isinstance(attn, nn.MultiheadAttention)
        and attn._qkv_same_embed_dim
        and attn.in_proj_weight is not None
        and not hasattr(block, "ln_1_kv")
        and all(hasattr(block, n) for n in ("ln_1", "ln_2", "mlp", "ls_1", "ls_2"))
    )


def shared_prefix_encoder(model: Any) -> Encoder | None:
    """``encode(head, tail, eos)`` for an open_clip ``CLIP`` ``model``, or None when the
    model is not one this module computes exactly.

    ``head`` ``(B, P, W)`` and ``tail`` ``(C, S, W)`` raw token embeddings (no positional
    term), ``eos`` ``(C,)`` long: the EOS position of class ``c`` inside its tail
    (``0 <= eos < S``). Returns the pooled, projected text features ``(B, C, D)`` of the
    prompts ``cat(head[b], tail[c])`` (float32, differentiable in ``head`` and ``tail``).
    """
    tr = getattr(model, "transformer", None)
    mask = getattr(model, "attn_mask", None)
    pos = getattr(model, "positional_embedding", None)
    if tr is None or mask is None or pos is None or not hasattr(model, "ln_final"):
        return None
    if getattr(model, "text_pool_type", "argmax") != "argmax":
        return None
    blocks = list(getattr(tr, "resblocks", []))
    if not blocks or not all(_block_ok(b) for b in blocks):
        return None
    n = mask.shape[0]
    causal = torch.full((n, n), float("-inf"), device=mask.device).triu_(1)
    if mask.shape != (n, n) or not torch.equal(mask.float(), causal):
        return None

    def encode(head: torch.Tensor, tail: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        dt = pos.dtype
        b, p, w = head.shape
        c, s, _ = tail.shape
        xh = head.to(dt) + pos[:p]  # (B, P, W)
        xt = (tail.to(dt) + pos[p : p + s])[None].expand(b, c, s, w)  # (B, C, S, W)
        tail_mask = mask[:s, :s].to(dt)
        for block in blocks:
            ah, at = _attention(block.attn, block.ln_1(xh), block.ln_1(xt), mask[:p, :p], tail_mask)
            xh = xh + block.ls_1(ah)
            xt = xt + block.ls_1(at)
            xh = xh + block.ls_2(block.mlp(block.ln_2(xh)))
            xt = xt + block.ls_2(block.mlp(block.ln_2(xt)))
        idx = eos.to(xt.device)[None, :, None, None].expand(b, c, 1, w)
        pooled = model.ln_final(xt.gather(2, idx)[:, :, 0])  # (B, C, W)
        proj = model.text_projection
        if proj is not None:
            pooled = proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
        return pooled.float()

    return encode


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """``(..., L, W)`` -> ``(..., H, L, W/H)``."""
    return x.unflatten(-1, (h, x.shape[-1] // h)).transpose(-3, -2)


def _attention(
    attn: nn.MultiheadAttention,
    qh: torch.Tensor,
    qt: torch.Tensor,
    head_mask: torch.Tensor,
    tail_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal self-attention of the heads ``qh`` ``(B, P, W)`` and of every tail ``qt``
    ``(B, C, S, W)`` over its own head then itself (nn.MultiheadAttention's arithmetic)."""
    h = attn.num_heads
    bias = attn.in_proj_bias
    kvh = F.linear(qh, attn.in_proj_weight, bias)  # (B, P, 3W)
    kvt = F.linear(qt, attn.in_proj_weight, bias)  # (B, C, S, 3W)
    q1, k1, v1 = (_heads(t, h) for t in kvh.chunk(3, dim=-1))  # (B, H, P, d)
    q2, k2, v2 = (_heads(t, h) for t in kvt.chunk(3, dim=-1))  # (B, C, H, S, d)
    scale = 1.0 / math.sqrt(q1.shape[-1])
    wh = torch.softmax((q1 @ k1.transpose(-1, -2)) * scale + head_mask.to(q1.dtype), dim=-1)
    oh = wh @ v1  # (B, H, P, d)
    to_head = (q2 @ k1[:, None].transpose(-1, -2)) * scale  # (B, C, H, S, P)
    to_tail = (q2 @ k2.transpose(-1, -2)) * scale + tail_mask  # (B, C, H, S, S)
    wt = torch.softmax(torch.cat([to_head, to_tail], dim=-1), dim=-1)
    p = k1.shape[-2]
    ot = wt[..., :p] @ v1[:, None] + wt[..., p:] @ v2  # (B, C, H, S, d)

    def merge(o: torch.Tensor) -> torch.Tensor:
        return attn.out_proj(o.transpose(-3, -2).flatten(-2))

    return merge(oh), merge(ot)
