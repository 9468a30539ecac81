"""What the built-in world holds: classes, styles, open-set sets and pre-training coverage.

The default :class:`WorldConfig` (preset ``"demo"``) is built for a PACS-like Setup-II run:
7 in-distribution object classes, 4 styles acting as domains (leave-one-style-out), and
two open-set kinds (held-out object classes, and textures/noise like DTD).

The world has the gap that real fine-tuning has (when pre-training covers the downstream
task exactly, zero-shot is already the best linear classifier and nothing can help):

- the tiny CLIP never sees the ``sketch`` style (nor ``neon``) in pre-training, and most
  of its cartoons have coloured, not black, outlines;
- in pre-training an ID object comes in its typical colour 75% of the time (cars are
  red, trees green: :data:`TYPICAL_COLOURS`); downstream, colours are uniform;
- its captions mostly call the ID objects by other words (``mug`` for ``cup``, 60%), use
  the class name only in 25%, and in 15% name a related ID object instead (``boat`` for a
  car, :data:`CONFUSIONS`), as web captions name what co-occurs or looks alike; 10% of
  all captions name nothing ("a photo of an object").

So the image features separate the ID classes better than the class-name prompts do,
and the held-out style is harder than the seen ones (``benchmarks/world_quality.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from croft.errors import CroftError

__all__ = [
    "ALIASES",
    "CONFUSIONS",
    "TYPICAL_COLOURS",
    "WORLD_VERSION",
    "PretrainConfig",
    "WorldConfig",
    "world_preset",
]

#: Bumped whenever images, captions or layouts change for a given seed.
WORLD_VERSION = "1"

#: In pre-training captions an ID object is mostly called by its alias, rarely by its name.
ALIASES: dict[str, str] = {
    "house": "cottage",
    "tree": "oak",
    "fish": "trout",
    "cup": "mug",
    "umbrella": "parasol",
    "boat": "sailboat",
    "car": "automobile",
}

#: Pre-training captions sometimes name a related ID object instead (web captions mention
#: what co-occurs or looks alike): the name of one class is then tied to two classes.
CONFUSIONS: dict[str, str] = {
    "boat": "car",
    "car": "boat",
    "house": "tree",
    "tree": "house",
    "cup": "umbrella",
    "umbrella": "cup",
}


#: In pre-training an ID object mostly comes in its typical colour (downstream: any colour).
TYPICAL_COLOURS: dict[str, str] = {
    "house": "brown",
    "tree": "green",
    "fish": "orange",
    "cup": "blue",
    "umbrella": "purple",
    "boat": "yellow",
    "car": "red",
}


@dataclass(frozen=True)
class WorldConfig:
    """The downstream world: ID classes, domains (styles), open-set sets and sizes."""

    id_classes: tuple[str, ...] = ("house", "tree", "fish", "cup", "umbrella", "boat", "car")
    ood_classes: tuple[str, ...] = ("mushroom", "rocket", "bell", "flower", "kite", "anchor")
    domains: tuple[str, ...] = ("photo", "painting", "cartoon", "sketch")
    textures: tuple[str, ...] = ("stripes", "checkers", "dots", "noise", "waves", "blotches")
    image_size: int = 32
    per_class: int = 50  # ID images per class and domain
    ood_per_class: int = 20  # held-out-class images per class and domain
    textures_per_kind: int = 70
    val_fraction: float = 0.2  # of each (class, source domain) for the json "val" split

    def validate(self) -> None:
        from croft.world.render import STYLES, TEXTURES
        from croft.world.shapes import OBJECT_CLASSES

        for name in (*self.id_classes, *self.ood_classes):
            if name not in OBJECT_CLASSES:
                raise CroftError(f"unknown world class {name!r}; known: {sorted(OBJECT_CLASSES)}")
        if set(self.id_classes) & set(self.ood_classes):
            raise CroftError("world: ID and open-set classes overlap")
        for s in self.domains:
            if s not in STYLES:
                raise CroftError(f"unknown world style {s!r}; known: {sorted(STYLES)}")
        for t in self.textures:
            if t not in TEXTURES:
                raise CroftError(f"unknown texture {t!r}; known: {sorted(TEXTURES)}")
        if len(self.domains) < 2:
            raise CroftError("world: need at least 2 domains for leave-one-domain-out")
        if self.per_class < 2 or not 0.0 < self.val_fraction < 1.0:
            raise CroftError("world: per_class must be >= 2 and val_fraction in (0, 1)")
        if self.image_size % 32:
            raise CroftError("world: image_size must be a multiple of 32")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PretrainConfig:
    """Pre-training of the tiny CLIP: data coverage, model and optimisation (a step budget)."""

    styles: tuple[str, ...] = ("photo", "painting", "cartoon", "pixel")  # never sketch or neon
    generic_rate: float = 0.1  # share of captions that name nothing ("a photo of an object")
    colour_rate: float = 0.2
    style_word_rate: float = 0.5
    texture_fraction: float = 0.05
    pool_size: int = 40_000
    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    image_size: int = 32
    embed_dim: int = 128
    vision_layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    vision_width: int = 16
    text_width: int = 128
    text_layers: int = 4
    text_heads: int = 4
    context_length: int = 12
    seed: int = 0
    aliases: dict[str, str] = field(default_factory=lambda: dict(ALIASES))
    confusions: dict[str, str] = field(default_factory=lambda: dict(CONFUSIONS))
    name_rate: float = 0.25  # share of an ID object's captions that use its class name
    confusion_rate: float = 0.15  # share that use the name of its related class instead
    typical_colours: dict[str, str] = field(default_factory=lambda: dict(TYPICAL_COLOURS))
    typical_colour_rate: float = 0.75  # share of an ID object's images in its typical colour

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_PRESETS: dict[str, WorldConfig] = {
    "demo": WorldConfig(),
    "tiny": WorldConfig(per_class=4, ood_per_class=1, textures_per_kind=2),
}


def world_preset(name: str, **overrides: Any) -> WorldConfig:
    """The named world config (``"demo"`` or ``"tiny"``), with field overrides."""
    if name not in _PRESETS:
        raise CroftError(f"unknown world preset {name!r}; choose one of {sorted(_PRESETS)}")
    cfg = replace(_PRESETS[name], **overrides) if overrides else _PRESETS[name]
    cfg.validate()
    return cfg
