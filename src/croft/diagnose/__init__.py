"""Diagnostics of fitted adapter heads: energy-gradient norms and per-domain Hessians.

:mod:`croft.diagnose.measure` computes the quantities (tidy rows) on the groups of
:mod:`croft.diagnose.groups`,
:mod:`croft.diagnose.hessian` holds the matrix-free estimators (Hutchinson trace, power
iteration, shared-probe alignment), :mod:`croft.diagnose.output` writes the table, JSON and
plots and reads run directories that name their feature files (``features.json``). Run
folders of ``croft run`` (no feature files) are diagnosed by
:func:`croft.experiments.diagnose_runs`, which rebuilds their task one layer up.
"""

from croft.diagnose.hessian import hutchinson_trace, shared_probe_stats, top_eigenvalue
from croft.diagnose.measure import (
    COLUMNS,
    QUANTITIES,
    DiagnoseOptions,
    classification_loss,
    diagnose_head,
    diagnose_heads,
    energy_grad_norms,
    loss_hvp,
    official_penalty,
    require_adapter,
    w_minus_i,
)
from croft.diagnose.output import plot_diagnostics, run_dir_inputs, write_diagnostics

__all__ = [
    "COLUMNS",
    "QUANTITIES",
    "DiagnoseOptions",
    "classification_loss",
    "diagnose_head",
    "diagnose_heads",
    "energy_grad_norms",
    "hutchinson_trace",
    "loss_hvp",
    "official_penalty",
    "plot_diagnostics",
    "require_adapter",
    "run_dir_inputs",
    "shared_probe_stats",
    "top_eigenvalue",
    "w_minus_i",
    "write_diagnostics",
]
