"""Planned runs: every (grid point, held-out domain, seed) resolved ONCE, before any work.

A :class:`PlannedRun` holds what the runner, the batched engine, the records and the
report need of one run: its task (held-out domain, seed), its row (label, method, raw
options), the method's typed config (built here, the one :func:`method_config` call of
the run), the keyed configuration and its hash (the config part of the run key,
:mod:`croft.experiments.runkey`) and its output folder. The data part of the key is only
known once the task's features exist: :meth:`PlannedRun.key` adds it. Downstream code
receives the PlannedRun as it is and never rebuilds its config.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from croft.experiments.grid import MethodRun, method_config
from croft.experiments.records import run_dir
from croft.experiments.runkey import config_document, make_key


@dataclass(frozen=True)
class PlannedRun:
    """One run of a grid on one task, resolved once (see the module docstring)."""

    run: MethodRun
    test_domain: str
    seed: int
    config: Any  # the method's typed config dataclass
    config_doc: Mapping[str, Any]  # runkey.config_document: what the key hashes
    config_key: str
    folder: Path  # OUT/runs/<label>/<domain>_seed<seed>

    @property
    def label(self) -> str:
        return self.run.label

    @property
    def method(self) -> str:
        return self.run.method

    @property
    def options(self) -> Mapping[str, Any]:
        return self.run.options

    def key(self, data: Mapping[str, Any] | None) -> dict[str, Any]:
        """The stored run-key document with the task's data part (None: config only)."""
        return make_key(self.config_doc, data)


def plan_run(
    run: MethodRun,
    test_domain: str,
    seed: int,
    settings: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
) -> PlannedRun:
    """The planned run of ``run`` on (``test_domain``, ``seed``) in ``out_dir``."""
    cfg = method_config(run, seed)
    doc = config_document(settings, run.method, dataclasses.asdict(cfg), test_domain, seed)
    ckey = make_key(doc, None)["config_key"]
    folder = run_dir(out_dir, run.label, test_domain, seed)
    return PlannedRun(run, test_domain, seed, cfg, doc, ckey, folder)


def plan_runs(
    methods: Sequence[MethodRun],
    pairs: Iterable[tuple[str, int]],
    settings: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
) -> list[PlannedRun]:
    """Every grid point on every (held-out domain, seed), task x method order."""
    return [plan_run(m, d, s, settings, out_dir) for d, s in pairs for m in methods]
