"""Writing diagnostics (CSV, JSON, plots) and reading a run directory's inputs."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from croft.diagnose.measure import COLUMNS, QUANTITIES
from croft.errors import CroftError
from croft.fileio import atomic_write_json, atomic_write_text, atomic_write_with, read_json

PLOTTED = (
    "energy_grad_norm_mean",
    "energy_grad_norm_median",
    "official_penalty",
    "hessian_trace",
    "hessian_top_eig",
    "hessian_cosine_to_train",
    "hessian_cosine_split_half",
    "hessian_distance_to_train",
    "accuracy",
    "w_minus_i",
)
RUN_INPUTS = "features.json"


def rows_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The tidy table as CSV text (columns :data:`~croft.diagnose.measure.COLUMNS`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if _nan(r[k]) else r[k]) for k in COLUMNS})
    return buf.getvalue()


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def write_diagnostics(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    meta: Mapping[str, Any],
    *,
    x_name: str = "lambda2",
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``diagnostics.csv``, ``diagnostics.json`` (``meta`` + rows) and the plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": atomic_write_text(out / "diagnostics.csv", rows_csv(rows))}
    clean = [{k: (None if _nan(v) else v) for k, v in r.items()} for r in rows]
    doc = {**meta, "x": x_name, "quantities": QUANTITIES, "columns": list(COLUMNS), "rows": clean}
    paths["json"] = atomic_write_json(out / "diagnostics.json", doc)
    if plots:
        paths.update(plot_diagnostics(rows, out, x_name=x_name))
    return paths


def _series(rows: Sequence[Mapping[str, Any]], quantity: str) -> dict[str, list[tuple]]:
    """``{group: [(x, mean, err), ...]}`` sorted by ``x``; several heads at one ``x`` (seeds)
    are averaged and ``err`` is their standard deviation, else the row's own ``spread``."""
    by: dict[str, dict[float, list[tuple[float, Any]]]] = {}
    for r in rows:
        if r["quantity"] == quantity and not r.get("other"):
            by.setdefault(r["group"], {}).setdefault(float(r["x"]), []).append(
                (r["value"], r.get("spread"))
            )
    out: dict[str, list[tuple]] = {}
    for group, per_x in by.items():
        pts = []
        for xv, vals in sorted(per_x.items()):
            ys = [v for v, _ in vals]
            mean = sum(ys) / len(ys)
            if len(ys) > 1:
                err = math.sqrt(sum((y - mean) ** 2 for y in ys) / (len(ys) - 1))
            else:
                err = vals[0][1]
            pts.append((xv, mean, None if err is None or _nan(err) else err))
        out[group] = pts
    return out


def plot_diagnostics(
    rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str], *, x_name: str = "lambda2"
) -> dict[str, Path]:
    """One panel per quantity vs ``x`` (one line per group); ``diagnostics.png``/``.pdf``.

    Error bars: the standard deviation over heads sharing an ``x`` (e.g. seeds), else the
    row's ``spread`` (standard error of the Hutchinson trace, sd over probes of a cosine,
    sd over samples of the mean energy-gradient norm).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [q for q in PLOTTED if _series(rows, q)]
    if not panels:
        return {}
    ncol = 2
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(11, 2.8 * nrow), squeeze=False)
    xs = sorted({float(r["x"]) for r in rows})
    symlog = min(xs) <= 0 < max(xs) and x_name != "head index"
    for ax, q in zip(axes.flat, panels, strict=False):
        for group, pts in _series(rows, q).items():
            x = [p[0] for p in pts]
            y = [p[1] for p in pts]
            err = [p[2] for p in pts]
            yerr = err if all(e is not None for e in err) else None
            ax.errorbar(x, y, yerr=yerr, marker="o", ms=3, capsize=2, label=group)
        ax.set_title(q, fontsize=9)
        ax.set_xlabel(x_name, fontsize=8)
        ax.tick_params(labelsize=7)
        if symlog:
            pos = [v for v in xs if v > 0]
            ax.set_xscale("symlog", linthresh=min(pos))
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.subplots_adjust(wspace=0.75, hspace=0.55)  # room for the legends right of each panel
    out = Path(out_dir)
    paths = {}
    for ext in ("png", "pdf"):
        paths[ext] = atomic_write_with(
            out / f"diagnostics.{ext}",
            lambda p, e=ext: fig.savefig(p, format=e, dpi=120, bbox_inches="tight"),
        )
    plt.close(fig)
    return paths


def run_dir_inputs(path: str | os.PathLike[str]) -> tuple[Path, Path | None, dict[str, Path]]:
    """``(head_dir, train_file, {name: file})`` of a run directory.

    Contract: the run directory holds ``head/`` (``croft fit``'s format) and
    ``features.json`` = ``{"train": FILE, "sets": {NAME: FILE, ...}}``; relative paths are
    relative to the run directory. A plain head directory returns ``(path, None, {})``.
    """
    root = Path(path)
    if (root / "head.json").is_file():
        return root, None, {}
    if not (root / "head" / "head.json").is_file():
        raise CroftError(
            f"{root}: neither a head directory (head.json) nor a run directory (head/head.json); "
            "pass a directory written by 'croft fit'"
        )
    if not (root / RUN_INPUTS).is_file():
        return root / "head", None, {}
    spec = read_json(root / RUN_INPUTS, "run feature list")
    if not isinstance(spec, dict) or not isinstance(spec.get("sets", {}), dict):
        raise CroftError(f"{root / RUN_INPUTS}: expected {{'train': FILE, 'sets': {{NAME: FILE}}}}")
    train = spec.get("train")
    sets = {str(k): root / str(v) for k, v in spec.get("sets", {}).items()}
    return root / "head", (root / str(train)) if train else None, sets
