"""``croft report RUNS_DIR``: tables (Markdown, CSV, LaTeX) and plots from run directories."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="render tables and plots from run directories",
        description="Read every metrics.json below RUNS_DIR and write report.md, CSV and "
        "LaTeX tables in the paper's layout, and plots (energy distributions, ROC, accuracy "
        "vs AUROC).",
    )
    p.add_argument("runs_dir", help="output directory of 'croft demo' or 'croft run'")
    p.add_argument("--out", help="report directory (default: RUNS_DIR/report)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument(
        "--select",
        choices=["val_acc", "oracle"],
        default="val_acc",
        help="how to pick among grid points: source-validation accuracy (default) or the "
        "test-set oracle (labelled '(oracle)' in every table)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from croft.report import write_report
    from croft.tables import render

    result = write_report(args.runs_dir, args.out, plots=not args.no_plots, selection=args.select)
    for name, (header, rows) in result["tables"].items():
        print(f"{name}:")
        print(render(header, rows))
        print()
    print(f"report of {result['records']} runs written to {result['out_dir']}")
    return 0
