"""Saving and loading fitted heads: ``head.safetensors`` + ``head.json`` in a directory.

``head.json`` holds the method, head class, variant, config, class names, prompts,
feature dimension, logit scale, croft version and anything in ``head.meta``
(training history, OOD threshold). No pickles.

Guards: :func:`save_head` refuses non-finite parameters or an OOD threshold (one line
naming the likely cause) and never writes into a non-empty folder that is not a croft
head folder (:func:`check_head_dir`); :func:`load_head` type-checks ``head.json`` and the
weights, so a malformed head is one CroftError line.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from croft.errors import CroftError, first_line
from croft.features.files import check_class_names, check_logit_scale
from croft.fileio import (
    atomic_write_folder,
    atomic_write_text,
    atomic_write_with,
    parse_json,
    remove_leftovers,
)
from croft.limits import check_limit
from croft.methods.base import HEADS, FittedHead

FORMAT = "croft.head/1"


HEAD_FILES = ("head.json", "head.safetensors")
EXTREME_INPUT = 1e4  # |feature| beyond this is far outside any CLIP-like encoder's range


def check_head_dir(directory: str | os.PathLike[str]) -> Path:
    """``directory`` if a head may be written there: missing, empty, or already a croft
    head folder (its ``head.json`` has this format). A folder holding other files is
    refused in one line, so a user's own ``config.json`` is never overwritten."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise CroftError(f"--out {out} is a file, not a folder; name a folder for the head")
    if not out.is_dir() or not any(out.iterdir()):
        return out
    try:
        doc = parse_json((out / "head.json").read_text(encoding="utf-8"), "head.json")
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CroftError(
            f"{out} is not empty and is not a croft head folder (no head.json of format "
            f"{FORMAT}); choose a new or empty folder so none of its files are overwritten"
        )
    return out


def _nonfinite_hint(input_max_abs: float | None) -> str:
    if input_max_abs is not None and (
        not math.isfinite(input_max_abs) or input_max_abs > EXTREME_INPUT
    ):
        return (
            f"the input features reach |x| = {input_max_abs:.3g}, far outside an encoder's "
            "range; check or re-extract the feature file (or drop those rows)"
        )
    if input_max_abs is not None:
        return (
            f"the input features look ordinary (max |x| = {input_max_abs:.3g}), so training "
            "diverged; lower the learning rate (--set lr=...)"
        )
    return "extreme input feature values or too high a learning rate; check both"


def _train_max_abs(meta: dict[str, Any]) -> float | None:
    """max |x| of the training features named in the provenance (``input_max_abs`` or the
    ``train_features`` file), read only to explain a failure; None when unknown."""
    found = meta.get("input_max_abs")
    if isinstance(found, (int, float)):
        return float(found)
    path = meta.get("train_features")
    if not isinstance(path, str):
        return None
    from croft.features import load_features

    try:
        return float(load_features(path).features.abs().max())
    except (CroftError, OSError):
        return None


def check_finite_head(
    head: FittedHead, extra: dict[str, Any], input_max_abs: float | None = None
) -> None:
    """Raise CroftError if a parameter or the stored OOD threshold is NaN or infinite."""
    bad = [k for k, v in head.state_dict().items() if not bool(torch.isfinite(v).all())]
    threshold = extra.get("ood_threshold", head.meta.get("ood_threshold"))
    value = threshold.get("value") if isinstance(threshold, dict) else threshold
    if isinstance(value, (int, float)) and not math.isfinite(value):
        bad.append("ood_threshold")
    if bad:
        if input_max_abs is None:
            input_max_abs = _train_max_abs({**head.meta, **extra})
        raise CroftError(
            f"the fitted {head.head_name} head has non-finite values ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); not saved. Likely cause: "
            f"{_nonfinite_hint(input_max_abs)}"
        )


def save_head(
    head: FittedHead,
    directory: str | os.PathLike[str],
    *,
    input_max_abs: float | None = None,
    **extra: Any,
) -> Path:
    """Write ``head`` to ``directory`` (created); ``extra`` is merged into the JSON metadata.

    Refuses (CroftError, nothing written) non-finite parameters or OOD threshold --
    ``input_max_abs`` (max |x| of the training features, when the caller knows it) lets
    the message name the likely cause -- and a non-empty folder that is not a head folder.
    """
    from safetensors.torch import save_file

    from croft._version import __version__

    check_finite_head(head, extra, input_max_abs)
    out = check_head_dir(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    meta: dict[str, Any] = {
        "format": FORMAT,
        "head": head.head_name,
        "spec": head.spec(),
        "class_names": head.class_names,
        "feature_dim": head.feature_dim,
        "logit_scale": head.logit_scale,
        "croft_version": __version__,
        **head.meta,
        **extra,
    }
    text = json.dumps(meta, indent=2, sort_keys=True, default=str)

    def write(tmp: Path) -> None:
        atomic_write_with(
            tmp / "head.safetensors",
            lambda p: _save_tensors(save_file, tensors, p, out / "head.safetensors"),
        )
        atomic_write_text(tmp / "head.json", text)

    # built beside the target and renamed into place: a head folder is whole or absent
    remove_leftovers(out)
    return atomic_write_folder(out, write, keep_extra=True)


def _save_tensors(
    save_file: Any, tensors: dict[str, torch.Tensor], path: Path, target: Path
) -> None:
    """``save_file`` to ``path`` with safetensors' own error (disk full, no permission: it
    raises no OSError) as one line naming ``target``, the file the user will look for."""
    try:
        save_file(tensors, str(path))
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors.SafetensorError and its kin
        raise CroftError(
            f"cannot write {target}: {first_line(exc)[:160]}; free "
            "disk space or choose another --out"
        ) from None


def read_head_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / "head.json"
    if not path.is_file():
        raise CroftError(f"{directory}: no head.json here; pass a directory written by 'croft fit'")
    try:
        meta = parse_json(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise CroftError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CroftError(f"{path}: must hold a JSON object, found {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CroftError(f"{path}: unknown head format {meta.get('format')!r} (expected {FORMAT})")
    _check_meta(meta, path)
    return meta


def _check_meta(meta: dict[str, Any], path: Path) -> None:
    """Types of the fields :func:`load_head` relies on (one CroftError line each)."""
    dim = meta.get("feature_dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
        raise CroftError(f"{path}: 'feature_dim' must be a positive integer, got {dim!r}")
    check_limit("feature_dim", dim, f"{path}: feature_dim")
    names = meta.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(c, str) for c in names):
        raise CroftError(f"{path}: 'class_names' must be a non-empty list of strings")
    check_class_names(names, f"{path}: class_names")
    check_logit_scale(meta.get("logit_scale"), f"{path}: 'logit_scale'")
    if not isinstance(meta.get("head"), str):
        raise CroftError(f"{path}: 'head' must name a head class, got {meta.get('head')!r}")
    if not isinstance(meta.get("spec", {}), dict):
        raise CroftError(f"{path}: 'spec' must be a JSON object")
    _check_spec(meta.get("spec", {}), path)
    backbone = meta.get("backbone")
    if backbone is not None and not isinstance(backbone, dict):
        raise CroftError(
            f"{path}: 'backbone' must be the backbone's fingerprint (a JSON object) or null, "
            f"got {backbone!r:.40}; fit the head again"
        )
    if not isinstance(meta.get("backbone_spec") or "", str):
        raise CroftError(f"{path}: 'backbone_spec' must be a backbone spec string or null")


_DTYPES = ("float16", "bfloat16", "float32", "float64")
_MAX_DEPTH = 32  # layers of a head's MLP (``mlp_depth``); CLIP-sized heads use 1-3


def _check_spec(spec: dict[str, Any], path: Path) -> None:
    """Every field of a head's ``spec`` in range before a head is built from it: ``dtype`` a
    float type, numbers finite, ratios in [0, 1] (or null), sizes within ``head_size``."""
    for key, value in spec.items():
        where = f"{path}: spec.{key}"
        if key == "dtype" and value not in _DTYPES:
            raise CroftError(f"{where} must be one of {', '.join(_DTYPES)}, got {value!r:.40}")
        if value is None or isinstance(value, (str, bool)):
            continue
        if not isinstance(value, (int, float)):
            raise CroftError(f"{where} must be a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise CroftError(f"{where} must be a finite number, got {value!r}")
        if ("ratio" in key or key == "dropout") and not 0.0 <= value <= 1.0:
            raise CroftError(f"{where} must lie in [0, 1], got {value!r}")
        if isinstance(value, int):
            if value < 0:
                raise CroftError(f"{where} must be >= 0, got {value}")
            check_limit("head_size", value, where)
            if key.endswith("depth") and value > _MAX_DEPTH:
                raise CroftError(f"{where} {value} is above {_MAX_DEPTH} layers; fit it again")


def _check_size(
    cls: type[FittedHead],
    spec: dict[str, Any],
    classes: list[str],
    dim: int,
    scale: float,
    where: str,
) -> None:
    """Build the head on the ``meta`` device (no memory) and bound its element count
    (``head_elements``) before the real one is allocated."""
    try:
        with torch.device("meta"):
            shell = cls.from_spec(dict(spec), classes, dim, scale)
    except (TypeError, ValueError, KeyError, RuntimeError, NotImplementedError):
        return  # the real build reports it
    total = sum(t.numel() for t in shell.state_dict().values())
    check_limit("head_elements", total, f"{where}: the head's number of weights")


def load_head(
    directory: str | os.PathLike[str],
    *,
    expect_dim: int | None = None,
    expect_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> FittedHead:
    """Load a head; refuse a feature dimension or class count that differs from the expected."""
    from safetensors.torch import load_file

    meta = read_head_meta(directory)
    dim, classes = meta["feature_dim"], list(meta["class_names"])
    if expect_dim is not None and expect_dim != dim:
        raise CroftError(
            f"{directory}: head expects {dim}-d features but the features are {expect_dim}-d; "
            "use features from the backbone the head was fitted on"
        )
    if expect_classes == 0 and classes:
        raise CroftError(
            f"{directory}: the features have no classes (every label is -1): this is an OOD "
            "feature file; pass it as an open set (croft eval --ood NAME=FILE) and give the "
            "ID features with --id"
        )
    if expect_classes is not None and expect_classes != len(classes):
        raise CroftError(
            f"{directory}: head has {len(classes)} classes but the data has {expect_classes}; "
            "evaluate on data with the same class list"
        )
    cls = HEADS.get(meta["head"])
    _check_size(
        cls,
        dict(meta.get("spec", {})),
        classes,
        dim,
        float(meta["logit_scale"]),
        f"{directory}/head.json",
    )
    try:
        head = cls.from_spec(dict(meta.get("spec", {})), classes, dim, float(meta["logit_scale"]))
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, CroftError):
            raise
        raise CroftError(
            f"{directory}/head.json: its 'spec' does not describe a {meta['head']} head "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
        ) from None
    weights = Path(directory) / "head.safetensors"
    if not weights.is_file():
        raise CroftError(f"{directory}: head.safetensors is missing")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise CroftError(
            f"{weights}: not a readable safetensors file ({' '.join(str(exc).split())[:120]}); "
            "fit the head again"
        ) from None
    try:
        head.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CroftError(f"{weights}: tensors do not fit a {meta['head']} head ({first})") from None
    if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
        raise CroftError(f"{weights}: holds NaN or infinite weights; fit the head again")
    head.meta = {
        k: v
        for k, v in meta.items()
        if k not in ("format", "head", "spec", "class_names", "feature_dim", "logit_scale")
    }
    return head.to(device)
