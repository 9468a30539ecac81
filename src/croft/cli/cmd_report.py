"""``croft report RUNS_DIR``: tables, figures, the verdict; export a selected head."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="render tables, figures and the verdict from run directories",
        description="Read every metrics.json below RUNS_DIR and write report.md and "
        "report.html (figures embedded), results.csv (tidy: one row per run x metric, value in "
        "% as the tables, a row column to pivot them by), runs.csv "
        "(one row per run, its whole config), "
        "CSV/LaTeX tables, and figures as PNG and PDF (energy distributions, ROC, accuracy "
        "vs AUROC). With --export-head, copy the head of the selected run instead.",
    )
    p.add_argument("runs_dir", help="output directory of 'croft demo' or 'croft run'")
    p.add_argument("--out", help="report directory (default: RUNS_DIR/report)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--log-fpr", action="store_true", help="ROC figure with a log FPR axis")
    p.add_argument(
        "--subject",
        help="the method the verdict compares against the others (default: croft)",
    )
    p.add_argument(
        "--bootstrap",
        choices=["cluster", "iid"],
        default="cluster",
        help="the verdict's intervals: the cluster bootstrap over held-out domains (or world "
        "seeds) then pairs within them (default), or pairs resampled as if independent",
    )
    p.add_argument(
        "--select",
        choices=["val_acc", "oracle"],
        default="val_acc",
        help="how to pick among grid points: source-validation accuracy (default) or the "
        "test-set oracle (labelled '(oracle)' in every table)",
    )
    p.add_argument(
        "--export-head",
        metavar="DIR",
        help="copy the head of the run selected for --method (and --domain/--seed when "
        "there are several) into DIR, for 'croft predict' or croft.load",
    )
    p.add_argument("--method", help="method label for --export-head (default: croft)")
    p.add_argument("--domain", help="held-out domain of the run to export")
    p.add_argument("--seed", type=int, help="seed of the run to export")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from croft.tables import render

    if args.export_head:
        from croft.report import export_head

        dest = export_head(
            args.runs_dir,
            args.export_head,
            method=args.method or "croft",
            domain=args.domain,
            seed=args.seed,
            selection=args.select,
        )
        print(f"head exported to {dest}")
        return 0
    from croft.report import write_report

    result = write_report(
        args.runs_dir,
        args.out,
        plots=not args.no_plots,
        selection=args.select,
        subject=args.subject,
        log_fpr=args.log_fpr,
        bootstrap=args.bootstrap,
    )
    for name, (header, rows) in result["tables"].items():
        print(f"{name}:")
        print(render(header, rows))
        print()
    if result["verdict"]:
        print("verdict:")
        print("\n".join(result["verdict"]))
        print()
    print(
        f"report of {result['runs']} runs ({result['records']} after grid selection) "
        f"written to {result['out_dir']}"
    )
    return 0
