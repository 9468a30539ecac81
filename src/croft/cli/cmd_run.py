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
        from croft.experiments.worlds import per_world

        problems = []
        for c, _ in per_world(cfg, "."):
            if c.world_seed is not None:
                print(f"world seed {c.world_seed}: {c.data.root}")
            for line in plan_lines(c):
                print(line)
            problems += check_experiment(c)
        for line in problems:
            print(line)
        print(f"{cfg.name}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0
    out = Path(args.out or Path("runs") / cfg.name)
    from croft.experiments.worlds import per_world

    worlds = per_world(cfg, out)  # world_seeds: one config and OUT/world<seed> per world
    if args.dry_run:
        return max(_dry_run(c, o, args.fresh, shard) for c, o in worlds)
    for c, o in worlds:
        _run(c, o, args, shard, report=len(worlds) == 1)
    if len(worlds) > 1 and not args.no_report:
        from croft.fileio import inside

        _report(out, inside(out, "report"))
    return 0


def _dry_run(cfg, out, fresh: bool, shard) -> int:  # noqa: ANN001
    from collections import Counter

    from croft.experiments import dry_run
    from croft.experiments.estimate import cost_text, estimate_folders, total_lines

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
    costs = estimate_folders(cfg, [f for f, status, _ in mine if status in ("new", "resume")])
    for label, count in per_method.items():
        print(f"  {label}: {count} runs{cost_text(costs.get(label))}")
    print(f"{len(mine)} runs planned in {out} ({where}): "
          + ", ".join(f"{c} {k}" for k, c in counts.items()))  # fmt: skip
    for line in total_lines(costs):
        print(line)
    return 0


def _run(cfg, out, args: argparse.Namespace, shard, report: bool = True) -> int:  # noqa: ANN001
    from croft.experiments import run_experiment
    from croft.fileio import inside

    report_dir = None if args.no_report or not report else inside(out, "report")  # refused first
    result = run_experiment(
        cfg, out, progress=not args.quiet, fresh=args.fresh, shard=shard,
        workers=args.workers_fit,
    )  # fmt: skip
    print(f"{len(result['records'])} runs in {out}")
    if report_dir is not None:
        _report(out, report_dir)
    return 0


def _report(out, report_dir) -> None:  # noqa: ANN001
    """The report over ``out`` (every world's folder below it, when there are several)."""
    from croft.cli.common import print_report
    from croft.report import write_report

    rep = write_report(out, report_dir)
    print_report(rep)
    print(f"\nreport: {rep['out_dir']}/report.md")
