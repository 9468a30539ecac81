"""Protocol ``synthetic``: leave-one-domain-out on the feature-space simulator.

SYNTHETIC features (:mod:`croft.simulate`), no images, no backbone, no feature store:
:class:`SyntheticConfig` is the protocol's config; each (held-out domain, seed) is
:meth:`croft.simulate.Simulator.lodo`, drawn when the runner asks for it. Open sets:
``unseen_classes`` and ``noise``. Task order: seeds, then domains (the order ``croft demo
--synthetic`` always ran).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from croft.errors import CroftError
from croft.experiments.config import DataSpec, ExperimentBase
from croft.experiments.task import Task
from croft.experiments.typed import build


@dataclass
class SyntheticConfig(ExperimentBase):
    """Setup-II on the feature-space simulator (:mod:`croft.simulate`): SYNTHETIC features,
    no images and no backbone. ``simulator``: :class:`~croft.simulate.SimConfig` fields (it
    draws its own shots, views and domains); ``held_out`` empty: every simulated domain
    (``domain_0`` …) in turn. The image keys (backbone, data, ood, shots, views, …) do not
    apply and must stay unset."""

    PROTOCOL: ClassVar[str] = "synthetic"
    IMAGES: ClassVar[bool] = False

    backbone: str = ""
    data: DataSpec | None = None  # type: ignore[assignment]
    simulator: dict[str, Any] = field(default_factory=dict)
    held_out: list[str] = field(default_factory=list)

    def sim_config(self) -> Any:
        """The :class:`~croft.simulate.SimConfig` of ``simulator`` (one line per bad key)."""
        from croft.simulate import SimConfig

        return build(SimConfig, dict(self.simulator), "simulator")

    def check(self) -> None:
        super().check()
        image_keys = ("backbone", "data", "ood", "templates", "shots", "val_per_class", "views")
        image_keys += ("view_seed", "crop_scale", "ood_transform", "precision", "local_features")
        for f in dataclasses.fields(ExperimentBase):
            if f.name in image_keys and getattr(self, f.name) != _default(self, f.name):
                raise CroftError(
                    f"{f.name} applies to the image protocols only; protocol synthetic "
                    "reads simulator: {...} (croft.simulate.SimConfig fields)"
                )
        names = [f"domain_{i}" for i in range(self.sim_config().domains)]
        unknown = [d for d in self.held_out if d not in names]
        if unknown:
            raise CroftError(f"held_out {unknown[0]!r}: use one of {', '.join(names)}")

    def run_settings(self) -> dict[str, Any]:
        """The simulator's resolved settings and the scores (and the conventions when they
        are not croft's: absent, the run keys written before the protocol existed)."""
        from croft.conventions import Conventions

        doc = {"simulator": dataclasses.asdict(self.sim_config()), "scores": list(self.scores)}
        conv = self.evaluation_conventions().to_dict()
        if conv != Conventions().to_dict():
            doc["conventions"] = conv
        return doc


def _default(cfg: Any, name: str) -> Any:
    f = {f.name: f for f in dataclasses.fields(cfg)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


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
