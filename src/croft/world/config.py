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

World v2 (preset ``"study"``, :data:`STUDY_WORLD`, :data:`STUDY_PRETRAIN`; the design is
``docs/world-study.md``) adds a source-only shortcut and a wider text gap: in the train
and validation splits each object's main colour is its class's shortcut colour
(:data:`SHORTCUT_COLOURS`) with probability ``shortcut_rate``, a uniformly random colour
otherwise; test splits and open-set sets have uniformly random colours. Every v2 object
image has a uniformly random background tint (:data:`croft.world.render.TINTS`), as in
v2 pre-training. (``shortcut_cue="tint"`` is the superseded first design: the tint tied
to the class instead, the colour random; change of 2026-12-01 in docs/world-study.md.)
The class name appears in 10 % of pre-training captions; the 4 leave-one-style-out styles
were all seen in pre-training and sketch (never seen) is an extra target. Each (class,
style) has its own test images (``test_per_class``), separate from train and val.

World v3 (preset ``"study-v3"``, :data:`STUDY_WORLD_V3`) is v2 with label noise in the
train and validation splits (``label_noise``, η): an image shows another ID class with
probability η while its label and shortcut colour stay its own, so in the sources the
colour predicts the label better than the object does (Coloured MNIST's construction).
It was added because the CE adapter did not take v2's shortcut (gate G4).

World v4 (preset ``"study-v4"``, :data:`STUDY_WORLD_V4`) is v3 with the shortcut's rate
differing between source styles (``shortcut_rate_by_style``), as Coloured MNIST's training
environments differ in their colour-label correlation: the drawn object agrees with the
label equally often in every style, the colour does not, so the source domains differ in
how much the shortcut pays. Test splits, open sets, pre-training and the tiny CLIP are v3's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from croft.errors import CroftError

__all__ = [
    "ALIASES",
    "CONFUSIONS",
    "TYPICAL_COLOURS",
    "STUDY_PRETRAIN",
    "STUDY_WORLD",
    "STUDY_WORLD_V3",
    "STUDY_WORLD_V4",
    "WORLD_VERSION",
    "WORLD_VERSIONS",
    "SHORTCUT_COLOURS",
    "SHORTCUT_CUES",
    "PretrainConfig",
    "WorldConfig",
    "pretrain_preset",
    "world_preset",
]

#: The version of world v1 (the ``demo`` and ``tiny`` presets), frozen: its images,
#: captions and layouts for a given seed never change (pinned by tests/test_world.py).
WORLD_VERSION = "1"
#: Every world version this code writes: "1" (no shortcut), "2" (the first study world),
#: "3" (v2 with source label noise: the study world since the third session) and "4" (v3
#: with a shortcut rate per source style).
WORLD_VERSIONS = ("1", "2", "3", "4")

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


#: World v2's shortcut: the main colour an ID class takes in the train/val splits with
#: probability ``shortcut_rate``. Each class gets the *typical colour of another class*
#: (the class two places on in ``id_classes``, cyclically; never its related class), so
#: the tie exists only in the sources: pre-training ties no class to these colours and
#: zero-shot gets no help from them (change of 2026-12-01, docs/world-study.md).
SHORTCUT_COLOURS: dict[str, str] = {
    "house": "orange",
    "tree": "blue",
    "fish": "purple",
    "cup": "yellow",
    "umbrella": "red",
    "boat": "brown",
    "car": "green",
}
#: What world v2's shortcut ties to the class: the object's main colour (the study world,
#: and v3's) or the background tint (the superseded first design, kept reproducible).
SHORTCUT_CUES = ("colour", "tint")


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
    version: str = WORLD_VERSION
    #: v2: styles rendered as extra targets only (never a source; e.g. sketch)
    extra_domains: tuple[str, ...] = ()
    #: v2: test images per (class, domain), drawn apart from the ``per_class`` train+val
    #: images; 0 (v1) = the held-out domain's test split is all its ``per_class`` images
    test_per_class: int = 0
    #: v2: probability that a train/val image carries its class's shortcut cue (ρ);
    #: None (v1) = no shortcut and the styles' own random backgrounds, no tints at all
    shortcut_rate: float | None = None
    #: v2: the cue (:data:`SHORTCUT_CUES`): ``"colour"``, the object's main colour is
    #: :data:`SHORTCUT_COLOURS` of its class, every background a uniform tint; ``"tint"``
    #: (superseded), the background tint is the class's, the colour uniform
    shortcut_cue: str = "colour"
    #: v3: probability (η) that a train/val ID image shows a uniformly drawn *other* ID
    #: class while its label, folder and shortcut colour stay its own (annotation noise,
    #: as in Coloured MNIST): the shape then predicts the source label less often than the
    #: shortcut colour does. Test splits and open sets are never noisy.
    label_noise: float = 0.0
    #: v4: ``((style, ρ), …)``, the shortcut rate of a style's train/val images (styles not
    #: listed: ``shortcut_rate``), so that the source domains differ in how often the cue
    #: agrees with the label (Coloured MNIST's environments). Empty before v4.
    shortcut_rate_by_style: tuple[tuple[str, float], ...] = ()

    def shortcut_rate_of(self, domain: str) -> float | None:
        """The shortcut rate of ``domain``'s train/val images (None: no shortcut)."""
        return dict(self.shortcut_rate_by_style).get(domain, self.shortcut_rate)

    @property
    def all_domains(self) -> tuple[str, ...]:
        """Leave-one-out domains, then the extra target domains."""
        return (*self.domains, *self.extra_domains)

    def validate(self) -> None:
        from croft.world.render import STYLES, TEXTURES
        from croft.world.shapes import OBJECT_CLASSES

        for name in (*self.id_classes, *self.ood_classes):
            if name not in OBJECT_CLASSES:
                raise CroftError(f"unknown world class {name!r}; known: {sorted(OBJECT_CLASSES)}")
        if set(self.id_classes) & set(self.ood_classes):
            raise CroftError("world: ID and open-set classes overlap")
        if self.version not in WORLD_VERSIONS:
            raise CroftError(f"unknown world version {self.version!r}; known: {WORLD_VERSIONS}")
        if set(self.domains) & set(self.extra_domains):
            raise CroftError("world: extra_domains overlap the leave-one-out domains")
        if self.shortcut_rate is not None:
            from croft.world.render import TINTS

            if not 0.0 <= self.shortcut_rate <= 1.0:
                raise CroftError(
                    f"world: shortcut_rate must be in [0, 1], got {self.shortcut_rate}"
                )
            if self.shortcut_cue not in SHORTCUT_CUES:
                raise CroftError(
                    f"world: unknown shortcut_cue {self.shortcut_cue!r}; known: {SHORTCUT_CUES}"
                )
            if self.shortcut_cue == "tint" and len(self.id_classes) > len(TINTS):
                raise CroftError(f"world: the shortcut has {len(TINTS)} tints, one per ID class")
            missing = set(self.id_classes) - set(SHORTCUT_COLOURS)
            if self.shortcut_cue == "colour" and missing:
                raise CroftError(f"world: no shortcut colour for {sorted(missing)}")
        if not 0.0 <= self.label_noise < 1.0:
            raise CroftError(f"world: label_noise must be in [0, 1), got {self.label_noise}")
        if (self.label_noise and self.version not in ("3", "4")) or (
            self.version == "3" and not self.label_noise
        ) or (self.label_noise and self.shortcut_rate is None):  # fmt: skip
            raise CroftError(
                "world: label_noise needs a v3 world (version 3, a shortcut) and a v3 world "
                f"needs label_noise > 0; got version {self.version!r}, "
                f"label_noise {self.label_noise}"
            )
        self._check_rate_by_style()
        if self.version == WORLD_VERSION and (
            self.extra_domains or self.test_per_class or self.shortcut_rate is not None
        ):
            raise CroftError("world v1 has no extra domains, test split or shortcut; use v2")
        for s in self.all_domains:
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

    def _check_rate_by_style(self) -> None:
        by_style = self.shortcut_rate_by_style
        if bool(by_style) != (self.version == "4") or (by_style and self.shortcut_rate is None):
            raise CroftError(
                "world: shortcut_rate_by_style needs a v4 world (version 4, a shortcut) and a "
                f"v4 world needs it; got version {self.version!r}, {len(by_style)} styles"
            )
        styles = [pair[0] for pair in by_style]
        if len(set(styles)) != len(styles) or not set(styles) <= set(self.all_domains):
            raise CroftError(
                f"world: shortcut_rate_by_style names each style of the world once, got {styles}"
            )
        for style, rate in by_style:
            if not 0.0 <= rate <= 1.0:
                raise CroftError(f"world: shortcut rate of {style} must be in [0, 1], got {rate}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.version == WORLD_VERSION:  # v1 manifests as written before v2 existed
            for key in (
                "version",
                "extra_domains",
                "test_per_class",
                "shortcut_rate",
                "shortcut_cue",
            ):
                del d[key]
        if not self.label_noise:  # v2 manifests as written before v3 existed
            del d["label_noise"]
        if not self.shortcut_rate_by_style:  # v1-v3 manifests as written before v4 existed
            del d["shortcut_rate_by_style"]
        return d


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
    #: v2: every object image gets a uniformly random background tint (no class tie)
    background_tints: bool = False

    @property
    def world_version(self) -> str:
        """The world version whose captions and images this pre-training uses."""
        return "2" if self.background_tints else WORLD_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.background_tints:  # v1 provenance as it was written before v2 existed
            del d["background_tints"]
        return d


#: World v2, the study world (docs/world-study.md): 4 leave-one-out styles all seen in
#: pre-training, sketch as an extra target, the class-tied object colour with ρ = 0.85
#: in train/val (uniform background tints everywhere), train 40 / val 10 / test 120 per
#: (class, style), 40 held-out-class images per (class, style) and 40 per texture kind.
STUDY_WORLD = WorldConfig(
    domains=("photo", "painting", "cartoon", "pixel"),
    extra_domains=("sketch",),
    per_class=50,
    val_fraction=0.2,
    test_per_class=120,
    ood_per_class=40,
    textures_per_kind=40,
    version="2",
    shortcut_rate=0.85,
)

#: Pre-training of world v2's tiny CLIP: v1's recipe with the class name in 10 % of an ID
#: object's captions (v1: 25 %), the related class's name in 8.5 % (v1: 15 %; kept below the
#: name rate, or the confused pairs swap names: change of 2026-12-01 in
#: docs/world-study.md) and uniformly random background tints.
STUDY_PRETRAIN = PretrainConfig(name_rate=0.10, confusion_rate=0.085, background_tints=True)

#: World v3, the study world since the third session (docs/world-study.md, "World v3"):
#: world v2 with label noise η = 0.15 in the train/val splits (Coloured MNIST's
#: construction: the drawn object agrees with the source label 85 % of the time, the
#: shortcut colour 86.5 %; η is the smallest of 0.15/0.25/0.35 that passed every gate).
#: Same tiny CLIP (pre-training is unchanged).
STUDY_WORLD_V3 = replace(STUDY_WORLD, version="3", label_noise=0.15)

#: World v4 (docs/world-study.md, "World v4", pre-registered before any measurement on
#: it): v3 with the shortcut rate per source style, photo 0.95, painting 0.90, cartoon
#: 0.80, pixel 0.75 (mean 0.85, v3's; sketch, never a source, keeps 0.85). The colour then
#: agrees with the label 95.5 / 91 / 82 / 77.5 % of the time in the four styles' sources,
#: the drawn object 85 % in every style (η = 0.15): the cue beats the object in two styles
#: and loses to it in two, as Coloured MNIST's environments differ (0.9 / 0.8). Same tiny
#: CLIP; test splits and open sets are v3's images.
STUDY_WORLD_V4 = replace(
    STUDY_WORLD_V3,
    version="4",
    shortcut_rate_by_style=(("photo", 0.95), ("painting", 0.90), ("cartoon", 0.80),
                            ("pixel", 0.75)),
)  # fmt: skip

_PRESETS: dict[str, WorldConfig] = {
    "demo": WorldConfig(),
    "tiny": WorldConfig(per_class=4, ood_per_class=1, textures_per_kind=2),
    "study": STUDY_WORLD,
    "study-tiny": replace(
        STUDY_WORLD, per_class=10, test_per_class=3, ood_per_class=1, textures_per_kind=2
    ),
    "study-v3": STUDY_WORLD_V3,
    "study-v3-tiny": replace(
        STUDY_WORLD_V3, per_class=10, test_per_class=3, ood_per_class=1, textures_per_kind=2
    ),
    "study-v4": STUDY_WORLD_V4,
    "study-v4-tiny": replace(
        STUDY_WORLD_V4, per_class=10, test_per_class=3, ood_per_class=1, textures_per_kind=2
    ),
}
_PRETRAIN_PRESETS: dict[str, PretrainConfig] = {"demo": PretrainConfig(), "study": STUDY_PRETRAIN}


def pretrain_preset(name: str) -> PretrainConfig:
    """The pre-training config of a world: ``"demo"`` (v1, shipped) or ``"study"`` (v2)."""
    if name not in _PRETRAIN_PRESETS:
        raise CroftError(
            f"unknown pre-training preset {name!r}; choose one of {sorted(_PRETRAIN_PRESETS)}"
        )
    return _PRETRAIN_PRESETS[name]


def world_preset(name: str, **overrides: Any) -> WorldConfig:
    """The named world config (``"demo"``, ``"tiny"``, ``"study"``, ``"study-tiny"``,
    ``"study-v3"``, ``"study-v3-tiny"``, ``"study-v4"`` or ``"study-v4-tiny"``), with field
    overrides."""
    if name not in _PRESETS:
        raise CroftError(f"unknown world preset {name!r}; choose one of {sorted(_PRESETS)}")
    cfg = replace(_PRESETS[name], **overrides) if overrides else _PRESETS[name]
    cfg.validate()
    return cfg
