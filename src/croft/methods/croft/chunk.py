"""One chunk of the batched engine: members of one group stacked and trained together.

:class:`Chunk` stacks the members' data (each distinct training set once), text features,
per-member scalars (:func:`hyper`) and ``(G, D, D)`` matrices; :func:`fit_chunk` runs the
epochs with the per-member logic of :func:`croft.methods.loop.run_epochs` (schedule,
views, own batch order, selection, divergence, record), reading values to the host once
per epoch. See :mod:`croft.methods.croft.engine` for the API.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.base import METHODS, FitResult
from croft.methods.croft.head import AdapterHead
from croft.methods.croft.steps import (
    STEPS,
    BatchedMethod,
    BatchedParams,
    Hyper,
    Structure,
    adapt,
)
from croft.methods.loop import (
    EpochSelector,
    check_val,
    epoch_batches,
    lr_at_epoch,
    param_change,
    resolve_logit_scale,
    resolve_lr,
    select_policy,
    selection_record,
)
from croft.methods.text import class_text_features
from croft.progress import progress as progress_bar

log = logging.getLogger(__name__)


def engine_of(method: str) -> BatchedMethod:
    """The method's registered :class:`BatchedMethod`; a one-line error when it has none."""
    engine = METHODS.get(method).batched
    if engine is None:
        raise CroftError(f"method {method!r} has no batched step")
    return engine


def structure_of(method: str, cfg: Any) -> Structure:
    """The step branches a member's config selects (shared by every member of a group)."""
    return engine_of(method).structure(cfg)


# ---------------------------------------------------------------------------- stacking
def hyper(cfgs: Sequence[Any], scales: Sequence[float], dtype: torch.dtype, dev: torch.device,
          *, evaluation: bool = False) -> Hyper:  # fmt: skip
    """Per-member scalars as ``(G,)`` tensors (training ratios, or prediction ratios)."""

    def col(values: Sequence[float]) -> torch.Tensor:
        return torch.tensor([float(v) for v in values], dtype=dtype, device=dev)

    ratio = [c.ratio for c in cfgs]
    ratio_text = [c.ratio_text for c in cfgs]
    if evaluation:
        ratio = [c.ratio if c.eval_ratio < 0 else c.eval_ratio for c in cfgs]
        ratio_text = [c.ratio_text if c.eval_ratio_text < 0 else c.eval_ratio_text for c in cfgs]
    return Hyper(
        {
            "ratio": col(ratio),
            "ratio1": col([1.0 - r for r in ratio]),
            "ratio_text": col(ratio_text),
            "ratio_text1": col([1.0 - r for r in ratio_text]),
            "scale": col(scales),
            "lambda1": col([getattr(c, "lambda1", 0.0) for c in cfgs]),
            "lambda2": col(
                [getattr(c, "lambda2_effective", getattr(c, "lambda2", 0.0)) for c in cfgs]
            ),
            "lambda_c": col([getattr(c, "lambda_c", 1.0) for c in cfgs]),
            "temperature": col([getattr(c, "energy_temperature", 1.0) for c in cfgs]),
            "momentum": col([c.momentum for c in cfgs]),
            "weight_decay": col([c.weight_decay for c in cfgs]),
            "lr": col([lr_at_epoch(c, 0) for c in cfgs]),
        }
    )


def _unique(items: Sequence[Any]) -> tuple[list[Any], list[int]]:
    """Distinct objects (by identity) and each item's index among them."""
    seen: dict[int, int] = {}
    out: list[Any] = []
    for it in items:
        if id(it) not in seen:
            seen[id(it)] = len(out)
            out.append(it)
    return out, [seen[id(it)] for it in items]


class Validation:
    """Members' validation sets, deduplicated and padded: ``x`` ``(U, Nmax, D)``."""

    def __init__(self, vals: Sequence[FeatureSet], dtype: torch.dtype, dev: torch.device):
        uniq, of = _unique(vals)
        self.sizes = [len(vals[i]) for i in range(len(vals))]
        n_max, dim = max(len(v) for v in uniq), uniq[0].dim
        self.x = torch.zeros(len(uniq), n_max, dim, dtype=dtype, device=dev)
        self.y = torch.full((len(uniq), n_max), -1, dtype=torch.long, device=dev)
        for i, v in enumerate(uniq):
            self.x[i, : len(v)] = v.eval_features().to(dev, dtype)
            self.y[i, : len(v)] = v.labels.to(dev)
        self.of = torch.tensor(of, device=dev)

    @torch.no_grad()
    def accuracy(self, p: BatchedParams, t: torch.Tensor, ev: Hyper) -> list[float]:
        """Top-1 accuracy per member, as :func:`croft.methods.loop.accuracy` computes it."""
        z = adapt(self.x[self.of], p.full("fc_i"), ev.m("ratio"), ev.m("ratio1"))
        zt = adapt(t, p.full("fc_t"), ev.m("ratio_text"), ev.m("ratio_text1"))
        hit = ((ev.m("scale") * z @ zt.mT).argmax(-1) == self.y[self.of]).cpu()
        return [float(hit[g, :n].float().mean()) for g, n in enumerate(self.sizes)]


# ------------------------------------------------------------------------------- chunk
class Chunk:
    """One stack of members of one group, trained together."""

    def __init__(self, method: str, members: Sequence[tuple[FeatureSet, Any, Any]], dev):  # noqa: ANN001
        self.method, self.dev = method, dev
        self.engine = engine_of(method)
        self.trains = [m[0] for m in members]
        self.vals = [m[1] for m in members]
        self.cfgs = [m[2] for m in members]
        cfg0, train0 = self.cfgs[0], self.trains[0]
        self.structure = self.engine.structure(cfg0)
        self.dtype = getattr(torch, cfg0.dtype)
        uniq, of = _unique(self.trains)
        self.feats = torch.stack([u.features.to(dev, self.dtype) for u in uniq])
        self.labels = torch.stack([u.labels.to(dev) for u in uniq])
        self.of = torch.tensor(of, device=dev)[:, None]
        self.t = torch.stack(
            [
                class_text_features(tr.require_text(), c.ensemble).to(dev, self.dtype)
                for tr, c in zip(self.trains, self.cfgs, strict=True)
            ]
        )
        scales = [
            resolve_logit_scale(tr, c.logit_scale)
            for tr, c in zip(self.trains, self.cfgs, strict=True)
        ]
        self.scales = scales
        self.hp = hyper(self.cfgs, scales, self.dtype, dev)
        self.ev = hyper(self.cfgs, scales, self.dtype, dev, evaluation=True)
        residual = self.structure.variant == "paper" or self.structure.residual
        self.params = BatchedParams.create(len(members), train0.dim, self.dtype, dev, residual)
        self.val = None if self.vals[0] is None else Validation(self.vals, self.dtype, dev)
        self.size = len(members)

    def epoch(self, epoch: int, gens: Sequence[torch.Generator]) -> tuple[list, list[bool]]:
        """Train one epoch; returns per-batch losses ``[batch][loss][member]`` and finiteness."""
        cfgs, p = self.cfgs, self.params
        lrs = [lr_at_epoch(c, epoch) for c in cfgs]
        self.hp.values["lr"] = torch.tensor(lrs, dtype=self.dtype, device=self.dev)
        feats = (
            self.feats if self.feats.dim() == 3 else self.feats[:, :, epoch % self.feats.shape[2]]
        )
        n_rows, bs = self.feats.shape[1], cfgs[0].batch_size
        idx = torch.stack([torch.stack(epoch_batches(n_rows, bs, g)) for g in gens]).to(self.dev)
        step = STEPS[self.structure.variant]
        outs = []
        for b in range(idx.shape[1]):
            ib = idx[:, b]
            out = step(
                p, feats[self.of, ib], self.labels[self.of, ib], self.t, self.hp, self.structure
            )
            outs.append(torch.stack([out.loss, out.loss_ce, out.loss1, out.loss2]))
        losses = torch.stack(outs)  # (batches, 4, G)
        ok = torch.isfinite(losses).all(0).all(0)
        for k in ("fc_i", "fc_t", "generator"):
            ok &= torch.isfinite(p.mats[k].detach()).flatten(1).all(1)
        return losses.cpu().tolist(), ok.cpu().tolist()

    def head(self, g: int, mats: Sequence[torch.Tensor]) -> AdapterHead:
        """The member's head for matrices ``mats`` = (fc_i, fc_t, generator) as stored."""
        cfg, train = self.cfgs[g], self.trains[g]
        head = AdapterHead.for_config(train.class_names, train.dim, self.scales[g], cfg)
        eye = torch.eye(train.dim, dtype=self.dtype, device=self.dev)
        full = [m + eye if self.params.residual else m for m in mats]
        head.text.copy_(self.t[g])
        head.fc_i.copy_(full[0])
        head.fc_t.copy_(full[1])
        head.generator.copy_(full[2])
        head.meta = self.engine.meta(cfg)
        return head.to(self.dev)


KEYS = ("loss", "loss_ce", "loss1", "loss2")

# glibc malloc serves blocks above its mmap threshold (128 KiB, raised dynamically up to
# 32 MiB) by fresh mmaps and returns the top of the heap to the OS above its trim threshold,
# so the engine's per-step activations ((G, B or C, D) and (G, D, D) tensors: 0.5-8 MiB
# each) were unmapped after every step and page-faulted back (zeroed) on the next: at the
# Setup-I shape (C = 400, G = 8) ~5,200 faults and ~8 ms of system time per member-step,
# which made batching slower than sequential fits. tune_allocator() sets, once per
# process and only for CPU training under glibc, a fixed mmap threshold of 32 MiB (glibc's
# maximum) and a trim threshold of 2 GiB: those blocks are then reused from the heap.
# Cost: up to ~2 GiB of freed memory stays mapped to the process instead of going back to
# the OS. OPT-IN (CROFT_MALLOC_TUNE=1): measured on the shared 2-vCPU machine it took the
# Setup-I shape from 0.67-0.81x to 0.98-1.02x sequential in a one-thread benchmark, but
# `croft demo --synthetic` went from 0.8 s to 31.5 s of system time (38 s -> 260 s wall)
# with it, so it is off unless asked for. (The same as starting Python with
# MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647.) The official and CE
# steps now keep those tensors in per-chunk buffers (croft.methods.croft.workspace): ~0-170
# faults per Setup-I member-step without this setting, and batching no slower than
# sequential fits there (BENCHMARKS.md), so the setting is no longer needed for that.
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**31 - 1
_TUNED: list[bool] = []


def tune_allocator(device: torch.device) -> bool:
    """Set glibc's malloc thresholds for the engine (see above); True when they are set."""
    if _TUNED:
        return _TUNED[0]
    if device.type != "cpu" or not sys.platform.startswith("linux"):
        return False
    if os.environ.get("CROFT_MALLOC_TUNE", "0").strip() != "1":
        _TUNED.append(False)
        return False
    ok = False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        ok = bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(
            libc.mallopt(m_trim_threshold, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):  # not glibc
        ok = False
    log.debug("malloc thresholds for the engine %s", "set" if ok else "not set (not glibc)")
    _TUNED.append(ok)
    return ok


def fit_chunk(chunk: Chunk, tick: Callable[[int], None]) -> list[FitResult | CroftError]:
    """Train every member of ``chunk``; one result (or the divergence error) per member."""
    tune_allocator(chunk.dev)
    g_n, cfgs, p = chunk.size, chunk.cfgs, chunk.params
    names = ("fc_i", "fc_t", "generator")
    init = {k: p.mats[k].detach().clone() for k in names}
    kept = {k: v.clone() for k, v in init.items()}
    gens = [torch.Generator().manual_seed(c.seed) for c in cfgs]
    val_init = chunk.val.accuracy(p, chunk.t, chunk.ev) if chunk.val else [None] * g_n
    selectors = [EpochSelector(select_policy(c), c.warmup_epochs) for c in cfgs]
    history: list[list[dict[str, float]]] = [[] for _ in range(g_n)]
    diverged: list[int | None] = [None] * g_n
    for epoch in range(cfgs[0].epochs):
        t0 = time.perf_counter()
        losses, ok = chunk.epoch(epoch, gens)
        accs = chunk.val.accuracy(p, chunk.t, chunk.ev) if chunk.val else [None] * g_n
        seconds = (time.perf_counter() - t0) / g_n
        take: list[int] = []
        for g in range(g_n):
            if diverged[g] is not None:
                continue
            if not ok[g]:
                diverged[g] = epoch
                log.warning("member %d: training diverged at epoch %d", g, epoch)
                continue
            rec: dict[str, float] = {"epoch": float(epoch), "lr": lr_at_epoch(cfgs[g], epoch)}
            for j, key in enumerate(KEYS):
                vals = [b[j][g] for b in losses]
                rec[key] = sum(vals) / len(vals)
            rec["seconds"] = seconds
            if accs[g] is not None:
                rec["val_acc"] = accs[g]
            history[g].append(rec)
            if selectors[g].offer(epoch, accs[g]):
                take.append(g)
        if take:
            sel = torch.tensor(take, device=chunk.dev)
            for k in names:
                kept[k][sel] = p.mats[k].detach()[sel]
        tick(g_n)
        if all(d is not None for d in diverged):
            break
    return [_result(chunk, g, kept, init, selectors[g], history[g], val_init[g], diverged[g])
            for g in range(g_n)]  # fmt: skip


def _result(chunk: Chunk, g: int, kept, init, selector: EpochSelector, history, val_init,  # noqa: ANN001
            diverged: int | None) -> FitResult | CroftError:  # fmt: skip
    cfg = chunk.cfgs[g]
    if selector.epoch is None:
        return CroftError(
            f"training diverged at epoch {diverged} before any epoch completed "
            f"(non-finite loss); {chunk.engine.hint}"
        )
    mats = [kept[k][g] for k in ("fc_i", "fc_t", "generator")]
    change = param_change([init[k][g] for k in ("fc_i", "fc_t", "generator")], mats)
    record = selection_record(
        select_policy(cfg), cfg.warmup_epochs, selector.epoch, history, val_init, change, diverged
    )
    return FitResult(chunk.head(g, mats), history, selector.epoch, record)


def fit_one(method: str, train: FeatureSet, val: FeatureSet | None, cfg: Any, *,
            device: str | torch.device = "cpu", progress: bool = False) -> FitResult:  # fmt: skip
    """A single fit on the engine: a chunk of one member (``croft.methods.fit``'s path for a
    method with a batched step). Raises the divergence error when no epoch completed."""
    train.require_labels()
    check_val(train, val)
    cfg = resolve_lr(cfg, train)
    torch.manual_seed(cfg.seed)  # as every single fit does (the global generator's state)
    chunk = Chunk(method, [(train, val, cfg)], torch.device(device))
    bar = progress_bar(cfg.epochs, "epochs", "ep", enabled=progress, leave=False)
    try:
        (result,) = fit_chunk(chunk, bar.update)
    finally:
        bar.close()
    if isinstance(result, CroftError):
        raise result
    return result
