"""Experiments: typed configs per protocol, grids, tasks, one runner, run records.

Layout (each a small module):

* :mod:`~croft.experiments.config`   — ``LodoConfig`` (Setup-II), ``ImagenetConfig``
  (Setup-I), ``DataSpec``, ``MethodGrid``; typed build with one-line errors and bounds.
* :mod:`~croft.experiments.configs`  — ``CONFIGS``: the one protocol -> config table.
* :mod:`~croft.experiments.loading`  — YAML + ``--set`` overrides → config; ``--check``.
* :mod:`~croft.experiments.grid`     — ``MethodRun`` per grid point; method configs.
* :mod:`~croft.experiments.plan`     — ``PlannedRun``: a grid point on a task, resolved once
  (typed method config, config key, folder); what the runner and the engine receive.
* :mod:`~croft.experiments.task`     — ``Task`` and the one feature-selection path.
* :mod:`~croft.experiments.tasks_lodo`, :mod:`~croft.experiments.tasks_imagenet` — tasks.
* :mod:`~croft.experiments.synthetic` — ``SyntheticConfig`` and the tasks of protocol
  synthetic (the feature simulator).
* :mod:`~croft.experiments.runkey`   — the run key (resume exactly, or refuse).
* :mod:`~croft.experiments.runner`   — reuse or fit → evaluate → save, per run.
* :mod:`~croft.experiments.evaluate` — one head on one task → record fields.
* :mod:`~croft.experiments.records`  — run folders: ``RunRecord``, ``read_runs``.
* :mod:`~croft.experiments.protocols` — the protocol registry, ``run_experiment``.
* :mod:`~croft.experiments.summary`  — mean ± std tables over runs.
* :mod:`~croft.experiments.diagnose_runs` — ``croft diagnose`` on run folders (task rebuilt).

A YAML experiment (Setup-II)::

    name: setup2_pacs
    backbone: openclip:ViT-B-16:/weights/ViT-B-16.pt
    data: {root: /data/PACS, layout: oodbench}
    held_out: [art_painting, cartoon, photo, sketch]
    ood:
      - {name: dtd, root: /data, layout: coop, options: {dataset: dtd, ood: true}}
    shots: 16
    seeds: [1, 2, 3]
    methods:
      - {label: zeroshot, method: zeroshot}
      - {label: croft, method: croft, options: {lambda1: 15}, grid: {lambda2: [1000, 100]}}
"""

from croft.experiments.config import (
    MAX_SHOTS,
    MAX_VIEWS,
    DataSpec,
    ExperimentBase,
    ImagenetConfig,
    LodoConfig,
    MethodGrid,
)
from croft.experiments.diagnose_runs import RunDiagnosis, diagnose_runs
from croft.experiments.grid import MethodRun, expand_methods
from croft.experiments.loading import check_experiment, load_experiment
from croft.experiments.plan import PlannedRun, plan_runs
from croft.experiments.protocols import PROTOCOLS, dry_run, run_experiment
from croft.experiments.records import RunRecord, read_run, read_runs, run_dir
from croft.experiments.runner import run_grid
from croft.experiments.synthetic import SyntheticConfig
from croft.experiments.task import Task

__all__ = [
    "MAX_SHOTS",
    "MAX_VIEWS",
    "PROTOCOLS",
    "DataSpec",
    "ExperimentBase",
    "ImagenetConfig",
    "LodoConfig",
    "MethodGrid",
    "MethodRun",
    "PlannedRun",
    "RunDiagnosis",
    "RunRecord",
    "SyntheticConfig",
    "Task",
    "check_experiment",
    "diagnose_runs",
    "dry_run",
    "expand_methods",
    "load_experiment",
    "plan_runs",
    "read_run",
    "read_runs",
    "run_dir",
    "run_experiment",
    "run_grid",
]
