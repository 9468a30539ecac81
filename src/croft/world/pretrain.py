"""Contrastive pre-training of the tiny world CLIP (``croft world pretrain``).

A pool of images is rendered once (all object classes in the pre-training styles, plus a
few textures), deterministically from the seed; every step draws a batch, samples a fresh
caption per image (:func:`croft.world.captions.caption`), and takes one AdamW step on the
symmetric CLIP loss, in which identical captions of a batch count as matches (soft
targets). The budget is a number of steps (reproducible); ``minutes`` adds a wall-clock
cap, and the cosine schedule then follows whichever of the two runs out first.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from croft.errors import CroftError
from croft.world.captions import caption, world_vocabulary
from croft.world.config import PretrainConfig
from croft.world.render import COLOURS, TEXTURES, TINTS, render_object, render_texture
from croft.world.shapes import OBJECT_CLASSES
from croft.world.tiny_clip import MEAN, STD, build_model_config, save_checkpoint
from croft.world.tokenizer import WordTokenizer

__all__ = ["Pool", "build_pool", "pretrain"]

_log = logging.getLogger(__name__)

_COLOUR_NAMES = list(COLOURS)
_CLASS_NAMES = list(OBJECT_CLASSES)
_TEXTURE_NAMES = list(TEXTURES)


@dataclass
class Pool:
    """Rendered pre-training images and what is in them (-1 where not applicable)."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    classes: np.ndarray  # int (N,), index into OBJECT_CLASSES, -1 for a texture
    styles: np.ndarray  # int (N,), index into PretrainConfig.styles
    colours: np.ndarray  # int (N,), index into COLOURS
    textures: np.ndarray  # int (N,), index into TEXTURES, -1 for an object


def _render_range(
    args: tuple[int, int, int, tuple[str, ...], float, int, dict[str, str], float, bool],
) -> tuple[np.ndarray, ...]:
    seed, start, stop, styles, texture_fraction, size, typical, typical_rate, tints = args
    n = stop - start
    images = np.zeros((n, size, size, 3), np.uint8)
    meta = np.full((4, n), -1, np.int64)
    for j, i in enumerate(range(start, stop)):
        rng = np.random.default_rng([seed, 11, i])
        if rng.random() < texture_fraction:
            t = int(rng.integers(len(_TEXTURE_NAMES)))
            images[j] = render_texture(_TEXTURE_NAMES[t], rng, size)
            meta[3, j] = t
        else:
            c, s = int(rng.integers(len(_CLASS_NAMES))), int(rng.integers(len(styles)))
            name = _CLASS_NAMES[c]
            force = typical.get(name) if rng.random() < typical_rate else None
            tint = int(rng.integers(len(TINTS))) if tints else None  # v2: uniform, no class tie
            images[j], colour = render_object(
                name, styles[s], rng, size, colour=force, background=tint
            )
            meta[:3, j] = (c, s, _COLOUR_NAMES.index(colour))
    return images, meta


def build_pool(cfg: PretrainConfig, workers: int = 1, progress: bool = True) -> Pool:
    """Render ``cfg.pool_size`` images; the same seed gives the same pool for any ``workers``."""
    from croft.progress import progress as progress_bar

    chunk = 1000
    jobs = [
        (
            cfg.seed,
            a,
            min(a + chunk, cfg.pool_size),
            cfg.styles,
            cfg.texture_fraction,
            cfg.image_size,
            cfg.typical_colours,
            cfg.typical_colour_rate,
            cfg.background_tints,
        )
        for a in range(0, cfg.pool_size, chunk)
    ]
    bar = progress_bar(cfg.pool_size, "render pool", "img", enabled=progress)
    parts: list[tuple[np.ndarray, ...]] = []
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            for res in ex.map(_render_range, jobs):
                parts.append(res)
                bar.update(len(res[0]))
    else:
        for job in jobs:
            parts.append(_render_range(job))
            bar.update(len(parts[-1][0]))
    bar.close()
    images = np.concatenate([p[0] for p in parts])
    meta = np.concatenate([p[1] for p in parts], axis=1)
    return Pool(images, meta[0], meta[1], meta[2], meta[3])


def _captions(
    pool: Pool, idx: np.ndarray, cfg: PretrainConfig, rng: np.random.Generator
) -> list[str]:
    out = []
    for i in idx:
        t = int(pool.textures[i])
        if t >= 0:
            out.append(caption(rng, "photo", None, texture=_TEXTURE_NAMES[t]))
            continue
        name = _CLASS_NAMES[int(pool.classes[i])]
        out.append(
            caption(
                rng,
                cfg.styles[int(pool.styles[i])],
                name,
                _COLOUR_NAMES[int(pool.colours[i])],
                name_rate=cfg.name_rate,
                aliases=cfg.aliases,
                confusions=cfg.confusions,
                confusion_rate=cfg.confusion_rate,
                generic_rate=cfg.generic_rate,
                colour_rate=cfg.colour_rate,
                style_word_rate=cfg.style_word_rate,
            )
        )
    return out


def _lr_at(progress: float, cfg: PretrainConfig) -> float:
    w = cfg.warmup_fraction
    if progress < w:
        return cfg.lr * (progress + 1e-3) / w
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - w) / (1.0 - w))))


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def pretrain(
    out_dir: str | Path,
    cfg: PretrainConfig | None = None,
    *,
    minutes: float | None = None,
    workers: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Pre-train the tiny CLIP and write it to ``out_dir``; returns the weights path.

    ``minutes`` caps the whole run (rendering included). The old checkpoint in
    ``out_dir`` stays until the new one is complete; SIGTERM is handled like Ctrl-C, so
    either ends the run cleanly (no partial files) and leaves the old checkpoint.
    Training runs on ``threads`` torch threads (default 1, set for the process). Progress
    lines go to ``log`` (default: this module's logger).
    """
    import threading

    main = threading.current_thread() is threading.main_thread()
    prev = signal.signal(signal.SIGTERM, _raise_interrupt) if main else None
    try:
        return _pretrain(out_dir, cfg, minutes, workers, threads, progress, log or _log.info)
    finally:
        if main:
            signal.signal(signal.SIGTERM, prev)


def _check_args(cfg: PretrainConfig, minutes: float | None) -> None:
    from croft.world.render import STYLES

    if cfg.steps < 1 or cfg.pool_size < cfg.batch_size:
        raise CroftError("pretrain: need steps >= 1 and pool_size >= batch_size")
    if minutes is not None and minutes <= 0:
        raise CroftError(f"pretrain: --minutes must be > 0, got {minutes}")
    for s in cfg.styles:
        if s not in STYLES:
            raise CroftError(f"pretrain: unknown style {s!r}; known: {sorted(STYLES)}")


def _model_and_optimiser(cfg: PretrainConfig, tok: WordTokenizer) -> tuple[Any, dict, Any]:
    """The tiny open_clip CLIP (train mode), its config, and AdamW with weight decay on
    matrices only (no decay on embeddings, norms, biases and the logit scale)."""
    import open_clip
    import torch

    model_cfg = build_model_config(
        tok.vocab_size,
        image_size=cfg.image_size,
        embed_dim=cfg.embed_dim,
        vision_layers=cfg.vision_layers,
        vision_width=cfg.vision_width,
        text_width=cfg.text_width,
        text_layers=cfg.text_layers,
        text_heads=cfg.text_heads,
        context_length=cfg.context_length,
    )
    model = open_clip.CLIP(**model_cfg)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embedding" in n]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    return model, model_cfg, opt


def _contrastive_step(model: Any, opt: Any, x: Any, text: Any) -> float:
    """One AdamW step on the symmetric CLIP loss; identical captions count as matches
    (soft targets). Returns the loss; the logit scale is clamped to [1, 100]."""
    import torch
    import torch.nn.functional as F

    same = (text[:, None, :] == text[None, :, :]).all(-1).float()
    target = same / same.sum(1, keepdim=True)
    img_f = F.normalize(model.encode_image(x), dim=-1)
    txt_f = F.normalize(model.encode_text(text), dim=-1)
    logits = model.logit_scale.exp() * img_f @ txt_f.T
    loss = 0.5 * (
        -(target * F.log_softmax(logits, 1)).sum(1).mean()
        - (target * F.log_softmax(logits.T, 1)).sum(1).mean()
    )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return float(loss.detach())


def _train(
    model: Any,
    opt: Any,
    pool: Pool,
    tok: WordTokenizer,
    cfg: PretrainConfig,
    rng: np.random.Generator,
    train_budget: float | None,
    progress: bool,
) -> tuple[int, float, str]:
    """The step loop: batches drawn without replacement from the pool (reshuffled when
    exhausted), random flips, a fresh caption per image, cosine lr over the step or time
    budget. Returns ``(steps done, loss EMA, "steps" | "minutes")``."""
    import torch

    from croft.progress import progress as progress_bar

    images = torch.from_numpy(pool.images).permute(0, 3, 1, 2).contiguous()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    n = len(images)
    order = rng.permutation(n)
    cursor = 0
    t_train = time.monotonic()
    bar = progress_bar(cfg.steps, "pretrain", "step", enabled=progress)
    loss_ema = float("nan")
    step = 0
    stopped_by = "steps"
    while step < cfg.steps:
        frac = step / cfg.steps
        if train_budget is not None:
            tfrac = (time.monotonic() - t_train) / train_budget
            if tfrac >= 1.0 and step > 0:
                stopped_by = "minutes"
                break
            frac = max(frac, tfrac)
        for g in opt.param_groups:
            g["lr"] = _lr_at(frac, cfg)
        if cursor + cfg.batch_size > n:
            order, cursor = rng.permutation(n), 0
        idx = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        x = (images[torch.from_numpy(idx)].float() - mean) / std
        flip = torch.from_numpy(rng.random(len(idx)) < 0.5).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
        v = _contrastive_step(model, opt, x, tok(_captions(pool, idx, cfg, rng)))
        step += 1
        loss_ema = v if math.isnan(loss_ema) else 0.98 * loss_ema + 0.02 * v
        bar.update(1)
        if step % 10 == 0 or step == cfg.steps:
            bar.set_postfix(loss=f"{loss_ema:.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
    bar.close()
    return step, loss_ema, stopped_by


def _pretrain(
    out_dir: str | Path,
    cfg: PretrainConfig | None,
    minutes: float | None,
    workers: int | None,
    threads: int | None,
    progress: bool,
    log: Callable[[str], None],
) -> Path:
    t0 = time.monotonic()
    import torch

    cfg = cfg or PretrainConfig()
    _check_args(cfg, minutes)
    budget_s = None if minutes is None else 60.0 * minutes
    torch.set_num_threads(max(1, threads or 1))
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if cfg.pool_size >= 4000 else 1
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 23])

    pool = build_pool(cfg, workers=workers, progress=progress)
    pool_s = time.monotonic() - t0
    log(f"rendered {len(pool.images)} pre-training images in {pool_s:.1f} s")

    tok = WordTokenizer(world_vocabulary(), cfg.context_length)
    model, model_cfg, opt = _model_and_optimiser(cfg, tok)
    t_train = time.monotonic()
    train_budget = None if budget_s is None else max(1e-3, budget_s - (t_train - t0))
    step, loss_ema, stopped_by = _train(model, opt, pool, tok, cfg, rng, train_budget, progress)
    wall = time.monotonic() - t0
    scale = model.logit_scale.exp().item()
    log(
        f"pre-trained {step} steps in {wall / 60:.1f} min (stopped by {stopped_by}); "
        f"loss {loss_ema:.3f}, logit scale {scale:.2f}"
    )
    model.eval()
    training = {
        "config": cfg.to_dict(),
        "steps_done": step,
        "stopped_by": stopped_by,
        "minutes_cap": minutes,
        "wall_s": round(wall, 1),
        "pool_s": round(pool_s, 1),
        "final_loss_ema": round(loss_ema, 4),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
    }
    return save_checkpoint(
        out_dir,
        model.state_dict(),
        model_cfg,
        tok,
        logit_scale=scale,
        training=training,
        world_version=cfg.world_version,
    )
