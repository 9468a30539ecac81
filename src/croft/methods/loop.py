"""The one training loop of every method that trains (CRoFT, CE adapter, the baselines).

A method supplies a :class:`Trainable`: its trained parameters, its optimisers (one or
several: CRoFT's official step owns two SGD optimisers that every loss steps), a
``step(batch) -> {loss name: value}`` hook that updates the parameters on one batch, and a
``snapshot()`` that returns a detached head of the current parameters. :func:`run_epochs`
does everything else, identically for every method:

* **schedule** (:func:`lr_at_epoch`): ``warmup_epochs`` epochs at the constant
  ``warmup_lr``, then ``lr·(1 + cos(π(e − w)/E))/2``, set on every optimiser once per epoch;
  ``lr`` is first resolved by ``lr_scaling`` (:func:`effective_lr`: as given, or the
  scale-aware rule for backbones whose logit scale is not CLIP's 100);
* **data**: epoch ``e`` uses cached view ``e mod V`` of every training image, batches are
  shuffled by a generator seeded with ``seed`` and ``drop_last`` when one full batch exists;
* **selection** (:class:`EpochSelector`, policy ``select_epoch``):

  - ``best`` (default): the first epoch with the highest validation accuracy (strict
    improvement), the last epoch without validation features;
  - ``last``: the last epoch;
  - ``best_after_warmup``: as ``best`` over the epochs after the warm-up (all epochs when
    training ends within the warm-up);
  - configs with ``val_every`` / ``val_max`` (the prompt learners, whose validation runs
    the text tower per image) may validate every k-th epoch only (and always the last)
    and on a fixed class-stratified subsample (:func:`validation_subset`); epochs not
    validated are never selected. The defaults (1, 0) validate every epoch on every image;

* **divergence**: training stops at the first non-finite step loss (or snapshot); the
  selected head among the epochs completed so far is returned and flagged; with no
  completed epoch a one-line :class:`~croft.errors.CroftError` names the likely cause. A
  head with non-finite parameters is never returned;
* **record**: per-epoch ``history`` (``epoch``, ``lr``, mean step losses, ``seconds``,
  ``val_acc``) and the ``selection`` dict of :func:`selection_record`.

The epoch logic (schedule, selector, record) is separate from the step and keeps its state
in plain floats and tensors, so a batched engine that trains many members of one shape at
once can reuse it member by member. The selection part (policy, :class:`EpochSelector`,
validation subset, :func:`selection_record`) lives in :mod:`croft.methods.epoch_selection`
and is re-exported here.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import nn

from croft.errors import CroftError
from croft.features.files import FeatureSet, check_logit_scale
from croft.limits import check_limit
from croft.methods.base import FitResult, FittedHead
from croft.methods.epoch_selection import KEPT_INIT_TOL as KEPT_INIT_TOL
from croft.methods.epoch_selection import POLICIES as POLICIES
from croft.methods.epoch_selection import (
    EpochSelector,
    param_change,
    select_policy,
    selection_record,
    validates,
    validation_subset,
)
from croft.progress import progress as progress_bar

log = logging.getLogger(__name__)

DTYPES = ("float32", "float64", "float16", "bfloat16")
#: ``lr_scaling``: ``none`` (``lr`` as given: the authors' rates, set for OpenAI CLIP's
#: logit scale 100) or ``logit_scale`` (the scale-aware rule of :func:`effective_lr`)
LR_SCALINGS = ("none", "logit_scale")
#: the logit scale the authors' learning rates were set for (OpenAI CLIP, ``s = 100``)
REFERENCE_LOGIT_SCALE = 100.0


@dataclass
class TrainConfig:
    """Optimisation settings shared by every trained method (the authors' CRoFT defaults).

    ``logit_scale < 0`` uses the backbone's scale stored in the feature file.
    ``select_epoch`` is the selection policy (``best | last | best_after_warmup``). The old
    option ``selection`` (``val_acc`` = ``best``, ``last``) is still accepted by
    :func:`croft.methods.make_config` and becomes ``select_epoch``.
    """

    OPTION_ALIASES: ClassVar[dict[str, tuple[str, dict[str, str]]]] = {
        "selection": ("select_epoch", {"val_acc": "best"}),
    }

    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 0.1
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    logit_scale: float = -1.0
    select_epoch: str = "best"
    seed: int = 1
    dtype: str = "float32"
    lr_scaling: str = "none"

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise CroftError("epochs and batch_size must be at least 1")
        check_limit("epochs", self.epochs, "option epochs")
        check_limit("batch_size", self.batch_size, "option batch_size")
        steps = self.epochs * max(1, self.inner_steps())
        check_limit("train_steps", steps, "epochs x inner steps per batch")
        for key in ("lr", "warmup_lr", "momentum", "weight_decay"):
            if getattr(self, key) < 0:
                raise CroftError(f"option {key} must be >= 0, got {getattr(self, key)}")
        if self.logit_scale >= 0:  # < 0: the feature file's scale
            check_logit_scale(self.logit_scale, "option logit_scale")
        check_seed(self.seed, "option seed")
        if self.lr_scaling not in LR_SCALINGS:
            raise CroftError(f"lr_scaling {self.lr_scaling!r}: use one of {', '.join(LR_SCALINGS)}")
        if self.warmup_epochs < 0:
            raise CroftError("warmup_epochs must be >= 0")
        if self.dtype not in DTYPES:
            raise CroftError(f"dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        select_policy(self)

    def inner_steps(self) -> int:
        """Optimiser steps per batch beyond the first (CRoFT's ``gen_step``); 1 here."""
        return 1


def check_seed(seed: int, where: str) -> int:
    """A seed torch and numpy both take: a whole number in [0, 2**32)."""
    if not 0 <= seed < 2**32:
        raise CroftError(f"{where} {seed} is out of range; use a whole number in [0, 2**32)")
    return seed


# ----------------------------------------------------------------------------- schedule
def effective_lr(cfg: Any, logit_scale: float) -> float:
    """The peak learning rate a fit uses: ``cfg.lr`` under ``cfg.lr_scaling``.

    ``none``: ``cfg.lr``. ``logit_scale`` (the scale-aware rule): a step moves the logits
    ``s·cos`` by about ``lr·s²·…`` under SGD (the gradient carries one factor ``s``, the
    logit another), so ``lr·(100/s)²`` gives a backbone of logit scale ``s`` the logit
    movement the authors' ``lr`` gave OpenAI CLIP (``s = 100``); AdamW's step does not
    scale with the gradient, so logits that carry ``s`` move by about ``lr·s`` and the rule
    is ``lr·(100/s)`` (a convention for heads whose trained term carries no ``s``, such as
    Tip-Adapter-F's cache). The warm-up rate ``warmup_lr`` is not scaled.
    """
    scaling = str(getattr(cfg, "lr_scaling", "none"))
    if scaling == "none":
        return float(cfg.lr)
    if not logit_scale > 0:
        raise CroftError(f"lr_scaling logit_scale needs a positive logit scale, got {logit_scale}")
    power = 1.0 if str(getattr(cfg, "optimizer", "sgd")) == "adamw" else 2.0
    return float(cfg.lr) * (REFERENCE_LOGIT_SCALE / float(logit_scale)) ** power


def resolve_lr(cfg: Any, train: FeatureSet) -> Any:
    """``cfg`` with ``lr`` the effective rate of :func:`effective_lr` (``lr_scaling`` then
    ``none``, so resolving twice is harmless); ``cfg`` itself when nothing changes."""
    if str(getattr(cfg, "lr_scaling", "none")) == "none":
        return cfg
    scale = resolve_logit_scale(train, getattr(cfg, "logit_scale", -1.0))
    return replace(cfg, lr=effective_lr(cfg, scale), lr_scaling="none")


def lr_at_epoch(cfg: TrainConfig, epoch: int) -> float:
    """Constant warm-up, then ``lr·(1+cos(π(e-w)/E))/2`` (Dassl's per-epoch wrapper)."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr
    return cfg.lr * (1.0 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / cfg.epochs)) / 2.0


def set_lr(optimizers: Sequence[torch.optim.Optimizer], lr: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr


def epoch_batches(n_rows: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches; ``drop_last`` when there is at least one full batch (Dassl)."""
    perm = torch.randperm(n_rows, generator=gen)
    if n_rows < batch_size:
        return [perm]
    k = n_rows // batch_size
    return [perm[i * batch_size : (i + 1) * batch_size] for i in range(k)]


# ------------------------------------------------------------------------ shared helpers
@dataclass
class Batch:
    """One training batch: ``x`` ``(B, D)`` raw features of the epoch's view, ``y`` ``(B,)``,
    ``domains`` ``(B,)`` or ``None``; ``local`` ``(B, P, D)`` the epoch view's local features
    (stored dtype, fp16) for a method that asks for them (``run_epochs(use_local=True)``)."""

    x: torch.Tensor
    y: torch.Tensor
    domains: torch.Tensor | None
    local: torch.Tensor | None = None


def resolve_logit_scale(train: FeatureSet, logit_scale: float) -> float:
    """The config's scale when > 0, else the backbone's from the feature file."""
    return float(logit_scale) if logit_scale > 0 else float(train.logit_scale)


def check_val(train: FeatureSet, val: FeatureSet | None) -> None:
    """Refuse validation features whose classes or dimension differ from the training set's."""
    if val is not None and (val.dim != train.dim or val.class_names != train.class_names):
        raise CroftError(
            f"{val.source}: validation features must share the training classes and "
            f"feature dimension ({train.dim})"
        )


@torch.no_grad()
def accuracy(head: FittedHead, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``head`` on raw features ``x`` ``(N, D)``."""
    return float((head.logits(head.check_features(x)).argmax(1) == y.to(x.device)).float().mean())


def frozen_copy(head: FittedHead) -> FittedHead:
    """A deep copy of ``head`` with every parameter detached from training."""
    out = copy.deepcopy(head)
    out.requires_grad_(False)
    return out


def all_finite(head: FittedHead) -> bool:
    """Whether every floating tensor of ``head``'s state is finite."""
    return all(
        bool(torch.isfinite(t).all()) for t in head.state_dict().values() if t.is_floating_point()
    )


# ----------------------------------------------------------------------------------- loop
@dataclass
class Trainable:
    """What a method hands the loop.

    ``params``: the trained tensors (for ``param_change``); ``optimizers``: every optimiser
    whose learning rate follows the schedule; ``step(batch)``: one update, returning its
    losses as floats (``"loss"`` first); ``snapshot()``: a detached head of the current
    parameters; ``modules``: put in train mode during an epoch, eval mode otherwise.
    """

    params: Sequence[torch.Tensor]
    optimizers: Sequence[torch.optim.Optimizer]
    step: Callable[[Batch], Mapping[str, float]]
    snapshot: Callable[[], FittedHead]
    modules: Sequence[nn.Module] = field(default_factory=tuple)


def _train_mode(modules: Sequence[nn.Module], on: bool) -> None:
    for m in modules:
        m.train(on)


def _run_epoch(
    model: Trainable,
    x: torch.Tensor,
    y: torch.Tensor,
    doms: torch.Tensor | None,
    cfg: TrainConfig,
    gen: torch.Generator,
    local: torch.Tensor | None = None,
) -> tuple[dict[str, float], bool]:
    """One epoch of steps; returns (mean losses, finite). Stops at a non-finite loss."""
    dev = x.device
    sums: dict[str, list[float]] = {}
    _train_mode(model.modules, True)
    try:
        for idx in epoch_batches(x.shape[0], cfg.batch_size, gen):
            idx = idx.to(dev)
            batch = Batch(x[idx], y[idx], None if doms is None else doms[idx])
            if local is not None:
                batch.local = local[idx]
            losses = model.step(batch)
            for key, value in losses.items():
                sums.setdefault(key, []).append(float(value))
            if not all(math.isfinite(float(v)) for v in losses.values()):
                return {k: v[-1] for k, v in sums.items()}, False
    finally:
        _train_mode(model.modules, False)
    return {k: sum(v) / len(v) for k, v in sums.items()}, True


def run_epochs(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: TrainConfig,
    model: Trainable,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    hint: str = "lower lr",
    use_local: bool = False,
) -> FitResult:
    """Train ``model`` for ``cfg.epochs`` epochs on ``train``; select an epoch on ``val``.

    ``hint`` completes the divergence message ("training diverged …; {hint}").
    ``use_local``: every batch carries the epoch view's local features (``Batch.local``;
    ``train`` must hold them).
    """
    train.require_labels()
    check_val(train, val)
    cfg = resolve_lr(cfg, train)
    policy = select_policy(cfg)
    dev = torch.device(device)
    feats = train.features.to(dev, getattr(torch, cfg.dtype))
    labels = train.labels.to(dev)
    doms = None if train.domains is None else train.domains.to(dev)
    local_all = train.require_local().to(dev) if use_local else None
    init = [p.detach().clone() for p in model.params]
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        head0 = model.snapshot()
    every = int(getattr(cfg, "val_every", 1))
    if val is not None:
        val = validation_subset(val, int(getattr(cfg, "val_max", 0)), cfg.seed)
    val_init = None if val is None else accuracy(head0, val.eval_features(), val.labels)
    selector = EpochSelector(policy, cfg.warmup_epochs)
    kept: tuple[FittedHead, list[torch.Tensor]] | None = None
    history: list[dict[str, float]] = []
    diverged: int | None = None
    bar = progress_bar(cfg.epochs, "epochs", "ep", enabled=progress, leave=False)
    for epoch in range(cfg.epochs):
        lr = lr_at_epoch(cfg, epoch)
        set_lr(model.optimizers, lr)
        x_epoch = feats if feats.dim() == 2 else feats[:, epoch % feats.shape[1]]
        loc = local_all
        if loc is not None and loc.dim() == 4:
            loc = loc[:, epoch % loc.shape[1]]
        t0 = time.perf_counter()
        losses, finite = _run_epoch(model, x_epoch, labels, doms, cfg, gen, loc)
        if finite:
            with torch.no_grad():
                head = model.snapshot()
            finite = all_finite(head)
        if not finite:
            diverged = epoch
            log.warning("training diverged at epoch %d (loss %s); %s", epoch, losses, hint)
            break
        rec: dict[str, float] = {"epoch": float(epoch), "lr": lr, **losses}
        rec["seconds"] = time.perf_counter() - t0
        checked = val is None or validates(epoch, cfg.epochs, every)
        if val is not None and checked:
            rec["val_acc"] = accuracy(head, val.eval_features(), val.labels)
        history.append(rec)
        if checked and selector.offer(epoch, rec.get("val_acc")):
            kept = (head, [p.detach().clone() for p in model.params])
        bar.set_postfix(loss=f"{rec['loss']:.3f}", val=f"{rec.get('val_acc', math.nan):.3f}")
        bar.update(1)
    bar.close()
    if kept is None or selector.epoch is None:
        raise CroftError(
            f"training diverged at epoch {diverged} before any epoch completed "
            f"(non-finite loss); {hint}"
        )
    change = param_change(init, kept[1])
    record = selection_record(
        policy, cfg.warmup_epochs, selector.epoch, history, val_init, change, diverged
    )
    return FitResult(kept[0], history, selector.epoch, record)
