"""Image preprocessing that travels with a backbone's weights.

A :class:`Preprocess` says how an image becomes the tensor the encoder was trained on:
the side length, the normalisation, the interpolation and how the image is fitted into
the square. It is plain data (``to_dict`` / ``from_dict``), recorded in every feature
file's provenance; the transforms it builds import torchvision lazily.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from croft.errors import CroftError
from croft.limits import check_limit

if TYPE_CHECKING:
    import torch
    from PIL import Image

OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
RESIZE_MODES = ("shortest", "longest", "squash")

TRAIN_SCALE = (0.08, 1.0)
TRAIN_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def _to_triple(value: Any, field: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,) * 3
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok or not all(math.isfinite(v) for v in value):
        raise CroftError(f"preprocess {field} must be 3 finite numbers, got {value!r:.60}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


@dataclass(frozen=True)
class Preprocess:
    """How images are prepared for one backbone.

    ``resize_mode``: ``"shortest"`` resizes the shorter side to ``image_size`` and
    centre-crops (CLIP's eval transform); ``"longest"`` resizes the longer side and pads
    with zeros to a square; ``"squash"`` resizes both sides to ``image_size``.
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def __post_init__(self) -> None:
        size = self.image_size
        if isinstance(size, (tuple, list)):
            if len(set(size)) != 1:
                raise CroftError(f"preprocess image_size must be square, got {size!r}")
            size = size[0]
        if isinstance(size, float) and size.is_integer():
            size = int(size)
        if not isinstance(size, int) or isinstance(size, bool):
            raise CroftError(f"preprocess image_size must be a whole number, got {size!r:.40}")
        check_limit("image_size", size, "preprocess image_size")
        object.__setattr__(self, "image_size", int(size))
        if self.image_size <= 0:
            raise CroftError(f"preprocess image_size must be positive, got {self.image_size}")
        object.__setattr__(self, "mean", _to_triple(self.mean, "mean"))
        object.__setattr__(self, "std", _to_triple(self.std, "std"))
        if any(s <= 0 for s in self.std):
            raise CroftError(f"preprocess std must be positive, got {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise CroftError(
                f"unknown interpolation {self.interpolation!r}; "
                f"use one of {', '.join(INTERPOLATIONS)}"
            )
        if self.resize_mode not in RESIZE_MODES:
            raise CroftError(
                f"unknown resize_mode {self.resize_mode!r}; use one of {', '.join(RESIZE_MODES)}"
            )

    @classmethod
    def openai(cls, image_size: int = 224) -> Preprocess:
        """OpenAI CLIP's preprocessing: CLIP mean/std, bicubic, shorter side + centre crop."""
        return cls(image_size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {"image_size", "mean", "std", "interpolation", "resize_mode"}
        extra = sorted(set(d) - known)
        if extra:
            raise CroftError(f"unknown preprocess keys {extra}; expected {sorted(known)}")
        return cls(**d)

    # -- transforms ---------------------------------------------------------------------------

    def _mode(self) -> Any:
        from torchvision.transforms import InterpolationMode

        return InterpolationMode(self.interpolation)

    def _finish(self, img: Image.Image) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        tensor = TF.to_tensor(img)
        return TF.normalize(tensor, list(self.mean), list(self.std))

    def eval_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """Deterministic transform: PIL image -> normalised ``(3, S, S)`` float tensor."""
        from torchvision.transforms import functional as TF

        size, mode = self.image_size, self._mode()

        def transform(img: Image.Image) -> torch.Tensor:
            img = img.convert("RGB")
            if self.resize_mode == "squash":
                img = TF.resize(img, [size, size], interpolation=mode, antialias=True)
            elif self.resize_mode == "longest":
                w, h = img.size
                scale = size / max(w, h)
                new = [max(1, round(h * scale)), max(1, round(w * scale))]
                img = TF.resize(img, new, interpolation=mode, antialias=True)
                img = TF.center_crop(img, [size, size])  # pads the short side with zeros
            else:
                img = TF.resize(img, size, interpolation=mode, antialias=True)
                img = TF.center_crop(img, [size, size])
            return self._finish(img)

        return transform

    def train_transform(
        self, scale: tuple[float, float] | None = None
    ) -> Callable[[Image.Image, int], torch.Tensor]:
        """Augmenting transform ``(img, seed) -> (3, S, S)``: random resized crop with area
        ``scale`` (default ``TRAIN_SCALE`` = (0.08, 1)) and ratio (3/4, 4/3), then a
        horizontal flip with p = 0.5, then normalise.

        The crop and flip are drawn from a local ``torch.Generator`` seeded with ``seed``, so
        the same (image, seed) always gives the same tensor and the global RNG is untouched.
        """
        import torch
        from torchvision.transforms import functional as TF

        size, mode = self.image_size, self._mode()
        area = TRAIN_SCALE if scale is None else scale

        def transform(img: Image.Image, seed: int) -> torch.Tensor:
            img = img.convert("RGB")
            gen = torch.Generator().manual_seed(int(seed))
            top, left, h, w = _random_resized_crop_box(img.size, gen, area)
            img = TF.resized_crop(img, top, left, h, w, [size, size], interpolation=mode)
            if torch.rand(1, generator=gen).item() < 0.5:
                img = TF.hflip(img)
            return self._finish(img)

        return transform


def _random_resized_crop_box(
    wh: tuple[int, int], gen: torch.Generator, scale: tuple[float, float] = TRAIN_SCALE
) -> tuple[int, int, int, int]:
    """Sample ``(top, left, height, width)`` of a crop covering a random area fraction in
    ``scale`` with a log-uniform aspect ratio in ``TRAIN_RATIO`` (10 tries, then the
    largest centred crop with a ratio inside the range)."""
    import torch

    width, height = wh
    area = width * height
    log_lo, log_hi = math.log(TRAIN_RATIO[0]), math.log(TRAIN_RATIO[1])
    for _ in range(10):
        u = torch.rand(2, generator=gen).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        ratio = math.exp(log_lo + u[1] * (log_hi - log_lo))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen).item())
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < TRAIN_RATIO[0]:
        w, h = width, round(width / TRAIN_RATIO[0])
    elif in_ratio > TRAIN_RATIO[1]:
        h, w = height, round(height * TRAIN_RATIO[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w
