"""Run directories, written and read here only.

``OUT/runs/<label>/<domain>_seed<seed>/`` is built in a ``.croft-tmp-`` sibling and
renamed into place when whole (:func:`croft.fileio.atomic_write_folder`); it holds:

* ``run_key.json``  — the run key (see :mod:`croft.experiments.runkey`);
* ``config.json``   — ``{"method", "config"}``: the resolved method config;
* ``env.json``      — versions, commit, device;
* ``scores.npz``    — per-sample scores (``id/<score>``, ``ood/<set>/<score>``, …);
* ``head/``         — the fitted head (``croft.methods.save_head``; ``croft.load`` reads it);
* ``metrics.json``  — written LAST: a finished run is one with a readable metrics.json.

``metrics.json`` keys: label, method, options, test_domain, seed, selected_epoch,
fit_seconds, val_accuracy, scores, ood_sets, accuracy, n_id, detection
({ood: {score: {auroc, fpr95_id_pos, aupr_in, …}}}), run_key, selection (the method's
``FitResult.selection`` or null), head ("head" when saved); Setup-I adds
shifted_accuracy, shifted_sets, shifted_n, n_detection_id and the task's meta (Setup-II
adds shifted_* only with ``extra_targets``).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from croft.errors import CroftError
from croft.fileio import (
    TEMP_PREFIX,
    atomic_write_folder,
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    inside,
    parse_json,
    remove_leftovers,
)

METRICS = "metrics.json"
RUN_KEY = "run_key.json"
HEAD = "head"


def run_dir(out_dir: str | os.PathLike[str], label: str, domain: str, seed: int) -> Path:
    """``out_dir/runs/<label>/<domain>_seed<seed>``, refused if it resolves outside ``out_dir``."""
    return inside(out_dir, "runs", label, f"{domain}_seed{seed}")


def load_scores(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays of a run's ``scores.npz``, never unpickled; unreadable: one line."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CroftError(
            f"{path}: not a readable scores file ({first}); delete the run folder to redo it"
        ) from None


@dataclass
class RunRecord:
    """One finished run: its ``metrics.json`` as a dict and the directory it lives in."""

    metrics: dict[str, Any]
    run_dir: Path

    @property
    def label(self) -> str:
        return str(self.metrics["label"])

    @property
    def test_domain(self) -> str:
        return str(self.metrics["test_domain"])

    @property
    def seed(self) -> int:
        return int(self.metrics["seed"])

    @property
    def head_dir(self) -> Path | None:
        """The saved head (load it with ``croft.load``), or None for runs without one."""
        d = self.run_dir / HEAD
        return d if (d / "head.json").is_file() else None

    def scores(self) -> dict[str, np.ndarray]:
        """The per-sample arrays of ``scores.npz`` (loaded without pickles)."""
        return load_scores(self.run_dir / "scores.npz")

    @property
    def run_config(self) -> dict[str, Any] | None:
        """The resolved method config (``config.json``'s ``config``), None if unreadable."""
        try:
            doc = parse_json((self.run_dir / "config.json").read_text(), "config.json")
        except (OSError, ValueError):
            return None
        cfg = doc.get("config") if isinstance(doc, dict) else None
        return cfg if isinstance(cfg, dict) else None

    def as_dict(self) -> dict[str, Any]:
        """The metrics plus ``run_dir`` and ``run_config`` (when readable): the record
        shape ``croft.report`` works on."""
        out = {**self.metrics, "run_dir": str(self.run_dir)}
        cfg = self.run_config
        if cfg is not None:
            out["run_config"] = cfg
        return out


def write_run(
    rdir: Path,
    metrics: Mapping[str, Any],
    *,
    config: Mapping[str, Any],
    env: Mapping[str, Any],
    per_sample: Mapping[str, np.ndarray],
    head: Any = None,
    head_meta: Mapping[str, Any] | None = None,
    key: Mapping[str, Any] | None = None,
    detectors: Mapping[str, Any] | None = None,
) -> RunRecord:
    """Write one run's files (and its ``key`` as run_key.json) into a temporary sibling of
    ``rdir`` and rename it into place: a run folder is whole or absent, and a disk-full or
    a kill half-way leaves only a ``.croft-tmp-`` sibling, which the next write removes.
    An unfinished folder already at ``rdir`` (an older croft's) is replaced.
    ``detectors`` (fitted score detectors, by label) are saved with the head."""
    record = dict(metrics)
    if head is not None:
        record["head"] = HEAD

    def write(tmp: Path) -> None:
        if key is not None:
            atomic_write_json(tmp / RUN_KEY, dict(key))
        atomic_write_json(tmp / "config.json", dict(config))
        atomic_write_json(tmp / "env.json", dict(env))
        atomic_write_with(tmp / "scores.npz", lambda p: _savez(p, per_sample))
        if head is not None:
            from croft.methods import save_head

            save_head(head, tmp / HEAD, **dict(head_meta or {}))
            if detectors:
                from croft.detector_states import save_states

                save_states(tmp / HEAD, detectors)
        _write_metrics(tmp / METRICS, record)

    remove_leftovers(rdir)
    atomic_write_folder(rdir, write)
    return RunRecord(record, rdir)


def _savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _write_metrics(path: Path, record: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=float))


def read_run(rdir: str | os.PathLike[str], *, strict: bool = True) -> RunRecord | None:
    """The finished run in ``rdir``, or None when it has no metrics.json yet (or, with
    ``strict=False``, when its metrics.json is not a run record, e.g. another tool's)."""
    path = Path(rdir) / METRICS
    if not path.is_file():
        return None
    try:
        data = parse_json(path.read_text(), str(path))
    except UnicodeDecodeError as exc:
        raise CroftError(f"{path}: not valid JSON ({exc}); delete it to rerun that run") from None
    if not isinstance(data, dict) or "label" not in data or "accuracy" not in data:
        if not strict:
            return None
        raise CroftError(f"{path}: not a croft run record; delete it to rerun that run")
    _check_record(data, path)
    return RunRecord(data, Path(rdir))


_RECORD_TYPES = {"label": (str,), "test_domain": (str,), "seed": (int,), "accuracy": (int, float)}


def _check_record(data: dict[str, Any], path: Path) -> None:
    """The fields every reader of a run record relies on, typed (one line naming the key)."""
    for key, types in _RECORD_TYPES.items():
        value = data.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            raise CroftError(
                f"{path}: key {key!r} is missing or not a {types[0].__name__} (got "
                f"{value!r:.40}); delete the run folder to redo that run"
            )


def read_runs(root: str | os.PathLike[str]) -> list[RunRecord]:
    """Every finished run below ``root`` (an output folder or its ``runs/``), path order;
    metrics.json files that are not run records are skipped, unreadable ones are errors."""
    base = Path(root)
    if not base.is_dir():
        raise CroftError(f"{base}: no such directory; pass the output directory of a run")
    found = []
    for path in sorted(base.rglob(METRICS)):
        if any(part.startswith(TEMP_PREFIX) for part in path.relative_to(base).parts):
            continue  # a run folder being written (or a killed write's leftover)
        rec = read_run(path.parent, strict=False)
        if rec is not None:
            found.append(rec)
    if not found:
        raise CroftError(f"{base}: no finished runs (no metrics.json below it)")
    return found


def read_run_key(rdir: Path) -> dict[str, Any] | None:
    """The stored run key of ``rdir`` (None: the folder holds no run yet)."""
    path = rdir / RUN_KEY
    if not path.is_file():
        return None
    try:
        data = parse_json(path.read_text(), str(path))
    except (CroftError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_run_key(rdir: Path, key: Mapping[str, Any]) -> None:
    rdir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(rdir / RUN_KEY, dict(key))
