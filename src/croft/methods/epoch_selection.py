"""Epoch selection of the training loop: the policy, the selector and the selection record.

:func:`select_policy` checks ``select_epoch`` (``best | last | best_after_warmup``);
:class:`EpochSelector` applies it to each completed epoch on plain numbers;
:func:`validates` and :func:`validation_subset` say which epochs are validated and on which
images (``val_every`` / ``val_max``); :func:`selection_record` is the JSON-able
``metrics["selection"]`` with :func:`param_change` and ``kept_init``. Used by
:func:`croft.methods.loop.run_epochs` and the batched engine; :mod:`croft.methods.loop`
re-exports every name here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from croft.errors import CroftError
from croft.features.files import FeatureSet

__all__ = [
    "KEPT_INIT_TOL",
    "POLICIES",
    "EpochSelector",
    "param_change",
    "select_policy",
    "selection_record",
    "validates",
    "validation_subset",
]

POLICIES = ("best", "last", "best_after_warmup")
KEPT_INIT_TOL = 1e-3  # param_change below this: the selected model is the initialisation


def select_policy(cfg: Any) -> str:
    """``cfg.select_epoch``, checked."""
    policy = str(getattr(cfg, "select_epoch", "best"))
    if policy not in POLICIES:
        raise CroftError(f"select_epoch {policy!r}: use one of {', '.join(POLICIES)}")
    return policy


@dataclass
class EpochSelector:
    """The best-epoch rule, on plain numbers: feed every completed epoch to :meth:`offer`.

    ``offer`` returns True when the epoch becomes the selected one (the caller then keeps
    its head). ``best``: strictly higher validation accuracy than every earlier candidate
    (so the first best epoch wins); ``last``: every epoch; ``best_after_warmup``: as
    ``best`` but epochs inside the warm-up only count until a post-warm-up epoch arrives.
    Without validation (``acc is None``) the last epoch is selected.
    """

    policy: str
    warmup_epochs: int = 0
    epoch: int | None = None
    acc: float | None = None
    _after_warmup: bool = False

    def offer(self, epoch: int, acc: float | None) -> bool:
        if self.policy == "last" or acc is None or self.epoch is None:
            take = True
        elif self.policy == "best_after_warmup" and epoch >= self.warmup_epochs:
            take = not self._after_warmup or acc > (self.acc if self.acc is not None else -1.0)
        elif self.policy == "best_after_warmup" and self._after_warmup:
            take = False
        else:
            take = acc > (self.acc if self.acc is not None else -1.0)
        if take:
            self.epoch, self.acc = epoch, acc
            self._after_warmup = epoch >= self.warmup_epochs
        return take


def validates(epoch: int, epochs: int, every: int) -> bool:
    """Whether epoch ``epoch`` (0-based) of ``epochs`` is validated: every ``every``-th
    epoch (``every − 1``, ``2·every − 1``, …) and always the last one."""
    return (epoch + 1) % max(every, 1) == 0 or epoch == epochs - 1


def validation_subset(val: FeatureSet, max_images: int, seed: int) -> FeatureSet:
    """At most ``max_images`` rows of ``val`` (0 or ≥ N: all of it, unchanged), fixed for
    the fit: classes take turns in label order, each giving its next image of a
    ``seed``-ed permutation, so every class keeps ⌊max/C⌋ or one more (or all it has).
    Rows keep their file order."""
    n = len(val)
    if max_images <= 0 or max_images >= n:
        return val
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    labels = val.labels[perm]
    queues = [perm[labels == c].tolist() for c in range(val.num_classes)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < max_images:
        for q in queues:
            if depth < len(q) and len(chosen) < max_images:
                chosen.append(q[depth])
        depth += 1
    return val.subset(torch.tensor(sorted(chosen), dtype=torch.long))


def param_change(init: Sequence[torch.Tensor], now: Sequence[torch.Tensor]) -> float:
    """``‖θ − θ₀‖ / max(‖θ₀‖, 1)`` over all tensors together (Frobenius, float64)."""
    num = sum(float((a.double() - b.double()).pow(2).sum()) for a, b in zip(now, init, strict=True))
    den = sum(float(b.double().pow(2).sum()) for b in init)
    return math.sqrt(num) / max(math.sqrt(den), 1.0)


def selection_record(
    policy: str,
    warmup_epochs: int,
    selected_epoch: int,
    history: Sequence[Mapping[str, float]],
    val_init: float | None,
    change: float,
    diverged_epoch: int | None,
) -> dict[str, Any]:
    """The JSON-able selection record (a contract: runs write it as ``metrics["selection"]``).

    Keys: ``select_epoch`` (policy), ``selected_epoch``, ``val_init`` (validation accuracy of
    the initial head, before any step), ``val_epoch0``, ``val_selected``, ``diverged``,
    ``diverged_epoch``, ``param_change`` (``‖θ_sel − θ_init‖ / max(‖θ_init‖, 1)`` over the
    trained parameters) and ``kept_init``: the selected model is effectively the
    initialisation (selected within the warm-up epochs, or ``param_change <``
    :data:`KEPT_INIT_TOL`).
    """
    val0 = history[0].get("val_acc") if history else None
    val_sel = history[selected_epoch].get("val_acc") if history else None
    return {
        "select_epoch": policy,
        "selected_epoch": int(selected_epoch),
        "val_init": val_init,
        "val_epoch0": val0,
        "val_selected": val_sel,
        "diverged": diverged_epoch is not None,
        "diverged_epoch": diverged_epoch,
        "param_change": change,
        "kept_init": bool(selected_epoch < warmup_epochs or change < KEPT_INIT_TOL),
    }
