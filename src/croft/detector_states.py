"""Saving fitted detectors' states beside a head: ``detectors.safetensors`` +
``detectors.json`` (no pickles), checked on load before any detector is built."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from croft.errors import CroftError
from croft.fileio import atomic_write_json, atomic_write_with, read_json
from croft.score_base import DetectorState
from croft.scores import SCORES, Detector

__all__ = ["MAX_STATE_ELEMENTS", "load_states", "save_states"]

STATE_FORMAT = "croft.detectors/1"
STATE_FILES = ("detectors.json", "detectors.safetensors")
MAX_STATE_ELEMENTS = 1 << 31  # 8 GiB of float32: far above any bank croft builds
MAX_DETECTORS = 256


def save_states(
    directory: str | os.PathLike[str], detectors: Mapping[str, Detector]
) -> Path | None:
    """Write the fitted detectors' states into ``directory`` (a head folder):
    ``detectors.safetensors`` (tensors keyed ``label/name``) and ``detectors.json`` (score,
    parameters, meta, tensor shapes). Stateless detectors are skipped; nothing is written
    when none is fitted. Returns the JSON path."""
    from safetensors.torch import save_file

    fitted = {lb: d for lb, d in detectors.items() if d.state is not None and d.needs_fit}
    if not fitted:
        return None
    out = Path(directory)
    tensors: dict[str, Tensor] = {}
    doc: dict[str, Any] = {"format": STATE_FORMAT, "detectors": []}
    for label, det in fitted.items():
        assert det.state is not None
        shapes = {}
        for name, t in det.state.tensors.items():
            tensors[f"{label}/{name}"] = t.detach().cpu().contiguous()
            shapes[name] = list(t.shape)
        doc["detectors"].append(
            {"label": label, "score": det.name, "params": det.params,
             "meta": det.state.meta, "tensors": shapes}
        )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_with(out / STATE_FILES[1], lambda p: save_file(tensors, str(p)))
    return atomic_write_json(out / STATE_FILES[0], doc)


def _check_shapes(label: str, score: Any, shapes: Mapping[str, list[int]], dim: int | None) -> None:
    """The stored shapes against the score's declared ``state_shapes`` (one symbol, one size)."""
    sizes: dict[str, int] = {} if dim is None else {"D": int(dim)}
    for name, symbols in score.state_shapes.items():
        shape = shapes.get(name)
        if shape is None or len(shape) != len(symbols):
            raise CroftError(
                f"detectors.json: {label}: tensor {name!r} has shape {shape}, expected "
                f"{len(symbols)} dimensions ({', '.join(symbols) or 'a scalar'})"
            )
        for sym, n in zip(symbols, shape, strict=True):
            if sizes.setdefault(sym, n) != n:
                raise CroftError(
                    f"detectors.json: {label}: {name} has {sym}={n}, elsewhere {sizes[sym]}"
                    + (" (the head's embedding dimension)" if sym == "D" else "")
                )


def load_states(
    directory: str | os.PathLike[str], *, dim: int | None = None
) -> dict[str, Detector]:
    """The fitted detectors saved by :func:`save_states` (``{}`` when the folder has none).

    Checked before any tensor is read: the format, every score name and parameter, at most
    ``MAX_DETECTORS`` entries, at most ``MAX_STATE_ELEMENTS`` elements in all, each
    tensor's shape as ``detectors.json`` states it and as the score declares it (``dim``:
    the head's embedding dimension, when known). Only tensors are read from the file."""
    from safetensors import safe_open

    folder = Path(directory)
    jpath, tpath = folder / STATE_FILES[0], folder / STATE_FILES[1]
    if not jpath.is_file():
        return {}
    doc = read_json(jpath, "detector states")
    entries = doc.get("detectors") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != STATE_FORMAT
        or not isinstance(entries, list)
    ):
        raise CroftError(f"{jpath}: not a croft detector-state file (format {STATE_FORMAT})")
    if len(entries) > MAX_DETECTORS:
        raise CroftError(f"{jpath}: {len(entries)} detectors, more than {MAX_DETECTORS}")
    try:
        handle = safe_open(str(tpath), framework="pt")
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise CroftError(
            f"{tpath}: not a readable safetensors file ({exc}); refit the head"
        ) from None
    with handle as f:
        stored = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        total = sum(int(torch.tensor(s).prod()) if s else 1 for s in stored.values())
        if total > MAX_STATE_ELEMENTS:
            raise CroftError(f"{tpath}: {total} elements, above the limit {MAX_STATE_ELEMENTS}")
        out: dict[str, Detector] = {}
        for e in entries:
            if not isinstance(e, dict) or not isinstance(e.get("label"), str):
                raise CroftError(f"{jpath}: each detector needs a label, score, params, tensors")
            label, shapes = e["label"], e.get("tensors")
            score = SCORES.get(str(e.get("score")))
            if (
                score.fit is None
                or not isinstance(shapes, dict)
                or not isinstance(e.get("params"), dict)
            ):
                raise CroftError(f"{jpath}: {label}: not a fitted score's state")
            for name, shape in shapes.items():
                if stored.get(f"{label}/{name}") != shape:
                    raise CroftError(
                        f"{tpath}: {label}/{name} has shape {stored.get(f'{label}/{name}')}, "
                        f"detectors.json says {shape}; the two files do not belong together"
                    )
            _check_shapes(label, score, shapes, dim)
            det = score.detector(label, **e["params"])
            tensors = {n: f.get_tensor(f"{label}/{n}") for n in shapes}
            bad = [
                n
                for n, t in tensors.items()
                if t.is_floating_point() and not bool(torch.isfinite(t).all())
            ]
            if bad:
                raise CroftError(f"{tpath}: {label}/{bad[0]} holds NaN or infinite values")
            meta = e.get("meta") if isinstance(e.get("meta"), dict) else {}
            det.state = DetectorState(tensors, json.loads(json.dumps(meta)))
            out[label] = det
    return out
