"""The trained baselines' single-optimiser step on the shared loop (:mod:`croft.methods.loop`).

Every baseline minimises one loss with one optimiser (SGD with momentum, or AdamW) over
its parameters; :func:`train_epochs` turns such a loss into the loop's step hook, so the
schedule, batches, epoch selection and divergence handling are the loop's, exactly as for
CRoFT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.base import FitResult, FittedHead
from croft.methods.loop import Batch, Trainable, TrainConfig, lr_at_epoch, run_epochs

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class BaselineTrainConfig(TrainConfig):
    """:class:`TrainConfig` plus the optimiser choice of the trained baselines.

    ``momentum`` applies to SGD only, ``adam_eps`` to AdamW only.
    """

    optimizer: str = "sgd"
    adam_eps: float = 1e-8

    def check(self) -> None:
        super().check()
        if self.optimizer not in OPTIMIZERS:
            raise CroftError(f"optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")


def parse_floats(text: str, name: str) -> list[float]:
    """``"0.1,1,10"`` -> ``[0.1, 1.0, 10.0]`` (a comma-separated option)."""
    try:
        values = [float(v) for v in str(text).replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise CroftError(f"option {name}={text!r}: give comma-separated numbers") from None
    if not values:
        raise CroftError(f"option {name} is empty: give comma-separated numbers")
    return values


def make_optimizer(
    params: Sequence[nn.Parameter], cfg: BaselineTrainConfig
) -> torch.optim.Optimizer:
    lr = lr_at_epoch(cfg, 0)
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
    """Minimise ``loss_fn`` over ``params`` in the shared loop; select on validation.

    ``snapshot()`` returns a detached head of the current parameters; ``modules`` are in
    train mode during an epoch and eval mode otherwise (dropout). The global RNG should be
    seeded by the caller before initialising ``params``.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise CroftError("nothing to train: the method has no trainable parameters")
    opt = make_optimizer(params, cfg)

    def step(batch: Batch) -> dict[str, float]:
        loss = loss_fn(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    model = Trainable(params, [opt], step, snapshot, tuple(modules))
    return run_epochs(train, val, cfg, model, device=device, progress=progress)


def config_dict(cfg: Any) -> dict[str, Any]:
    """The config's JSON-able fields as a dict (for ``head.meta``); objects are left out."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if value is None or isinstance(value, (bool, int, float, str)):
            out[f.name] = value
    return out
