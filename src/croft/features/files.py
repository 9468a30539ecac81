"""Feature files: safetensors with a documented schema.

A feature file holds the frozen encoder's outputs for one split of one dataset.

Tensors
    ``features``       float, ``(N, D)``, or ``(N, V, D)`` for ``V`` augmented views per
                       image (training sets). Raw encoder outputs, NOT L2-normalised.
    ``labels``         int64 ``(N,)``: class index into ``class_names``; ``-1`` = unknown
                       class (open-set OOD data).
    ``domains``        int64 ``(N,)``, optional: index into ``domain_names``.
    ``text_features``  float ``(C, D)`` or ``(C, T, D)`` for ``T`` prompt templates,
                       optional: raw text-encoder outputs, one row per class (and template).
    ``local_features`` float16 ``(N, P, D)``, or ``(N, V, P, D)`` with views, optional:
                       ``P`` local (patch) features per image in the joint space (a ViT's
                       projected patch tokens, a CLIP ResNet's attention-pool map; see
                       :mod:`croft.backbones.local`), raw, NOT L2-normalised.

Metadata (safetensors string header; JSON-encoded values)
    ``croft_schema``   ``"croft.features/1"``.
    ``class_names``    list of ``C`` class names (label order).
    ``domain_names``   list of domain names (index order), may be empty.
    ``templates``      list of ``T`` prompt templates (``"a photo of a {}."``).
    ``logit_scale``    the backbone's learned logit scale (``exp`` already applied).
    ``extra``          free-form dict: backbone fingerprint, dataset, split, view, paths.
    ``checksum``       :func:`tensor_digest` of the tensors; verified on read, so a
                       corrupted file is an error, never used (absent in older files).

This module holds :class:`FeatureSet` and its reader and writer; the checks of its values
(:mod:`croft.features.field_checks`) and the checksum and canonical bytes
(:mod:`croft.features.digest`) are re-exported here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from croft.errors import CroftError
from croft.features.digest import canonical_safetensors, tensor_digest, verify_digest
from croft.features.field_checks import MIN_LOGIT_SCALE as MIN_LOGIT_SCALE
from croft.features.field_checks import check_class_names, check_logit_scale, check_templates
from croft.features.field_checks import fill_template as fill_template
from croft.fileio import atomic_write_bytes, parse_json
from croft.limits import check_limit

SCHEMA = "croft.features/1"


@dataclass
class FeatureSet:
    """Image features (optionally with views), labels, domains and class text features."""

    features: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    domains: torch.Tensor | None = None
    domain_names: list[str] = field(default_factory=list)
    text_features: torch.Tensor | None = None
    templates: list[str] = field(default_factory=list)
    logit_scale: float = 100.0
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"
    local_features: torch.Tensor | None = None  # (N, P, D) or (N, V, P, D), fp16

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------- shape info
    @property
    def num_views(self) -> int:
        """Number of augmented views ``V`` (1 for a ``(N, D)`` file)."""
        return 1 if self.features.dim() == 2 else int(self.features.shape[1])

    @property
    def dim(self) -> int:
        return int(self.features.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def view(self, v: int) -> torch.Tensor:
        """Features of view ``v mod V``, shape ``(N, D)``."""
        if self.features.dim() == 2:
            return self.features
        return self.features[:, v % self.num_views]

    def local_view(self, v: int) -> torch.Tensor | None:
        """Local features of view ``v mod V``, ``(N, P, D)``, or ``None`` without them."""
        loc = self.local_features
        if loc is None or loc.dim() == 3:
            return loc
        return loc[:, v % self.num_views]

    def eval_local(self) -> torch.Tensor | None:
        """``(N, P, D)`` local features of view 0, or ``None``."""
        return self.local_view(0)

    def eval_features(self) -> torch.Tensor:
        """``(N, D)`` features for evaluation: view 0 (the centre crop by convention)."""
        return self.view(0)

    def subset(self, mask: torch.Tensor) -> FeatureSet:
        """The rows where ``mask`` (bool ``(N,)`` or index tensor) selects."""
        return FeatureSet(
            features=self.features[mask],
            labels=self.labels[mask],
            class_names=list(self.class_names),
            domains=None if self.domains is None else self.domains[mask],
            domain_names=list(self.domain_names),
            text_features=self.text_features,
            templates=list(self.templates),
            logit_scale=self.logit_scale,
            extra=dict(self.extra),
            source=self.source,
            local_features=None if self.local_features is None else self.local_features[mask],
        )

    # ----------------------------------------------------------------- validation
    def validate(self, *, allow_unknown_labels: bool = True) -> None:
        """Raise :class:`CroftError` with one line for any inconsistency."""
        where = self.source
        f = self.features
        if not isinstance(f, torch.Tensor) or f.dim() not in (2, 3):
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise CroftError(
                f"{where}: 'features' must have shape (N, D) or (N, V, D), got {shape}"
            )
        if not f.is_floating_point():
            raise CroftError(f"{where}: 'features' must be floating point, got {f.dtype}")
        if f.numel() == 0:
            raise CroftError(f"{where}: 'features' is empty (shape {tuple(f.shape)})")
        bad = ~torch.isfinite(f)
        if bool(bad.any()):
            row = int(bad.reshape(f.shape[0], -1).any(1).nonzero()[0, 0])
            raise CroftError(
                f"{where}: features contain NaN or inf (first at row {row}); "
                "re-extract them or drop those rows"
            )
        n = f.shape[0]
        if self.labels.dim() != 1 or self.labels.shape[0] != n:
            raise CroftError(
                f"{where}: 'labels' must have shape ({n},) to match features, "
                f"got {tuple(self.labels.shape)}"
            )
        if self.labels.is_floating_point() or self.labels.dtype == torch.bool:
            raise CroftError(f"{where}: 'labels' must be integers, got {self.labels.dtype}")
        check_limit("feature_dim", f.shape[-1], f"{where}: feature dimension")
        check_class_names(self.class_names, f"{where}: class_names")
        lo = -1 if allow_unknown_labels else 0
        if n and (int(self.labels.min()) < lo or int(self.labels.max()) >= self.num_classes):
            raise CroftError(
                f"{where}: labels out of range [{lo}, {self.num_classes - 1}] "
                f"(min {int(self.labels.min())}, max {int(self.labels.max())}); "
                "class_names must list every class"
            )
        if self.domains is not None:
            if self.domains.shape != self.labels.shape:
                raise CroftError(
                    f"{where}: 'domains' must have shape ({n},), got {tuple(self.domains.shape)}"
                )
            if self.domains.is_floating_point() or self.domains.dtype == torch.bool:
                raise CroftError(f"{where}: 'domains' must be integers, got {self.domains.dtype}")
            if n and int(self.domains.min()) < 0:
                raise CroftError(
                    f"{where}: domain index {int(self.domains.min())} is negative; domains "
                    "index domain_names from 0"
                )
            if self.domain_names and int(self.domains.max()) >= len(self.domain_names):
                raise CroftError(
                    f"{where}: domain index {int(self.domains.max())} has no name in "
                    f"domain_names ({len(self.domain_names)} given)"
                )
        t = self.text_features
        if t is not None:
            if t.dim() not in (2, 3) or t.shape[0] != self.num_classes or t.shape[-1] != self.dim:
                raise CroftError(
                    f"{where}: 'text_features' must have shape ({self.num_classes}, {self.dim}) "
                    f"or ({self.num_classes}, T, {self.dim}), got {tuple(t.shape)}"
                )
            if not bool(torch.isfinite(t).all()):
                raise CroftError(f"{where}: text_features contain NaN or inf")
        self._validate_local()
        check_logit_scale(self.logit_scale, f"{where}: logit_scale")

    def _validate_local(self) -> None:
        loc, f = self.local_features, self.features
        if loc is None:
            return
        want = "(N, V, P, D)" if f.dim() == 3 else "(N, P, D)"
        ok = (
            isinstance(loc, torch.Tensor)
            and loc.is_floating_point()
            and loc.dim() == f.dim() + 1
            and tuple(loc.shape[: f.dim() - 1]) == tuple(f.shape[:-1])
            and loc.shape[-1] == f.shape[-1]
        )
        if not ok:
            shape = tuple(loc.shape) if isinstance(loc, torch.Tensor) else type(loc).__name__
            raise CroftError(
                f"{self.source}: 'local_features' must be floating point of shape {want} "
                f"matching features {tuple(f.shape)}, got {shape}"
            )
        if not bool(torch.isfinite(loc).all()):
            raise CroftError(f"{self.source}: local_features contain NaN or inf; re-extract them")

    def require_local(self) -> torch.Tensor:
        """The local features, or one line saying how to extract them."""
        if self.local_features is None:
            raise CroftError(
                f"{self.source}: no 'local_features' in these features; extract them with "
                "`croft extract --local-features` (croft run: local_features: true)"
            )
        return self.local_features

    def require_labels(self) -> None:
        """Training data: every label must be a known class and every class present."""
        if bool((self.labels < 0).any()):
            raise CroftError(
                f"{self.source}: training labels must be class indices, found -1 (unknown class)"
            )
        counts = torch.bincount(self.labels, minlength=self.num_classes)
        empty = [self.class_names[i] for i in range(self.num_classes) if counts[i] == 0]
        if empty:
            raise CroftError(
                f"{self.source}: class {empty[0]!r} has no training example "
                f"({len(empty)} empty class(es)); add examples or remove it from class_names"
            )

    def require_text(self) -> torch.Tensor:
        if self.text_features is None:
            raise CroftError(
                f"{self.source}: no 'text_features' in this file; this method needs the class "
                "prompts' text features (extract them with the backbone's text encoder)"
            )
        return self.text_features


def check_writable_file(path: str | os.PathLike[str], what: str = "output file") -> Path:
    """Fail now, in one line, if ``path`` cannot be written later (before hours of work):
    its folder is created if missing and a probe file is written there and removed."""
    import tempfile

    path = Path(path)
    if path.is_dir():
        raise CroftError(f"{what} {path} is a directory; name a file inside it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise CroftError(
            f"cannot write {what} {path}: {exc.strerror or exc}"
            f"{f' ({exc.filename})' if exc.filename else ''}; choose a writable location"
        ) from None
    return path


def save_features(fs: FeatureSet, path: str | os.PathLike[str]) -> Path:
    """Write ``fs`` to ``path`` atomically; equal content gives equal bytes. Returns the path."""
    from safetensors.torch import save

    fs.validate()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {
        "features": fs.features.contiguous(),
        "labels": fs.labels.to(torch.int64).contiguous(),
    }
    if fs.domains is not None:
        tensors["domains"] = fs.domains.to(torch.int64).contiguous()
    if fs.text_features is not None:
        tensors["text_features"] = fs.text_features.contiguous()
    if fs.local_features is not None:
        tensors["local_features"] = fs.local_features.to(torch.float16).contiguous()
    meta = {
        "croft_schema": SCHEMA,
        "class_names": json.dumps(fs.class_names),
        "domain_names": json.dumps(fs.domain_names),
        "templates": json.dumps(fs.templates),
        "logit_scale": json.dumps(float(fs.logit_scale)),
        "extra": json.dumps(fs.extra, sort_keys=True),
        "checksum": tensor_digest(tensors),
    }
    atomic_write_bytes(path, canonical_safetensors(save(tensors, metadata=meta)))
    return path


def _meta_value(meta: dict[str, str], key: str, default: Any, path: Path) -> Any:
    """One metadata entry, JSON-decoded and type-checked (one CroftError line if wrong)."""
    text = meta.get(key)
    if text is None:
        return default
    try:
        value = parse_json(text, f"{path}: metadata {key!r}")
    except CroftError:
        raise
    except ValueError:
        raise CroftError(f"{path}: metadata {key!r} is not valid JSON ({text[:40]!r})") from None
    if key == "logit_scale":
        return check_logit_scale(value, f"{path}: metadata 'logit_scale'")
    if key == "extra":
        if not isinstance(value, dict):
            raise CroftError(f"{path}: metadata 'extra' must be a JSON object")
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CroftError(
            f"{path}: metadata {key!r} must be a JSON list of strings, got {text[:40]!r}"
        )
    return value


def _templates(templates: list[str], path: Path) -> list[str]:
    return check_templates(templates, f"{path}: metadata 'templates'") if templates else []


def load_features(path: str | os.PathLike[str]) -> FeatureSet:
    """Read a feature file; a missing file, wrong format, corrupted tensors (checksum) or
    bad metadata is one clear error."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CroftError(f"feature file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except CroftError:
        raise
    except Exception as exc:  # safetensors raises several types for a bad header
        raise CroftError(f"{path}: not a safetensors feature file ({exc})") from None
    if meta.get("croft_schema") != SCHEMA:
        raise CroftError(
            f"{path}: missing or unknown croft_schema {meta.get('croft_schema')!r} "
            f"(expected {SCHEMA!r}); write it with croft.features.save_features"
        )
    for key in ("features", "labels"):
        if key not in tensors:
            raise CroftError(f"{path}: tensor {key!r} is missing")
    verify_digest(tensors, meta, f"feature file {path}")
    return FeatureSet(
        features=tensors["features"],
        labels=tensors["labels"],
        domains=tensors.get("domains"),
        text_features=tensors.get("text_features"),
        local_features=tensors.get("local_features"),
        class_names=_meta_value(meta, "class_names", [], path),
        domain_names=_meta_value(meta, "domain_names", [], path),
        templates=_templates(_meta_value(meta, "templates", [], path), path),
        logit_scale=_meta_value(meta, "logit_scale", 100.0, path),
        extra=_meta_value(meta, "extra", {}, path),
        source=str(path),
    )
