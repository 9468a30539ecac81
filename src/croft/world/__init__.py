"""The built-in image world: a seeded procedural dataset and its tiny CLIP.

No pretrained CLIP or dataset can be downloaded everywhere, so croft ships a small world
to run the whole pipeline on (images -> features -> fit -> evaluation):

- :func:`generate_world` writes object images in several styles (the domains) in the
  DomainBed and PACS/Dassl layouts, plus two open-set sets (held-out object classes, and
  textures/noise), all from one seed (:mod:`croft.world.generate`);
- the tiny CLIP (:data:`TINY_CLIP_ARCH`, :func:`tiny_clip_config`,
  :func:`tiny_clip_checkpoint`, :class:`WordTokenizer`) is an open_clip architecture
  pre-trained on the world's captions by :func:`pretrain` (``croft world pretrain``), with
  a deliberate gap to the downstream task (:mod:`croft.world.config`).

World v2 (``preset="study"``, docs/world-study.md) ties each class to an object colour in
the train/val splits (a source-only shortcut; uniformly random background tints, as in
its pre-training), separate test splits and sketch as an extra target;
its tiny CLIP ships beside v1's (``tiny_clip_checkpoint("study")``). World v3
(``preset="study-v3"``, the study's and the demo's world) is v2 with label noise in the
source splits, so that the colour predicts a source label better than the object does;
it keeps v2's tiny CLIP.

Importing this package is light: numpy, PIL and open_clip load when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "TINY_CLIP_ARCH",
    "PretrainConfig",
    "WordTokenizer",
    "WorldConfig",
    "generate_world",
    "iter_world",
    "load_tiny_clip",
    "pretrain",
    "pretrain_preset",
    "read_world",
    "register_tiny_clip",
    "tiny_clip_checkpoint",
    "tiny_clip_config",
    "world_preset",
]

_WHERE = {
    "TINY_CLIP_ARCH": "tiny_clip",
    "tiny_clip_checkpoint": "tiny_clip",
    "tiny_clip_config": "tiny_clip",
    "load_tiny_clip": "tiny_clip",
    "register_tiny_clip": "tiny_clip",
    "WordTokenizer": "tokenizer",
    "WorldConfig": "config",
    "PretrainConfig": "config",
    "world_preset": "config",
    "pretrain_preset": "config",
    "generate_world": "generate",
    "iter_world": "generate",
    "read_world": "generate",
    "pretrain": "pretrain",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"croft.world.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'croft.world' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
