"""Shared training loop for the trained baselines, on cached features.

The same schedule as CRoFT's adapter (:mod:`croft.methods.croft`): the learning rate is
set once per epoch by :func:`croft.methods.croft.lr_at_epoch` (constant warm-up, then
cosine), epoch ``e`` uses view ``e mod V`` of every training image, batches are shuffled
with ``drop_last`` when a full batch exists, and the head of the first epoch with the best
validation accuracy is returned (strict improvement). Unlike CRoFT's two optimisers, one
optimiser (SGD with momentum, or AdamW) updates the given parameters with one loss.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.base import FitResult, FittedHead
from croft.methods.croft import epoch_batches, epoch_progress, lr_at_epoch

OPTIMIZERS = ("sgd", "adamw")
DTYPES = ("float32", "float64", "float16", "bfloat16")


@dataclass
class BaselineTrainConfig:
    """Optimisation settings of the trained baselines (CROFT_SPEC §6 shared defaults)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.002
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.1
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    optimizer: str = "sgd"  # or "adamw"
    adam_eps: float = 1e-8  # AdamW only
    logit_scale: float = -1.0  # < 0: the backbone's scale stored in the feature file
    selection: str = "val_acc"  # or "last"
    seed: int = 1
    dtype: str = "float32"

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise CroftError("epochs and batch_size must be at least 1")
        if self.optimizer not in OPTIMIZERS:
            raise CroftError(f"optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if self.dtype not in DTYPES:
            raise CroftError(f"dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        if self.selection not in ("val_acc", "last"):
            raise CroftError(f"selection {self.selection!r}: use 'val_acc' or 'last'")


@dataclass
class Batch:
    """One training batch: ``x`` ``(B, D)`` raw features of the epoch's view, ``y`` ``(B,)``,
    ``domains`` ``(B,)`` or ``None``."""

    x: torch.Tensor
    y: torch.Tensor
    domains: torch.Tensor | None


def resolve_logit_scale(train: FeatureSet, logit_scale: float) -> float:
    """The config's scale when > 0, else the backbone's from the feature file."""
    return float(logit_scale) if logit_scale > 0 else float(train.logit_scale)


def parse_floats(text: str, name: str) -> list[float]:
    """``"0.1,1,10"`` -> ``[0.1, 1.0, 10.0]`` (a comma-separated option)."""
    try:
        values = [float(v) for v in str(text).replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise CroftError(f"option {name}={text!r}: give comma-separated numbers") from None
    if not values:
        raise CroftError(f"option {name} is empty: give comma-separated numbers")
    return values


def check_val(train: FeatureSet, val: FeatureSet | None) -> None:
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


def make_optimizer(
    params: Sequence[nn.Parameter], cfg: BaselineTrainConfig
) -> torch.optim.Optimizer:
    lr = lr_at_epoch(cfg, 0)  # type: ignore[arg-type]  # duck-typed schedule fields
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train_epochs(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: BaselineTrainConfig,
    params: Sequence[nn.Parameter],
    loss_fn: Callable[[Batch], torch.Tensor],
    snapshot: Callable[[], FittedHead],
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    modules: Sequence[nn.Module] = (),
) -> FitResult:
    """Minimise ``loss_fn`` over ``params`` for ``cfg.epochs`` epochs; select on validation.

    ``snapshot()`` returns a detached head of the current parameters (called once per
    epoch); ``modules`` are put in train mode during an epoch and eval mode for snapshots
    (dropout). The global RNG should be seeded by the caller before initialising ``params``.
    """
    train.require_labels()
    check_val(train, val)
    dtype, dev = getattr(torch, cfg.dtype), torch.device(device)
    feats = train.features.to(dev, dtype)
    labels = train.labels.to(dev)
    doms = None if train.domains is None else train.domains.to(dev)
    params = [p for p in params if p.requires_grad]
    if not params:
        raise CroftError("nothing to train: the method has no trainable parameters")
    opt = make_optimizer(params, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    best: tuple[float, int, FittedHead] | None = None
    bar = epoch_progress(cfg.epochs, progress)
    for epoch in range(cfg.epochs):
        lr = lr_at_epoch(cfg, epoch)  # type: ignore[arg-type]
        for group in opt.param_groups:
            group["lr"] = lr
        for m in modules:
            m.train()
        x_epoch = feats if feats.dim() == 2 else feats[:, epoch % feats.shape[1]]
        t0 = time.perf_counter()
        losses = []
        for idx in epoch_batches(len(train), cfg.batch_size, gen):
            idx = idx.to(dev)
            batch = Batch(x_epoch[idx], labels[idx], None if doms is None else doms[idx])
            loss = loss_fn(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        for m in modules:
            m.eval()
        rec: dict[str, float] = {
            "epoch": float(epoch),
            "lr": lr,
            "loss": sum(losses) / len(losses),
            "seconds": time.perf_counter() - t0,
        }
        if not math.isfinite(rec["loss"]):
            raise CroftError(f"training diverged at epoch {epoch} (loss {rec['loss']}); lower lr")
        with torch.no_grad():
            head = snapshot()
        if val is not None:
            rec["val_acc"] = accuracy(head, val.eval_features(), val.labels)
            if cfg.selection == "val_acc" and (best is None or rec["val_acc"] > best[0]):
                best = (rec["val_acc"], epoch, head)
        history.append(rec)
        if bar is not None:
            bar.set_postfix(loss=f"{rec['loss']:.3f}", val=f"{rec.get('val_acc', math.nan):.3f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    if best is not None:
        return FitResult(best[2], history, best[1])
    return FitResult(head, history, cfg.epochs - 1)


def config_dict(cfg: Any) -> dict[str, Any]:
    """The config's JSON-able fields as a dict (for ``head.meta``); objects are left out."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if value is None or isinstance(value, (bool, int, float, str)):
            out[f.name] = value
    return out
