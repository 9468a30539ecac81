"""Run directories, written and read here only.

``OUT/runs/<label>/<domain>_seed<seed>/`` holds, in write order:

* ``run_key.json``  — the run key (see :mod:`croft.experiments.runkey`), written first so
  an interrupted run is recognised and resumed;
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
from croft.fileio import atomic_write_json, atomic_write_text, atomic_write_with, inside

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
            doc = json.loads((self.run_dir / "config.json").read_text())
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
    detectors: Mapping[str, Any] | None = None,
) -> RunRecord:
    """Write one run's files; ``metrics.json`` last (the run counts as finished after it).
    ``detectors`` (fitted score detectors, by label) are saved with the head."""
    rdir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(rdir / "config.json", dict(config))
    atomic_write_json(rdir / "env.json", dict(env))
    atomic_write_with(rdir / "scores.npz", lambda p: _savez(p, per_sample))
    record = dict(metrics)
    if head is not None:
        from croft.methods import save_head

        save_head(head, rdir / HEAD, **dict(head_meta or {}))
        if detectors:
            from croft.detector_states import save_states

            save_states(rdir / HEAD, detectors)
        record["head"] = HEAD
    _write_metrics(rdir / METRICS, record)
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
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CroftError(f"{path}: not valid JSON ({exc}); delete it to rerun that run") from None
    if not isinstance(data, dict) or "label" not in data or "accuracy" not in data:
        if not strict:
            return None
        raise CroftError(f"{path}: not a croft run record; delete it to rerun that run")
    return RunRecord(data, Path(rdir))


def read_runs(root: str | os.PathLike[str]) -> list[RunRecord]:
    """Every finished run below ``root`` (an output folder or its ``runs/``), path order;
    metrics.json files that are not run records are skipped, unreadable ones are errors."""
    base = Path(root)
    if not base.is_dir():
        raise CroftError(f"{base}: no such directory; pass the output directory of a run")
    found = []
    for path in sorted(base.rglob(METRICS)):
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
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_run_key(rdir: Path, key: Mapping[str, Any]) -> None:
    rdir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(rdir / RUN_KEY, dict(key))
