"""The world seed as a study factor: one experiment config over several generated worlds.

A config that lists ``world_seeds: [0, 1, 2]`` names its data and open-set roots with
``{world_seed}`` (e.g. ``../world_study_v4/seed{world_seed}``, each folder made by ``croft
world generate --preset study-v4 --seed K``). :func:`per_world` splits it into one config
per world, with the roots filled in and ``world_seed`` set, each run into
``OUT/world<seed>``; every record then carries ``world_seed`` (the task's meta), so the
report over ``OUT`` pairs runs within a world and the cluster bootstrap resamples worlds
(:func:`croft.verdict.cluster_factor`). Without ``world_seeds`` nothing changes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from croft.errors import CroftError

WORLD_SEED = "{world_seed}"


def _roots(cfg: Any) -> list[str]:
    specs = [cfg.data, *getattr(cfg, "ood", []), *getattr(cfg, "shifted", [])]
    return [s.root for s in specs if s is not None]  # the synthetic protocol has no data


def check_worlds(cfg: Any) -> None:
    """``world_seeds`` distinct and non-negative; ``{world_seed}`` in a root only with them,
    and with several of them in the data root (or every world would read one folder)."""
    seeds = list(cfg.world_seeds)
    if seeds and cfg.data is None:
        raise CroftError("world_seeds applies to the image protocols only (generated worlds)")
    if len(set(seeds)) != len(seeds):
        raise CroftError(f"world_seeds: each seed once, got {seeds}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**32:
            raise CroftError(f"world_seeds: {s!r} is not a seed in [0, 2^32)")
    templated = [r for r in _roots(cfg) if WORLD_SEED in r]
    if templated and not seeds and cfg.world_seed is None:
        raise CroftError(
            f"{templated[0]!r} holds {WORLD_SEED} but the config lists no world_seeds; list "
            "them, e.g. world_seeds: [0, 1, 2]"
        )
    if len(seeds) > 1 and WORLD_SEED not in cfg.data.root:
        raise CroftError(
            f"world_seeds {seeds}: data.root {cfg.data.root!r} has no {WORLD_SEED}, so every "
            "world would read the same folder"
        )


def for_world(cfg: Any, seed: int) -> Any:
    """``cfg`` for one world: ``{world_seed}`` filled in every root, ``world_seed`` set."""

    def fill(spec: Any) -> Any:
        return dataclasses.replace(spec, root=spec.root.replace(WORLD_SEED, str(seed)))

    changes: dict[str, Any] = {"data": fill(cfg.data), "world_seeds": [seed], "world_seed": seed}
    changes["ood"] = [fill(o) for o in cfg.ood]
    if hasattr(cfg, "shifted"):
        changes["shifted"] = [fill(o) for o in cfg.shifted]
    return dataclasses.replace(cfg, **changes)


def per_world(cfg: Any, out: str | Path) -> list[tuple[Any, Path]]:
    """``[(config, output folder)]``: one per listed world seed (``OUT/world<seed>``), or
    ``[(cfg, OUT)]`` when the config lists none (or is already one world's)."""
    out = Path(out)
    if not cfg.world_seeds or cfg.world_seed is not None:
        return [(cfg, out)]
    return [(for_world(cfg, s), out / f"world{s}") for s in cfg.world_seeds]
