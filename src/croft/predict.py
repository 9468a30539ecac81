"""Predict on raw images with a fitted head and the frozen backbone it was fitted on.

A :class:`Predictor` holds a :class:`~croft.methods.FittedHead`, its
:class:`~croft.backbones.Backbone` and the head's OOD threshold. For each image it gives
the class, the confidence (maximum softmax probability), the energy score
``logsumexp(logits)`` (**higher = more in-distribution**) and the OOD flag
``energy < threshold`` (``None`` when the head stores no threshold).

:func:`load_predictor` reads a head directory written by ``croft fit`` and loads the
backbone named in ``head.json`` (``backbone_spec``) or the one passed in, and refuses a
backbone whose fingerprint differs from the one stored with the head (``backbone``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import torch

from croft.errors import CroftError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as PILImage

    from croft.backbones import Backbone
    from croft.data.images import BadImageError
    from croft.methods.base import FittedHead

    ImageItem: TypeAlias = str | os.PathLike[str] | PILImage.Image

__all__ = ["Prediction", "Predictor", "load_predictor", "ood_threshold", "verify_backbone"]


@dataclass(frozen=True)
class Prediction:
    """One image's prediction.

    ``confidence`` is the maximum softmax probability in ``[1/C, 1]``; ``energy`` is
    ``logsumexp(logits)`` (higher = more in-distribution); ``is_ood`` is
    ``energy < threshold``, or ``None`` when there is no threshold.
    """

    source: str
    class_name: str
    class_index: int
    confidence: float
    energy: float
    is_ood: bool | None
    threshold: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def ood_threshold(meta: dict[str, Any], where: str = "head") -> float | None:
    """The energy threshold stored in a head's metadata (``ood_threshold.value``), or None."""
    info = meta.get("ood_threshold")
    if info is None:
        return None
    if not isinstance(info, dict) or "value" not in info:
        raise CroftError(
            f"{where}: ood_threshold in head.json is {info!r}, expected "
            '{"score": "energy", "tpr": ..., "value": ...}; refit with --val or remove the key'
        )
    score = info.get("score", "energy")
    if score != "energy":
        raise CroftError(
            f"{where}: ood_threshold is for score {score!r}, but prediction flags OOD with "
            "the energy score; store an energy threshold or remove the key"
        )
    value = info["value"]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise CroftError(
            f"{where}: ood_threshold.value in head.json must be a finite number, got "
            f"{value!r:.40}; refit with --val or remove the key"
        )
    return float(value)


def _fingerprint_hash(fp: dict[str, Any]) -> str:
    import hashlib

    text = json.dumps(fp, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:20] + "..."


def verify_backbone(backbone: Backbone, meta: dict[str, Any], where: str = "head") -> None:
    """Refuse ``backbone`` when it cannot produce the features the head was fitted on.

    Compares its fingerprint with ``meta["backbone"]`` (when stored) on every field but
    ``precision`` (fp16 / bf16 features are close enough to fp32 ones), and its embedding
    dimension with ``meta["feature_dim"]``.
    """
    stored = meta.get("backbone")
    if isinstance(stored, dict):
        skip = {"precision"} | ({"config_files"} - set(stored))  # heads saved before it existed
        ours = {k: v for k, v in backbone.fingerprint().items() if k not in skip}
        theirs = {k: v for k, v in stored.items() if k != "precision"}
        if _fingerprint_hash(ours) != _fingerprint_hash(theirs):
            diffs = [
                f"{k}: head {_short(theirs.get(k))}, given {_short(ours.get(k))}"
                for k in sorted(set(ours) | set(theirs))
                if ours.get(k) != theirs.get(k)
            ]
            raise CroftError(
                f"{where}: backbone {backbone.spec!r} differs from the one this head was fitted "
                f"on ({'; '.join(diffs)}); pass the backbone whose features trained the head "
                "with --backbone SPEC (Python: backbone=SPEC)"
            )
    dim = meta.get("feature_dim")
    if dim is not None and int(dim) != backbone.dim:
        raise CroftError(
            f"{where}: backbone {backbone.spec!r} gives {backbone.dim}-d features but the head "
            f"expects {dim}-d; pass the backbone the head was fitted on with --backbone SPEC"
        )


class Predictor:
    """A fitted head + its frozen backbone + the OOD threshold (energy; None = no flag).

    ``backbone`` may be a callable returning the backbone: it is then loaded (and
    verified) on first use, so :meth:`predict_features` and :attr:`head` work without it.
    """

    def __init__(
        self,
        head: FittedHead,
        backbone: Backbone | Callable[[], Backbone] | None = None,
        *,
        threshold: float | None = None,
    ) -> None:
        self.head = head.eval()
        self.threshold = None if threshold is None else float(threshold)
        self._backbone = backbone

    @property
    def class_names(self) -> list[str]:
        return list(self.head.class_names)

    @property
    def backbone(self) -> Backbone:
        """The backbone (loaded and verified on first access when given as a callable)."""
        from croft.backbones import Backbone

        if self._backbone is None:
            raise CroftError(
                "this predictor has no backbone, so it only takes features; "
                "use predict_features(x) or give it a backbone"
            )
        if not isinstance(self._backbone, Backbone):
            self._backbone = self._backbone()
        return self._backbone

    @torch.no_grad()
    def predict_features(
        self, x: torch.Tensor, sources: Sequence[str] | None = None
    ) -> list[Prediction]:
        """Predictions for raw image features ``x`` ``(N, D)`` (as the backbone gives them)."""
        from croft.scores import energy

        feats = self.head.check_features(x)
        if sources is not None and len(sources) != feats.shape[0]:
            raise CroftError(f"{len(sources)} sources given for {feats.shape[0]} feature rows")
        names = list(sources) if sources is not None else [f"#{i}" for i in range(len(feats))]
        if feats.shape[0] == 0:
            return []
        logits = self.head.logits(feats).float()
        conf, idx = torch.softmax(logits, dim=1).max(dim=1)
        en = energy(logits)
        out = []
        for src, c, i, e in zip(names, conf.tolist(), idx.tolist(), en.tolist(), strict=True):
            flag = None if self.threshold is None else bool(e < self.threshold)
            out.append(Prediction(src, self.head.class_names[i], i, c, e, flag, self.threshold))
        return out

    def _open(self, item: Any, position: int) -> tuple[str, PILImage.Image]:
        from PIL import Image

        from croft.data.images import _to_rgb, load_image

        if isinstance(item, Image.Image):
            name = getattr(item, "filename", "") or f"<image {position}>"
            return name, item if item.mode == "RGB" else _to_rgb(item)
        if isinstance(item, (str, os.PathLike)):
            return str(item), load_image(item)
        raise CroftError(
            f"item {position} is a {type(item).__name__}; pass file paths or PIL images"
        )

    @torch.no_grad()
    def encode(
        self,
        items: Sequence[ImageItem],
        *,
        on_bad_image: Callable[[str, BadImageError], None] | None = None,
    ) -> tuple[torch.Tensor, list[str]]:
        """Raw features ``(n, D)`` of the readable ``items`` and their sources.

        An undecodable file raises :class:`~croft.data.images.BadImageError`, or, with
        ``on_bad_image``, is reported to it (``(path, error)``) and left out.
        """
        from croft.data.images import BadImageError
        from croft.features.extract import autocast_for

        backbone = self.backbone
        transform = backbone.preprocess.eval_transform()
        tensors, sources = [], []
        for pos, item in enumerate(items):
            try:
                src, img = self._open(item, pos)
            except BadImageError as exc:
                if on_bad_image is None:
                    raise
                on_bad_image(str(item), exc)
                continue
            tensors.append(transform(img))
            sources.append(src)
        if not tensors:
            return torch.zeros(0, backbone.dim), sources
        with autocast_for(backbone):
            feats = backbone.encode_image(torch.stack(tensors))
        return feats.float(), sources

    def predict(
        self,
        items: Sequence[ImageItem] | ImageItem,
        batch_size: int = 64,
        *,
        on_bad_image: Callable[[str, BadImageError], None] | None = None,
    ) -> list[Prediction]:
        """Predict image files or PIL images, ``batch_size`` per forward pass, in order.

        An undecodable file raises :class:`~croft.data.images.BadImageError` (a
        :class:`CroftError`) unless ``on_bad_image(path, error)`` is given: then it is
        reported there and left out of the result.
        """
        from PIL import Image

        if isinstance(items, (str, os.PathLike, Image.Image)):
            items = [items]
        items = list(items)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise CroftError(f"batch_size must be a positive integer, got {batch_size!r}")
        out: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            feats, sources = self.encode(chunk, on_bad_image=on_bad_image)
            out.extend(self.predict_features(feats, sources))
        return out

    def __repr__(self) -> str:
        bb = self._backbone
        bb_text = getattr(bb, "spec", None) or ("<not loaded>" if bb is not None else None)
        return (
            f"Predictor(head={self.head.head_name!r}, classes={self.head.num_classes}, "
            f"backbone={bb_text!r}, threshold={self.threshold})"
        )


def _resolve_backbone(
    head: FittedHead,
    where: str,
    backbone: str | Backbone | None,
    device: str | torch.device,
    precision: str | None,
) -> Backbone:
    from croft.backbones import load_backbone

    meta = {**head.meta, "feature_dim": head.feature_dim}
    stored = meta.get("backbone")
    if precision is None:
        precision = stored.get("precision", "fp32") if isinstance(stored, dict) else "fp32"
    if backbone is None:
        spec = meta.get("backbone_spec")
        if not spec:
            raise CroftError(
                f"{where}: head.json names no backbone (backbone_spec); pass the backbone the "
                "head was fitted on with --backbone SPEC (Python: backbone=SPEC)"
            )
        try:
            bb = load_backbone(str(spec), device=device, precision=precision)
        except CroftError as exc:
            raise CroftError(
                f"{where}: cannot load the backbone stored with the head ({exc}); pass it "
                "with --backbone SPEC (Python: backbone=SPEC)"
            ) from None
    elif isinstance(backbone, str):
        bb = load_backbone(backbone, device=device, precision=precision)
    else:
        bb = backbone
    verify_backbone(bb, meta, where)
    return bb


def load_predictor(
    head_dir: str | os.PathLike[str],
    *,
    backbone: str | Backbone | None = None,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    lazy: bool = True,
) -> Predictor:
    """Load a head directory (``croft fit --out``) with its backbone.

    Args:
        backbone: a spec string or a loaded backbone; default: ``backbone_spec`` of head.json.
        device: where the head and the backbone run.
        precision: backbone precision; default: the one the head's features were made with.
        lazy: load and verify the backbone on first image prediction (default, the same
            as :func:`croft.load`; ``predict_features`` then needs no backbone); ``False``:
            now, so a wrong or missing backbone fails here.
    """
    from croft.methods.io import load_head

    where = str(Path(head_dir))
    head = load_head(head_dir, device=device)
    threshold = ood_threshold(head.meta, where)

    def loader() -> Backbone:
        return _resolve_backbone(head, where, backbone, device, precision)

    predictor = Predictor(head, loader, threshold=threshold)
    if not lazy:
        _ = predictor.backbone
    return predictor
