"""Typed experiment configs, one dataclass per protocol, built from YAML-shaped dicts.

``ExperimentBase`` holds what every protocol shares; :class:`LodoConfig` (Setup-II,
leave-one-domain-out) and :class:`ImagenetConfig` (Setup-I, ImageNet class split) add
their own fields, so a key of one protocol in the other's file is an error that says so.

Every value is type-checked against the field's annotation (one line naming the key;
:mod:`croft.experiments.typed`),
and resources are bounded: ``views <= MAX_VIEWS``, ``shots <= MAX_SHOTS``,
``val_per_class <= MAX_SHOTS``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from croft.errors import CroftDeprecationWarning, CroftError
from croft.fileio import safe_name
from croft.limits import check_limit

MAX_VIEWS = 64  # augmented training views per image (memory grows linearly)
MAX_SHOTS = 1024  # images per class in the few-shot draw / validation draw
OPEN_SET_NAME = "imagenet_ood"  # Setup-I: the held-out ImageNet classes
AUTHORS_VAL_PER_CLASS = 4  # Setup-I validation size per ID class (docs/protocols.md)
DEVICES = "cpu, cuda, cuda:N or mps"


#: In an ``ood`` entry's root (protocol lodo), replaced by each task's held-out domain.
HELD_OUT = "{held_out}"


@dataclass
class DataSpec:
    """A dataset folder and its layout (see :mod:`croft.data`).

    An ``ood`` root holding ``{held_out}`` (protocol lodo) is a *per-fold* open set: each
    held-out domain reads the root with its own name put in, e.g. a style-matched open set
    ``world/ood_classes/{held_out}`` (the held-out classes drawn in the held-out style).
    ``tag`` (``ood`` entries only): ``near`` or ``far``, for the reports' near/far averages
    (never part of a run key).
    """

    root: str
    layout: str
    options: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    tag: str = ""

    @property
    def per_fold(self) -> bool:
        """Whether the root holds ``{held_out}``."""
        return HELD_OUT in self.root

    def for_held_out(self, domain: str) -> DataSpec:
        """This spec with ``{held_out}`` replaced by ``domain`` in its root."""
        return dataclasses.replace(self, root=self.root.replace(HELD_OUT, domain))


@dataclass
class MethodGrid:
    """A method row: fixed ``options`` and an explicit ``grid`` (option -> list of values).

    Every point of the grid's Cartesian product is one run labelled ``label[k=v,...]``.
    """

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        legacy = {k: v for k, v in self.options.items() if isinstance(v, list)}
        if legacy:  # lists for list-valued options (e.g. c_grid) are plain values
            lists = _list_options(self.method)
            legacy = {k: v for k, v in legacy.items() if k not in lists}
        if legacy:  # the old form: a list in options was a grid
            warnings.warn(
                f"method {self.label}: a list in options is read as a grid; write "
                f"grid: {{{', '.join(f'{k}: {v}' for k, v in legacy.items())}}} instead "
                "(lists in options will become plain values)",
                CroftDeprecationWarning,
                stacklevel=2,
            )
            self.options = {k: v for k, v in self.options.items() if k not in legacy}
            self.grid = {**self.grid, **legacy}
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise CroftError(f"method {self.label}: grid {key} must be a non-empty list")
            if key in self.options:
                raise CroftError(f"method {self.label}: {key} is both an option and a grid")
        check_limit("grid_points", self.points(), f"method {self.label}: grid points")

    def points(self) -> int:
        """How many runs this row expands to (the product of its grid's list lengths)."""
        return math.prod(len(v) for v in self.grid.values())


def _list_options(method: str) -> tuple[str, ...]:
    """The options of ``method`` whose value is a list (its config's ``LIST_OPTIONS``, e.g.
    the linear probe's ``c_grid``): a list for them is their value, never a grid."""
    import croft.methods  # noqa: F401  (registers every method)
    from croft.methods.base import METHODS

    if method not in METHODS:
        return ()  # an unknown method is reported where the run is built
    return tuple(getattr(METHODS.get(method).config_cls, "LIST_OPTIONS", ()))


@dataclass
class ExperimentBase:
    """What every protocol shares. Fields named in ``NOT_IN_RUN_KEY`` never change a run."""

    PROTOCOL: ClassVar[str] = ""
    NOT_IN_RUN_KEY: ClassVar[tuple[str, ...]] = (
        "name",
        "methods",
        "seeds",
        "held_out",
        "device",
        "batch_size",
        "workers",
        "cache",
        "progress",
        "fit_engine",
        "primary",
        "world_seeds",
        "world_seed",
    )

    name: str
    backbone: str
    data: DataSpec
    protocol: str = ""
    ood: list[DataSpec] = field(default_factory=list)
    methods: list[MethodGrid] = field(default_factory=list)
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    shots: int = 16
    val_per_class: int = 0  # 0: all source-validation images (Setup-I: 4)
    views: int = 8
    view_seed: int = 0
    # training views' RandomResizedCrop area range [lo, hi]; None: the store's (0.08, 1)
    crop_scale: list[float] | None = None
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    ood_transform: str = "eval"  # eval | train (the authors' deviation, docs)
    # names or {name: SCORE, PARAM: VALUE, label: COLUMN} (croft.score_lists.score_specs)
    scores: list[Any] = field(default_factory=lambda: ["energy", "knn"])
    knn_k: int = 1  # deprecated: write scores: [{name: knn, k: 5}]
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 64
    workers: int = 0
    cache: str = ""  # empty: the default feature cache
    progress: bool = True
    # auto | batched | sequential: how fits run (croft.experiments.runner.run_grid); auto
    # batches where it measured faster (croft.methods.croft.engine.batching_helps). Results
    # agree within the batched engine's tolerance, so it is not part of the run key.
    fit_engine: str = "auto"
    # evaluation conventions: croft | authors, or {name: ..., field: value} (docs/deviations.md)
    conventions: Any = "croft"
    # also cache every image's local (patch) features (fp16) for GL-MCM and LoCoOp
    local_features: bool = False
    # the report's primary comparison: {a: LABEL, b: LABEL, metric: accuracy | auroc | ...,
    # ood: SET, score: energy} (ood and score for detection metrics; croft.verdict)
    primary: dict[str, Any] | None = None
    # the built-in world's seeds the study runs on (a study factor): roots hold {world_seed},
    # each seed runs into OUT/world<seed> (croft.experiments.worlds); []: the roots as given
    world_seeds: list[int] = field(default_factory=list)
    # the world seed of this config's data (set per world; every record carries it)
    world_seed: int | None = None

    SETUP: ClassVar[str] = "setup2"  # which authors' conventions apply (croft.conventions)
    IMAGES: ClassVar[bool] = True  # reads images through a backbone (synthetic: False)

    def evaluation_conventions(self) -> Any:
        """The resolved :class:`croft.conventions.Conventions` of this experiment."""
        from croft.conventions import resolve

        conv = self.conventions
        if not isinstance(conv, (str, dict)):
            raise CroftError(f"conventions: {conv!r}: use croft, authors or a mapping")
        return resolve(conv, setup=self.SETUP)

    def __post_init__(self) -> None:
        if self.protocol in ("", self.PROTOCOL):
            self.protocol = self.PROTOCOL
        else:
            raise CroftError(f"protocol {self.protocol!r} given to {type(self).__name__}")
        if self.knn_k != 1:  # the old key: the k of every plain knn entry
            warnings.warn(
                f"knn_k: {self.knn_k} is deprecated; write "
                f"scores: [{{name: knn, k: {self.knn_k}}}]",
                CroftDeprecationWarning,
                stacklevel=3,
            )
            k, self.knn_k = self.knn_k, 1
            self.scores = [{"name": "knn", "k": k} if s == "knn" else s for s in self.scores]

    def score_specs(self) -> list[Any]:
        """The parsed score list (:class:`croft.scores.ScoreSpec` each)."""
        from croft.score_lists import score_specs

        return score_specs(self.scores, where="scores")

    def check(self) -> None:
        """Values that are well-typed but wrong: one :class:`CroftError` line each."""
        safe_name(self.name, "experiment name")
        _choice("ood_transform", self.ood_transform, ("eval", "train"))
        _choice("precision", self.precision, ("fp32", "fp16", "bf16"))
        _choice("fit_engine", self.fit_engine, ("auto", "batched", "sequential"))
        _bounded("shots", self.shots, 1, MAX_SHOTS)
        _bounded("views", self.views, 1, MAX_VIEWS)
        self.train_view()  # crop_scale: two numbers with 0 < lo <= hi <= 1
        _bounded("val_per_class", self.val_per_class, 0, MAX_SHOTS)
        _bounded("batch_size", self.batch_size, 1, 1 << 16)
        _bounded("workers", self.workers, 0, 256)
        from croft.evaluation_frame import check_tag

        for o in self.ood:
            check_tag(o.tag, f"ood {o.name}")
            if o.per_fold and self.PROTOCOL != "lodo":
                raise CroftError(
                    f"ood {o.name}: {HELD_OUT} in a root needs protocol lodo (held-out domains)"
                )
        if not self.seeds:
            raise CroftError("seeds: list at least one seed, e.g. seeds: [1, 2, 3]")
        if len(set(self.seeds)) != len(self.seeds):
            raise CroftError(f"seeds: each seed once, got {self.seeds}")
        for seed in self.seeds:
            _bounded("seeds", seed, 0, 2**32 - 1)
        _bounded("view_seed", self.view_seed, 0, 2**32 - 1)
        check_device_name(self.device)
        for t in self.templates:
            if "{}" not in t:
                raise CroftError(f"templates: {t!r} has no '{{}}' for the class name")
        if not self.templates:
            raise CroftError("templates: list at least one, e.g. ['a photo of a {}.']")
        from croft.features.files import check_templates

        check_templates(self.templates, "templates")
        self._check_scores()
        self._check_methods()
        self._check_local()
        self._check_primary()
        from croft.experiments.worlds import check_worlds

        check_worlds(self)
        self.evaluation_conventions()

    def _check_scores(self) -> None:
        if not self.scores:
            raise CroftError("scores: list at least one, e.g. scores: [energy]")
        self.score_specs()

    def _check_local(self) -> None:
        """gl_mcm and locoop read local features: say so before any extraction."""
        if self.local_features:
            return
        names = [x if isinstance(x, str) else dict(x).get("name") for x in self.scores]
        needs = [f"score {n}" for n in names if n == "gl_mcm"]
        needs += [f"method {m.label}" for m in self.methods if m.method == "locoop"]
        if needs:
            raise CroftError(
                f"{needs[0]} needs local (patch) features; set local_features: true "
                "(they are cached in fp16 beside the global features)"
            )

    def _check_methods(self) -> None:
        if not self.methods:
            raise CroftError("the experiment lists no methods (methods: [...])")
        labels = [m.label for m in self.methods]
        if len(set(labels)) != len(labels):
            raise CroftError(f"method labels must be unique, got {labels}")
        for m in self.methods:
            safe_name(m.label, "method label")
        total = sum(m.points() for m in self.methods)
        check_limit("grid_points", total, "methods: grid points of all rows together")

    def _check_primary(self) -> None:
        if self.primary is None:
            return
        labels = [m.label for m in self.methods]
        extra = sorted(set(self.primary) - {"a", "b", "metric", "ood", "score"})
        if extra or not {"a", "b", "metric"} <= set(self.primary):
            raise CroftError(
                "primary: name the comparison as {a: LABEL, b: LABEL, metric: NAME} (ood: "
                f"SET, score: NAME for detection metrics), got {self.primary}"
            )
        for side in ("a", "b"):
            if self.primary[side] not in labels:
                raise CroftError(
                    f"primary.{side}: {self.primary[side]!r} is not a method label; "
                    f"choose one of: {', '.join(labels)}"
                )

    def train_view(self) -> Any:
        """The :class:`croft.features.ViewSpec` of the training views."""
        from croft.features import ViewSpec

        try:
            return ViewSpec.train_views(self.views, self.view_seed, self.crop_scale)
        except CroftError as exc:
            raise CroftError(f"{exc} (config keys views / view_seed / crop_scale)") from None

    def run_settings(self) -> dict[str, Any]:
        """The resolved settings that change what a run computes (part of its run key)."""
        doc = dataclasses.asdict(self)
        for key in self.NOT_IN_RUN_KEY:
            doc.pop(key, None)
        if self.crop_scale is None:  # absent: the run keys written before the key existed
            doc.pop("crop_scale", None)
        if not self.local_features:  # likewise
            doc.pop("local_features", None)
        for spec in doc.get("ood", []):  # near/far tags change no number
            spec.pop("tag", None)
        for spec in [doc.get("data"), *doc.get("shifted", [])]:
            if isinstance(spec, dict):
                spec.pop("tag", None)
        doc["conventions"] = self.evaluation_conventions().to_dict()
        return doc


def ood_tags(cfg: Any) -> dict[str, str]:
    """``{ood set: near | far}`` of the tagged ``ood`` entries (what records carry)."""
    return {o.name: o.tag for o in getattr(cfg, "ood", []) if o.tag}


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise CroftError(f"{key} {value!r}: use {' or '.join(allowed)}")


def _bounded(key: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise CroftError(f"{key}: {value} is out of range; use {low} to {high}")


def check_device_name(device: str) -> None:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (availability is checked before running)."""
    head, sep, idx = device.partition(":")
    if head not in ("cpu", "cuda", "mps") or (sep and (head != "cuda" or not idx.isdigit())):
        raise CroftError(f"device {device!r}: use {DEVICES}")


# ------------------------------------------------------------------------------ protocols
@dataclass
class LodoConfig(ExperimentBase):
    """Setup-II: leave one domain out; ``held_out`` empty means every domain in turn."""

    PROTOCOL: ClassVar[str] = "lodo"

    held_out: list[str] = field(default_factory=list)
    sampling: str = "balanced"  # balanced | per_class | authors (class-agnostic draw)
    val_fraction: float = 0.2  # when the layout has no train/val split
    # domains never used as a source nor held out, evaluated (accuracy only, as
    # ``shifted_accuracy``) by every fold's head, e.g. a style pre-training never saw
    extra_targets: list[str] = field(default_factory=list)

    def check(self) -> None:
        super().check()
        _choice("sampling", self.sampling, ("balanced", "per_class", "authors"))
        if not 0.0 <= self.val_fraction < 1.0:
            raise CroftError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        both = sorted(set(self.extra_targets) & set(self.held_out))
        if both:
            raise CroftError(f"extra_targets {both} are also held_out; list each domain once")
        if len(set(self.extra_targets)) != len(self.extra_targets):
            raise CroftError(f"extra_targets: each domain once, got {self.extra_targets}")

    def run_settings(self) -> dict[str, Any]:
        doc = super().run_settings()
        if not self.extra_targets:  # absent: the run keys written before the key existed
            doc.pop("extra_targets", None)
        return doc


@dataclass
class ImagenetConfig(ExperimentBase):
    """Setup-I: per seed an ImageNet class split (ID classes / open-set OOD classes)."""

    PROTOCOL: ClassVar[str] = "imagenet"
    SETUP: ClassVar[str] = "setup1"

    shifted: list[DataSpec] = field(default_factory=list)  # covariate-shifted test sets
    id_fraction: float = 0.4
    val_source: str = "train"  # train | authors (4/class of ImageNet val)
    detection_id: str = "test"  # test | authors_val (the 4/class val draw)
    ood_draw: str = "all"  # all | authors_1000 (ood_draw_size random images)
    ood_draw_size: int = 1000
    ar_protocol: str = "faithful"  # faithful (all ID classes) | 200 (A/R: classes present)

    def check(self) -> None:
        super().check()
        _choice("val_source", self.val_source, ("train", "authors"))
        _choice("detection_id", self.detection_id, ("test", "authors_val"))
        _choice("ood_draw", self.ood_draw, ("all", "authors_1000"))
        _choice("ar_protocol", self.ar_protocol, ("faithful", "200"))
        if self.data.layout != "imagenet":
            raise CroftError(
                f"protocol imagenet needs data.layout imagenet, got {self.data.layout!r}"
            )
        variant = str(self.data.options.get("variant") or "imagenet")
        if variant.lower() not in ("imagenet", ""):
            raise CroftError("protocol imagenet: data is ImageNet itself; put variants in shifted")
        if not 0.0 < self.id_fraction < 1.0:
            raise CroftError(f"id_fraction must be in (0, 1), got {self.id_fraction}")
        _bounded("ood_draw_size", self.ood_draw_size, 1, 10_000_000)
        names = [s.name for s in self.shifted]
        if len(set(names)) != len(names):
            raise CroftError(f"shifted set names must be unique, got {names}")
        if OPEN_SET_NAME in [o.name for o in self.ood]:
            raise CroftError(f"ood name {OPEN_SET_NAME!r} is taken by the held-out classes")
