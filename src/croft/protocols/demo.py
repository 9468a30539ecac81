"""``croft demo --synthetic``: protocol ``synthetic`` (SYNTHETIC features, no images).

The experiment is a config file shipped with the package, :data:`DEMO_CONFIG`
(``croft/assets/configs/synthetic_demo.yaml``: leave-one-domain-out over the simulator's
4 domains × 3 seeds; zero-shot, a CE-only adapter and CRoFT, official and paper), run
through :func:`~croft.experiments.protocols.run_experiment` and
:func:`~croft.report.write_report` like any ``croft run``, so its output folder holds what
``croft run`` writes (``config.resolved.json``, ``runs/``, ``report/``) and ``croft
diagnose`` reads it. This module only sets the seeds, the simulator and the engine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from croft.experiments.grid import MethodRun, expand_methods
from croft.experiments.protocols import run_experiment
from croft.experiments.summary import summary_numbers
from croft.experiments.synthetic import SyntheticConfig
from croft.fileio import inside
from croft.simulate import SimConfig

#: The synthetic demo's experiment: a YAML shipped with the package.
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "assets" / "configs" / "synthetic_demo.yaml"
SEEDS = 3  # croft demo --synthetic --seed S runs S..S+2
OOD_NAMES = ("unseen_classes", "noise")  # the simulator's open sets


def demo_config(
    seeds: Sequence[int] = tuple(range(1, SEEDS + 1)),
    sim: SimConfig | None = None,
    fit_engine: str = "auto",
) -> SyntheticConfig:
    """:data:`DEMO_CONFIG` with the given seeds, simulator (default: the file's) and engine."""
    from croft.experiments.loading import build_config, read_document
    from croft.overrides import apply_overrides

    doc = read_document(DEMO_CONFIG)
    apply_overrides(doc, [f"seeds={list(seeds)}", f"fit_engine={fit_engine}"])
    if sim is not None:
        doc["simulator"] = asdict(sim)
    cfg = build_config(doc, str(DEMO_CONFIG))
    assert isinstance(cfg, SyntheticConfig)
    cfg.check()
    return cfg


def demo_methods() -> list[MethodRun]:
    """The demo's runs, read from :data:`DEMO_CONFIG` (the one list of them)."""
    return expand_methods(demo_config().methods)


def run_synthetic_demo(
    out_dir: str | os.PathLike[str],
    *,
    seeds: Sequence[int] = tuple(range(1, SEEDS + 1)),
    sim: SimConfig | None = None,
    progress: bool = True,
    fit_engine: str = "auto",
    workers: int | None = 1,
) -> dict[str, Any]:
    """Run the synthetic demo into ``out_dir`` and write its report (``out_dir/report``).

    Returns the report's ``tables`` and ``verdict`` (what ``croft run`` prints),
    ``training`` (did each method train), ``summary`` (means per method,
    :func:`croft.experiments.summary.summary_numbers`), ``report`` (report.md's path),
    ``runs`` and ``seconds``. ``workers``: fit worker processes (one: in this process).
    """
    from croft.report import select_records, write_report
    from croft.verdict import status_lines, training_status

    t0 = time.perf_counter()
    cfg = demo_config(seeds, sim, fit_engine)
    out = Path(out_dir)
    result = run_experiment(cfg, out, progress=progress, workers=workers)
    report = write_report(out, inside(out, "report"))  # as croft run writes it
    records = select_records(result["records"])
    scores = [s.label for s in cfg.score_specs()]
    return {
        "tables": report["tables"],
        "verdict": report["verdict"],
        "training": status_lines(training_status(records)),
        "summary": summary_numbers(records, OOD_NAMES, scores),
        "report": str(Path(report["out_dir"]) / "report.md"),
        "runs": len(result["records"]),
        "seconds": time.perf_counter() - t0,
    }
