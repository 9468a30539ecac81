"""``croft run CONFIG``: an experiment from one YAML file (extract, fit, evaluate, report)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run an experiment from a YAML file (idempotent, resumable)",
        description="Extract features through the cache, fit every method (grids allowed) on "
        "every held-out domain and seed, evaluate, and write one directory per run plus a "
        "report. A rerun skips finished runs.",
    )
    p.add_argument("config", help="experiment YAML (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key, e.g. --set shots=4 --set data.root=/data/PACS --set seeds=[1]",
    )
    p.add_argument("--out", help="output directory (default: runs/<name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument(
        "--check",
        action="store_true",
        help="only validate the config and every dataset layout it names (no extraction)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from croft.protocols.experiment import load_experiment, run_experiment
    from croft.report import write_report
    from croft.tables import render

    cfg = load_experiment(args.config, args.set)
    if args.check:
        from croft.protocols.experiment import check_experiment

        problems = check_experiment(cfg)
        for line in problems:
            print(line)
        print(f"{cfg.name}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0
    out = Path(args.out or Path("runs") / cfg.name)
    result = run_experiment(cfg, out, progress=not args.quiet)
    print(f"{len(result['records'])} runs in {out}")
    if not args.no_report:
        rep = write_report(out, out / "report")
        for name, (header, rows) in rep["tables"].items():
            print(f"\n{name}:")
            print(render(header, rows))
        print(f"\nreport: {rep['out_dir']}/report.md")
    return 0
