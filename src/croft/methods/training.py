"""The trained baselines' single-optimiser step on the shared loop (:mod:`croft.methods.loop`).

Every baseline minimises one loss with one optimiser (SGD with momentum, or AdamW) over
its parameters; :func:`train_epochs` turns such a loss into the loop's step hook, so the
schedule, batches, epoch selection and divergence handling are the loop's, exactly as for
CRoFT.

**Two sets of defaults** (option ``protocol``, docs/deviations.md#baselines):

* ``original`` (the default): each baseline's optimiser settings as its own paper/code
  states them (each config's ``ORIGINAL``; see each method's module docstring for the
  source);
* ``croft_repo``: the settings the CRoFT repository shares across its baselines (SGD,
  lr 0.002, momentum 0.9, weight decay 0.1, batch 32, 30 epochs, one warm-up epoch at
  1e-5; :data:`CROFT_REPO`), plus a method's own ``CROFT_REPO`` entries. These are the
  values croft used for every baseline before ``protocol`` existed, so
  ``protocol: croft_repo`` fits are bit-identical to those.

An option given explicitly always wins over either table: the protocol only fills the
options left unset (``None``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.base import FitResult, FittedHead
from croft.methods.loop import (
    Batch,
    Trainable,
    TrainConfig,
    frozen_copy,
    lr_at_epoch,
    run_epochs,
)

OPTIMIZERS = ("sgd", "adamw")
BASELINE_PROTOCOLS = ("original", "croft_repo")
CROFT_REPO: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 32,
    "lr": 0.002,
    "momentum": 0.9,
    "weight_decay": 0.1,
    "warmup_epochs": 1,
    "warmup_lr": 1e-5,
    "optimizer": "sgd",
    "adam_eps": 1e-8,
}


def apply_protocol(cfg: Any) -> None:
    """Fill every option of ``cfg`` left at ``None`` from its protocol's table.

    ``original``: ``cfg.ORIGINAL``, then :data:`CROFT_REPO` for what it does not name;
    ``croft_repo``: ``cfg.CROFT_REPO_EXTRA``, then :data:`CROFT_REPO`. Strings (from
    ``--set``) are converted to the table value's type.
    """
    protocol = str(cfg.protocol)
    if protocol not in BASELINE_PROTOCOLS:
        raise CroftError(f"protocol {protocol!r}: use one of {', '.join(BASELINE_PROTOCOLS)}")
    first = cfg.ORIGINAL if protocol == "original" else cfg.CROFT_REPO_EXTRA
    table = {**CROFT_REPO, **first}
    for f in fields(cfg):
        if f.name not in table:
            continue
        value, default = getattr(cfg, f.name), table[f.name]
        if value is None:
            setattr(cfg, f.name, default)
        elif (
            isinstance(value, str)
            and isinstance(default, (int, float))
            and not isinstance(default, bool)
        ):
            try:
                setattr(cfg, f.name, type(default)(value.strip()))
            except ValueError:
                raise CroftError(f"option {f.name}={value!r} is not a number") from None


@dataclass
class BaselineTrainConfig(TrainConfig):
    """:class:`TrainConfig` plus the optimiser choice and ``protocol`` of the baselines.

    ``momentum`` applies to SGD only, ``adam_eps`` to AdamW only. The optimiser options
    default to ``None`` = the ``protocol``'s value (:func:`apply_protocol`, run at
    construction, so a built config always holds numbers).
    """

    ORIGINAL: ClassVar[dict[str, Any]] = {}
    CROFT_REPO_EXTRA: ClassVar[dict[str, Any]] = {}

    epochs: int = None  # type: ignore[assignment]
    batch_size: int = None  # type: ignore[assignment]
    lr: float = None  # type: ignore[assignment]
    momentum: float = None  # type: ignore[assignment]
    weight_decay: float = None  # type: ignore[assignment]
    warmup_epochs: int = None  # type: ignore[assignment]
    warmup_lr: float = None  # type: ignore[assignment]
    optimizer: str = None  # type: ignore[assignment]
    adam_eps: float = None  # type: ignore[assignment]
    protocol: str = "original"

    def __post_init__(self) -> None:
        apply_protocol(self)

    def check(self) -> None:
        apply_protocol(self)
        super().check()
        if self.optimizer not in OPTIMIZERS:
            raise CroftError(f"optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")


def parse_floats(value: str | Sequence[float] | float, name: str) -> list[float]:
    """The numbers of a list option: a list (YAML or ``--set name=[0.1, 1, 10]``), one
    number, or the comma-separated text ``"0.1,1,10"`` (``;`` also separates; the older
    form, still accepted) -> ``[0.1, 1.0, 10.0]``."""
    hint = f"give a list of numbers, e.g. {name}=[0.1, 1, 10] (or the text 0.1,1,10)"
    if isinstance(value, str):
        parts: list[Any] = [v for v in value.replace(";", ",").split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    try:
        values = [_number(v) for v in parts]
    except (TypeError, ValueError):
        raise CroftError(f"option {name}={value!r}: {hint}") from None
    if not values:
        raise CroftError(f"option {name} is empty: {hint}")
    return values


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(value)
    return float(value)


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
    use_local: bool = False,
) -> FitResult:
    """Minimise ``loss_fn`` over ``params`` in the shared loop; select on validation.

    ``snapshot()`` returns a detached head of the current parameters; ``modules`` are in
    train mode during an epoch and eval mode otherwise (dropout). The global RNG should be
    seeded by the caller before initialising ``params``. ``use_local``: batches carry local
    features (:class:`~croft.methods.loop.Batch`).
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
    return run_epochs(train, val, cfg, model, device=device, progress=progress, use_local=use_local)


def train_head_ce(
    train: FeatureSet,
    val: FeatureSet | None,
    cfg: BaselineTrainConfig,
    head: FittedHead,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    float_inputs: bool = False,
) -> FitResult:
    """Cross-entropy on ``head.logits`` over every trainable parameter of ``head`` in the
    shared loop; each epoch's snapshot is a frozen copy of the head (CLIP-Adapter, CoCoOp).
    ``float_inputs`` casts the batch features to float32 first."""

    def loss_fn(b: Batch) -> torch.Tensor:
        x = b.x.float() if float_inputs else b.x
        return nn.functional.cross_entropy(head.logits(x), b.y)

    return train_epochs(
        train,
        val,
        cfg,
        list(head.parameters()),
        loss_fn,
        lambda: frozen_copy(head),
        device=device,
        progress=progress,
    )


def config_dict(cfg: Any) -> dict[str, Any]:
    """The config's JSON-able fields as a dict (for ``head.meta``): scalars, lists and
    mappings of them (e.g. a ``c_grid`` list, WiSE's ``base_options``); objects are left
    out."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if _plain(value):
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _plain(value: Any) -> bool:
    """JSON data: scalars, and lists / string-keyed mappings of JSON data."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False
