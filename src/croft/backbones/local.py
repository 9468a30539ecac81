"""Local (patch) features of open_clip image towers, in the joint image-text space.

Computed in the same forward pass as the global feature (a hook reads the tensor the
global head starts from, so the global feature is exactly ``model.encode_image``'s):

* **ViT** (``VisionTransformer``): the patch tokens of the last block through the final
  norm and the projection, ``ln_post(x[:, 1:]) @ proj`` ``(B, P, D)`` with ``P`` the patch
  grid (14 × 14 = 196 for ViT-B/16 at 224 px), as GL-MCM and LoCoOp do;
* **ResNet** (``ModifiedResNet``): the attention pool's value path applied to every cell of
  the spatial map, ``c_proj(v_proj(x_hw + pos_hw))`` ``(B, H·W, D)`` (the map the pooled
  query attends over; 7 × 7 = 49 for RN50 at 224 px).

Other towers (attentional poolers, timm or HF models) have no local features here: asking
for them is one clear error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from croft.errors import CroftError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Bytes of one stored local value (fp16).
LOCAL_BYTES = 2


def _kind(visual: Any) -> str | None:
    name = type(visual).__name__
    if name == "VisionTransformer" and getattr(visual, "attn_pool", None) is None:
        return "vit"
    if name == "ModifiedResNet" and hasattr(visual, "attnpool"):
        return "resnet"
    return None


def local_tokens(model: nn.Module, what: str) -> int:
    """``P``, the number of local features per image of ``model``'s image tower."""
    visual = getattr(model, "visual", None)
    kind = _kind(visual)
    if kind == "vit":
        gh, gw = visual.grid_size
        return int(gh) * int(gw)
    if kind == "resnet":
        return int(visual.attnpool.positional_embedding.shape[0]) - 1
    raise CroftError(
        f"{what} has no local (patch) features croft can read (image tower "
        f"{type(visual).__name__}); local features need an open_clip ViT without an "
        "attentional pooler or a CLIP ResNet with an attention pool"
    )


def encode_image_local(model: nn.Module, images: torch.Tensor, what: str) -> tuple[Any, Any]:
    """``(global (B, D), local (B, P, D))`` of ``images`` in one pass (model dtype)."""
    import torch.nn.functional as F

    visual = model.visual
    kind = _kind(visual)
    if kind is None:
        local_tokens(model, what)  # raises the one-line error
    seen: dict[str, Any] = {}
    if kind == "vit":
        module = visual.transformer

        def hook(_mod: Any, _inp: Any, out: Any) -> None:
            seen["x"] = out

    else:
        module = visual.attnpool

        def hook(_mod: Any, inp: Any, _out: Any) -> None:
            seen["x"] = inp[0]

    handle = module.register_forward_hook(hook)
    try:
        pooled = model.encode_image(images)
    finally:
        handle.remove()
    x = seen["x"]
    if kind == "vit":
        tokens = visual.ln_post(x[:, 1:])
        local = tokens @ visual.proj if visual.proj is not None else tokens
    else:
        pool = visual.attnpool
        b, c = x.shape[:2]
        cells = x.reshape(b, c, -1).permute(0, 2, 1)  # (B, HW, C)
        cells = cells + pool.positional_embedding[1:].to(cells.dtype)
        local = F.linear(F.linear(cells, pool.v_proj.weight, pool.v_proj.bias), pool.c_proj.weight)
        local = local + pool.c_proj.bias
    return pooled, local


def local_size_text(num_images: int, views: int, tokens: int, dim: int) -> str:
    """One line stating what the local features of an extraction will take on disk."""
    per = tokens * dim * LOCAL_BYTES * views
    total = per * num_images
    return (
        f"local features: {tokens} x {dim} fp16 per view ({_human(per)} per image), "
        f"{_human(total)} for {num_images} images"
    )


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover
