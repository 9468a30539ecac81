"""``croft run CONFIG``: an experiment from one YAML file (extract, fit, evaluate, report)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run an experiment from a YAML file (idempotent, resumable)",
        description="Extract features through the cache, fit every method (grids allowed) on "
        "every held-out domain and seed, evaluate, and write one directory per run (metrics, "
        "scores and the fitted head) plus a report. A rerun resumes exactly the same work; "
        "runs made with other settings are refused (use --fresh or another --out). Torch "
        "uses CROFT_THREADS threads if set, else half the CPUs (one on a 2-core machine).",
    )
    p.add_argument("config", help="experiment YAML (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key (YAML value), e.g. --set shots=4 --set data.root=/data/PACS "
        "--set seeds=[1] --set methods.2.grid.lambda2=[10,100]",
    )
    p.add_argument(
        "--methods",
        metavar="LABEL,...",
        help="run only these method rows (their labels, any case), e.g. --methods croft,zeroshot",
    )
    p.add_argument(
        "--seeds", metavar="S,...", help="run only these seeds, e.g. --seeds 1 or --seeds 1,2"
    )
    p.add_argument("--out", help="output directory (default: runs/<name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument(
        "--fresh", action="store_true", help="discard OUT/runs first (start the runs over)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="only validate the config, weights, device and every dataset it names "
        "(no extraction); exit 1 when problems are found",
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the resolved config (YAML) and exit"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the planned runs and whether each is new, reused or resumed (and, with "
        "--shard K/N, the part each belongs to); run nothing",
    )
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="run only the K-th of N disjoint parts of the grid (K is 1-based: 1..N), chosen "
        "from each run's config key, e.g. a Slurm array task runs --shard $((ID+1))/N; every "
        "part writes its own run folders (same --out or separate ones) and 'croft report' "
        "over the folder (or a parent of several) merges them",
    )
    p.add_argument(
        "--workers-fit",
        type=int,
        metavar="N",
        help="fit worker processes, one torch thread each (default: CROFT_FIT_WORKERS, else "
        "one per CPU this process may use; 1 on CUDA): features are extracted first, then "
        "each worker fits its --shard of the grid into the same --out; results do not "
        "depend on N",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from croft.experiments import load_experiment
    from croft.experiments.run_defaults import select
    from croft.experiments.runner import parse_shard

    cfg = select(load_experiment(args.config, args.set), args.methods, args.seeds)
    shard = parse_shard(args.shard)
    if args.print_config:
        import dataclasses

        import yaml

        print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False), end="")
        return 0
    if args.check:
        from croft.experiments import check_experiment
        from croft.experiments.loading import plan_lines

        for line in plan_lines(cfg):
            print(line)
        problems = check_experiment(cfg)
        for line in problems:
            print(line)
        print(f"{cfg.name}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0
    out = Path(args.out or Path("runs") / cfg.name)
    if args.dry_run:
        return _dry_run(cfg, out, args.fresh, shard)
    return _run(cfg, out, args, shard)


def _dry_run(cfg, out, fresh: bool, shard) -> int:  # noqa: ANN001
    from collections import Counter

    from croft.experiments import dry_run

    n = shard[1] if shard else 1
    rows = [(d, "new" if fresh else s, k) for d, s, k in dry_run(cfg, out, n)]
    for folder, status, part in rows:
        mark = f"[{part}/{n}] " if shard else ""
        if shard and part != shard[0]:
            status = "other"  # another part's run
        line = f"{status:<8} {mark}{folder}"
        print(line if ":" not in status else f"refuse   {mark}{folder} ({status})")
    mine = [r for r in rows if not shard or r[2] == shard[0]]
    counts = Counter(s.split(":")[0] for _, s, _ in mine)
    where = f"part {shard[0]}/{n} of {len(rows)} runs" if shard else f"{len(rows)} runs"
    per_method = Counter(folder.split("/")[1].split("[")[0] for folder, _, _ in mine)
    for label, count in per_method.items():
        print(f"  {label}: {count} runs")
    print(f"{len(mine)} runs planned in {out} ({where}): "
          + ", ".join(f"{c} {k}" for k, c in counts.items()))  # fmt: skip
    return 0


def _run(cfg, out, args: argparse.Namespace, shard) -> int:  # noqa: ANN001
    from croft.cli.common import print_report
    from croft.experiments import run_experiment
    from croft.fileio import inside
    from croft.report import write_report

    report_dir = None if args.no_report else inside(out, "report")  # refused before any run
    result = run_experiment(
        cfg, out, progress=not args.quiet, fresh=args.fresh, shard=shard,
        workers=args.workers_fit,
    )  # fmt: skip
    print(f"{len(result['records'])} runs in {out}")
    if report_dir is not None:
        rep = write_report(out, report_dir)
        print_report(rep)
        print(f"\nreport: {rep['out_dir']}/report.md")
    return 0
