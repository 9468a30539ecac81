"""Tasks of protocol ``synthetic``: leave-one-domain-out on the feature-space simulator.

SYNTHETIC features (:mod:`croft.simulate`), no images, no backbone, no feature store:
each (held-out domain, seed) is :meth:`croft.simulate.Simulator.lodo`, drawn when the
runner asks for it. Open sets: ``unseen_classes`` and ``noise``. Task order: seeds, then
domains (the order ``croft demo --synthetic`` always ran).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from croft.experiments.task import Task


def records(cfg: Any) -> list[tuple[str, int]]:
    """``(held-out domain, seed)`` of every task (nothing to read: the world is simulated)."""
    names = [f"domain_{i}" for i in range(cfg.sim_config().domains)]
    held = [d for d in names if d in cfg.held_out] if cfg.held_out else names
    return [(d, seed) for seed in cfg.seeds for d in held]


def pairs(recs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return list(recs)


def synthetic_tasks(
    cfg: Any, recs: list[tuple[str, int]], backbone: Any, show: bool
) -> tuple[Iterator[Task], int, dict[str, Any]]:
    """The tasks of ``recs``, simulated one at a time (``backbone`` and ``show`` unused)."""
    from croft.simulate import Simulator

    simulator = Simulator(cfg.sim_config())
    index = {name: i for i, name in enumerate(simulator.domain_names)}

    def tasks() -> Iterator[Task]:
        for dom, seed in recs:
            t = simulator.lodo(index[dom], seed)
            yield Task(t.test_domain, seed, t.train, t.val, t.test, t.ood_sets)

    return tasks(), len(recs), {}
