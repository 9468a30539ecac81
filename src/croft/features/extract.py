"""Running a frozen image encoder over a dataset index: views, DataLoader, AMP, torchrun ranks.

The keyed, resumable store built on this lives in :mod:`croft.features.store`.

Views: an ``eval`` view is the backbone's deterministic transform (resize + centre crop);
a ``train`` view ``v`` of record ``i`` is the backbone's augmenting transform (random
resized crop + flip) drawn with the seed :func:`view_seed` ``(base seed, i, v)``, so a
view's pixels depend on neither the batch, nor the DataLoader worker, nor the rank.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) a process group
is created (gloo on CPU, nccl on CUDA) unless one exists; :func:`dist_context` says which
rank this process is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from croft.errors import CroftError

if TYPE_CHECKING:
    from croft.backbones import Backbone, Preprocess

DIST_TIMEOUT = timedelta(hours=6)
"""Collective timeout: ranks wait this long at the barrier for the slowest rank."""


MAX_VIEWS = 1024  # augmented views per image; memory grows as N x V x D
#: The train views' default RandomResizedCrop area range (``croft.backbones.preprocess``).
DEFAULT_CROP_SCALE = (0.08, 1.0)


@dataclass(frozen=True)
class ViewSpec:
    """Which views of each image are encoded.

    ``eval``: one centre-crop view (features ``(N, D)``); ``views`` and ``seed`` are 1, 0.
    ``train``: ``views`` augmented views per image (features ``(N, V, D)``), view ``v``
    of record ``i`` drawn with seed ``view_seed(seed, i, v)``; ``crop_scale`` is the
    random resized crop's area range ``(lo, hi)``, ``0 < lo <= hi <= 1`` (default
    ``(0.08, 1)``; it enters :meth:`to_dict`, hence store keys, only when it differs).
    """

    kind: str = "eval"
    views: int = 1
    seed: int = 0
    crop_scale: tuple[float, float] = DEFAULT_CROP_SCALE

    def __post_init__(self) -> None:
        if self.kind not in ("eval", "train"):
            raise CroftError(f"view kind must be 'eval' or 'train', got {self.kind!r}")
        if self.kind == "eval":
            object.__setattr__(self, "views", 1)
            object.__setattr__(self, "seed", 0)
        elif not isinstance(self.views, int) or not 1 <= self.views <= MAX_VIEWS:
            raise CroftError(
                f"train views must be an integer in [1, {MAX_VIEWS}], got {self.views!r}"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise CroftError(f"view seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "crop_scale", _crop_scale(self.crop_scale))
        if self.kind == "eval" and self.crop_scale != DEFAULT_CROP_SCALE:
            raise CroftError("crop_scale applies to train views only, not the eval view")

    @classmethod
    def eval_view(cls) -> ViewSpec:
        """One resize + centre-crop view per image."""
        return cls("eval")

    @classmethod
    def train_views(
        cls, views: int, seed: int = 0, crop_scale: Sequence[float] | None = None
    ) -> ViewSpec:
        """``views`` augmented views per image, seeded by ``seed``, cropping an area
        fraction in ``crop_scale`` (default ``(0.08, 1)``)."""
        if isinstance(views, float) and not views.is_integer():
            raise CroftError(f"train views must be an integer, got {views!r}")
        try:
            views, seed = int(views), int(seed)
        except (OverflowError, ValueError, TypeError):
            raise CroftError(f"train views must be an integer in [1, {MAX_VIEWS}]") from None
        scale = DEFAULT_CROP_SCALE if crop_scale is None else _crop_scale(crop_scale)
        return cls("train", views, seed, scale)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "eval"}`` or ``{"kind": "train", "views": V, "seed": S}``, plus
        ``"crop_scale": [lo, hi]`` when it is not the default (old keys stay valid)."""
        if self.kind == "eval":
            return {"kind": "eval"}
        d: dict[str, Any] = {"kind": "train", "views": self.views, "seed": self.seed}
        if self.crop_scale != DEFAULT_CROP_SCALE:
            d["crop_scale"] = list(self.crop_scale)
        return d

    @property
    def tag(self) -> str:
        """Short name for directory names: ``eval``, ``train-v8-s0`` or, with a
        non-default crop scale, ``train-v8-s0-c0.7-1``."""
        if self.kind == "eval":
            return "eval"
        tag = f"train-v{self.views}-s{self.seed}"
        if self.crop_scale != DEFAULT_CROP_SCALE:
            tag += f"-c{self.crop_scale[0]:g}-{self.crop_scale[1]:g}"
        return tag


def _crop_scale(value: Any) -> tuple[float, float]:
    """``(lo, hi)`` floats with ``0 < lo <= hi <= 1``, or a one-line :class:`CroftError`."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise CroftError(f"crop_scale must be two numbers [lo, hi], got {value!r}") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise CroftError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got [{lo:g}, {hi:g}]")
    return lo, hi


def view_seed(base_seed: int, index: int, view: int) -> int:
    """Seed of view ``view`` of record ``index`` (a 63-bit hash of the three numbers)."""
    digest = hashlib.sha256(f"croft-view:{base_seed}:{index}:{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class ImageViews(torch.utils.data.Dataset):
    """Record ``i`` -> ``(i, views (V, 3, S, S), ok, error)``.

    An image :func:`~croft.data.load_image` cannot decode gives zeros, ``ok=False`` and the
    error line. Picklable (transforms are built lazily in each worker).
    """

    def __init__(
        self, root: Path, paths: Sequence[str], preprocess: Preprocess, view: ViewSpec
    ) -> None:
        self.root = Path(root)
        self.paths = list(paths)
        self.preprocess = preprocess
        self.view = view
        self._transform: Any = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_transform"] = None
        return state

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, bool, str]:
        from croft.data import BadImageError, load_image

        view, size = self.view, self.preprocess.image_size
        try:
            img = load_image(self.root / self.paths[i])
        except BadImageError as exc:
            return i, torch.zeros(view.views, 3, size, size), False, str(exc)
        if self._transform is None:
            pp = self.preprocess
            self._transform = (
                pp.eval_transform()
                if view.kind == "eval"
                else pp.train_transform(scale=view.crop_scale)
            )
        if view.kind == "eval":
            x = self._transform(img).unsqueeze(0)
        else:
            x = torch.stack(
                [self._transform(img, view_seed(view.seed, i, v)) for v in range(view.views)]
            )
        return i, x, True, ""


def plan_batches(
    shards: Sequence[tuple[int, int]], records_per_batch: int
) -> list[tuple[int, list[int]]]:
    """``[(shard position, record indices)]``: each shard ``[start, stop)`` cut into batches
    of ``records_per_batch`` from its start, so batches never straddle shards and do not
    depend on which other shards are planned."""
    out: list[tuple[int, list[int]]] = []
    for pos, (start, stop) in enumerate(shards):
        for b in range(start, stop, records_per_batch):
            out.append((pos, list(range(b, min(b + records_per_batch, stop)))))
    return out


def autocast_for(backbone: Backbone) -> contextlib.AbstractContextManager[Any]:
    """AMP autocast to the backbone's precision on CUDA (fp16/bf16); a no-op otherwise."""
    device = torch.device(backbone.device)
    if device.type == "cuda" and backbone.precision != "fp32":
        return torch.autocast(device_type=device.type, dtype=backbone.dtype)
    return contextlib.nullcontext()


def encode_batches(
    backbone: Backbone,
    dataset: ImageViews,
    batches: Sequence[list[int]],
    *,
    workers: int = 0,
    local: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str], torch.Tensor | None]]:
    """Encode ``batches`` of record indices in order.

    Yields ``(indices (n,), features (n, V, D) float32 on CPU, ok (n,) bool, errors,
    local)`` per batch, ``local`` the ``(n, V, P, D)`` float16 local features from the same
    forward pass (:meth:`~croft.backbones.Backbone.encode_image_local`) when asked for, else
    ``None``; rows of undecodable images are zeros and are never encoded.
    """
    device = torch.device(backbone.device)
    pin = device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[list(b) for b in batches],
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=4 if workers > 0 else None,
    )
    views, dim = dataset.view.views, backbone.dim
    tokens = backbone.local_tokens() if local else 0
    for idx, x, ok, errors in loader:
        n = int(idx.shape[0])
        feats = torch.zeros(n, views, dim)
        loc = torch.zeros(n, views, tokens, dim, dtype=torch.float16) if local else None
        if bool(ok.any()):
            sel = x if bool(ok.all()) else x[ok]
            sel = sel.flatten(0, 1).to(device, non_blocking=pin)
            with autocast_for(backbone):
                if loc is None:
                    out = backbone.encode_image(sel)
                else:
                    out, out_local = backbone.encode_image_local(sel)
                    loc[ok] = out_local.half().cpu().view(-1, views, tokens, dim)
            feats[ok] = out.float().cpu().view(-1, views, dim)
        yield idx, feats, ok, list(errors), loc


def extract_text_features(
    backbone: Backbone, class_names: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """Raw text features ``(C, T, D)`` of every class in every template.

    Template ``t`` for class ``c`` reads ``t.format(c with '_' -> ' ')``.
    """
    templates = check_templates(templates)
    if not class_names:
        raise CroftError("no class names to encode; the dataset index lists no classes")
    prompts = [t.format(c.replace("_", " ")) for c in class_names for t in templates]
    with autocast_for(backbone):
        feats = backbone.encode_text(prompts)
    return feats.float().cpu().view(len(class_names), len(templates), -1)


def check_templates(templates: Sequence[str]) -> list[str]:
    """Templates as a list; each must hold exactly one ``{}``."""
    if isinstance(templates, str):
        templates = [templates]
    out = list(templates)
    if not out:
        raise CroftError("templates list is empty; pass at least one, e.g. 'a photo of a {}.'")
    for t in out:
        if t.count("{}") != 1 or t.replace("{}", "").count("{") or t.replace("{}", "").count("}"):
            raise CroftError(
                f"prompt template {t!r} must hold exactly one '{{}}' for the class name "
                "and no other braces, e.g. 'a photo of a {}.'"
            )
    return out


# -- torchrun -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistContext:
    """This process's place in a (torchrun) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise CroftError(f"environment variable {name}={value!r} is not an integer") from None


def env_context() -> DistContext:
    """Rank, world size and local rank from torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``."""
    return DistContext(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def resolve_device(device: Any, ctx: DistContext | None = None) -> torch.device:
    """``device`` as a torch.device; a bare ``cuda`` under torchrun means ``cuda:LOCAL_RANK``."""
    ctx = ctx or env_context()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CroftError(f"unknown device {device!r}; use e.g. cpu, cuda or cuda:1") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CroftError(f"device {device!r} asked for but CUDA is not available; use cpu")
        if dev.index is None and ctx.world_size > 1:
            dev = torch.device("cuda", ctx.local_rank)
    return dev


@contextlib.contextmanager
def dist_context(device: Any) -> Iterator[DistContext]:
    """The job's :class:`DistContext`; creates the process group (gloo on CPU, nccl on
    CUDA) when ``WORLD_SIZE > 1`` and none exists, and destroys what it created."""
    import torch.distributed as dist

    created = False
    if dist.is_available() and dist.is_initialized():
        ctx = DistContext(dist.get_rank(), dist.get_world_size(), env_context().local_rank)
    else:
        ctx = env_context()
        if ctx.world_size > 1:
            if not dist.is_available():
                raise CroftError("WORLD_SIZE > 1 but torch.distributed is not available")
            dev = torch.device(device)
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            dist.init_process_group(backend=backend, timeout=DIST_TIMEOUT)
            created = True
    try:
        yield ctx
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def barrier(device: Any) -> None:
    """Wait for every rank (no-op without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    dev = torch.device(device)
    if dist.get_backend() == "nccl" and dev.type == "cuda" and dev.index is not None:
        dist.barrier(device_ids=[dev.index])
    else:
        dist.barrier()
