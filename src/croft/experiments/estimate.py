"""Rough fit-time estimates for ``croft run --dry-run``, from the numbers in BENCHMARKS.md.

Every figure was measured on the benchmark machine (x86_64 AMD EPYC, 2 shared vCPUs, CPU
only, one torch thread) on Setup-II-shaped features: 7 classes, 16 shots x 3 domains
(336 rows, batch 32, so 11 steps an epoch), 8 views, D = 512, each method's default
schedule. Other shapes, hardware or a GPU take other times: an estimate gives the order of
magnitude of the fits only (feature extraction and evaluation are not included). A run's
``epochs`` option scales the epoch-based figures linearly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STEPS_PER_EPOCH = 11
"""Steps an epoch at the reference shape: 336 rows in batches of 32, rounded up."""


@dataclass(frozen=True)
class FitCost:
    """One fit at the reference shape: ``seconds``, measured with ``epochs`` (None: the figure
    does not scale with an ``epochs`` option), and where BENCHMARKS.md states it."""

    seconds: float
    basis: str
    epochs: int | None = None
    text_tower: bool = False  # runs the text encoder every step: scales with its size


_BASELINES = "BENCHMARKS.md, baselines fit time (benchmarks/baselines_fit.py)"
_ENGINE = "BENCHMARKS.md, engine step (benchmarks/engine_step.py)"
_TINY_TOWER = "; tiny text tower: a ViT-B/16-size one costs 1.69 s per CoOp step"

FIT_COSTS: dict[str, FitCost] = {
    "zeroshot": FitCost(0.0, f"{_BASELINES}: 0.00 s"),
    "linear_probe": FitCost(13.47, f"{_BASELINES}: 13.47 s"),
    "clip_adapter": FitCost(0.47, f"{_BASELINES}: 0.47 s"),
    "tip_adapter": FitCost(0.02, f"{_BASELINES}: 0.02 s"),
    "tip_adapter_f": FitCost(0.18, f"{_BASELINES}: 0.18 s"),
    "wise": FitCost(0.89, f"{_BASELINES}: 0.89 s"),
    "ce_adapter": FitCost(
        4.1e-3 * STEPS_PER_EPOCH * 30, f"{_ENGINE}: 4.1 ms per member-step, 11 x 30 steps", 30
    ),
    "croft": FitCost(
        20.9e-3 * STEPS_PER_EPOCH * 30,
        f"{_ENGINE}: official 20.9 ms per member-step, 11 x 30 steps",
        30,
    ),
    "croft/paper": FitCost(3.98, f"{_BASELINES}: croft paper 3.98 s", 30),
    "coop": FitCost(2.34, f"{_BASELINES}: 2.34 s{_TINY_TOWER}", text_tower=True),
    "locoop": FitCost(2.34, f"not measured; CoOp's 2.34 s{_TINY_TOWER}", text_tower=True),
    "cocoop": FitCost(59.41, f"{_BASELINES}: 59.41 s{_TINY_TOWER}", text_tower=True),
    "dplclip": FitCost(12.54, f"{_BASELINES}: 12.54 s{_TINY_TOWER}", text_tower=True),
}
"""Per-fit costs by method (``croft/paper``: CRoFT's paper variant)."""


def fit_cost(method: str, options: Mapping[str, Any]) -> FitCost | None:
    """The :data:`FIT_COSTS` entry of one run (None for a method without a figure)."""
    name = method.lower()
    if name == "croft" and str(options.get("variant", "official")).lower() == "paper":
        name = "croft/paper"
    return FIT_COSTS.get(name)


def fit_seconds(method: str, options: Mapping[str, Any]) -> float | None:
    """Estimated seconds of one fit of ``method`` with ``options`` (None: no figure)."""
    cost = fit_cost(method, options)
    if cost is None:
        return None
    epochs = options.get("epochs")
    if cost.epochs and isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0:
        return cost.seconds * epochs / cost.epochs
    return cost.seconds


def format_seconds(seconds: float) -> str:
    """``0 s``, ``0.02 s``, ``4.4 s``, ``12 s``, ``3.5 min``, ``2.1 h``."""
    if seconds < 1:
        return f"{seconds:.2g} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 600:
        return f"{seconds:.0f} s"
    if seconds < 36000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate(runs: Iterable[tuple[str, str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per label: ``{"runs": n, "seconds": total or None, "per_fit": s or None, "text_tower":
    bool}`` for ``(label, method, options)`` of every run that will fit."""
    out: dict[str, dict[str, Any]] = {}
    for label, method, options in runs:
        row = out.setdefault(label, {"runs": 0, "seconds": 0.0, "per_fit": None})
        row["runs"] += 1
        seconds = fit_seconds(method, options)
        cost = fit_cost(method, options)
        row["text_tower"] = bool(cost and cost.text_tower)
        if seconds is None or row["seconds"] is None:
            row["seconds"] = None
            continue
        row["seconds"] += seconds
        row["per_fit"] = seconds
    return out


def estimate_folders(cfg: Any, folders: Iterable[str]) -> dict[str, dict[str, Any]]:
    """:func:`estimate` for the run folders ``runs/LABEL/TASK`` of experiment ``cfg`` that
    will fit, keyed by the method row's label (grid points together)."""
    from croft.experiments.grid import expand_methods

    runs = {r.label: r for r in expand_methods(cfg.methods)}
    todo = [runs[f.split("/")[1]] for f in folders if f.split("/")[1] in runs]
    return estimate((r.label.split("[")[0], r.method, r.options) for r in todo)


def cost_text(row: Mapping[str, Any] | None) -> str:
    """``, 20 to fit, ~2.3 min (~6.9 s a fit)`` for one label's :func:`estimate` row."""
    if row is None:
        return ", none to fit"
    if row["seconds"] is None:
        return f", {row['runs']} to fit (no benchmark figure for this method)"
    star = "*" if row["text_tower"] else ""
    return (
        f", {row['runs']} to fit, ~{format_seconds(row['seconds'])}{star} "
        f"(~{format_seconds(row['per_fit'])} a fit)"
    )


NOTE = (
    "estimated fit time on one CPU thread of the benchmark machine (2-vCPU AMD EPYC, "
    "Setup-II-shaped features, BENCHMARKS.md); an estimate, not a promise: other shapes, "
    "machines or a GPU differ, feature extraction is not included, and --workers-fit N "
    "divides it roughly by N"
)


def total_lines(costs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The total estimate with what it assumes (and the prompt learners' caveat)."""
    known = [r["seconds"] for r in costs.values() if r["seconds"] is not None]
    lines = [f"~{format_seconds(sum(known))} {NOTE}"]
    if any(r["text_tower"] for r in costs.values()):
        lines.append(
            "* prompt learners were timed with a tiny text tower; a ViT-B/16-size one costs "
            "1.69 s per CoOp step (BENCHMARKS.md), so they take far longer on real CLIPs"
        )
    return lines
