"""``croft demo``: the whole job on the built-in default, offline, in minutes."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the world study's short form: Setup-II on the built-in world v3, paired verdict",
        description="The short form of the world study (docs/world-study.md, "
        "configs/world_study_v3.yaml): generate world v3 (cached; world v2 with source label "
        "noise, so fine-tuning can overfit a source-only colour shortcut), extract features "
        "with its tiny CLIP (cached), run leave-one-style-out over photo, painting, cartoon "
        "and pixel "
        "x 5 seeds (sketch, never seen in pre-training, scored by every fold) for zero-shot, "
        "the CE-only adapter, CRoFT (official and paper) and the baselines on a reduced "
        "grid (lr x1 and x4 of the scale-aware rule, 30 epochs), and print the tables, "
        "whether each method trained, and both CRoFT variants against every baseline with "
        "paired 95% cluster bootstrap intervals. The report and plots go to "
        "--out. About 2 minutes on 2 CPU cores from empty caches.",
    )
    p.add_argument("--out", default="croft-out/demo", help="output directory")
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        help="first seed (the world demo uses 5: S..S+4; --synthetic 3)",
    )
    p.add_argument(
        "--world-seed",
        type=int,
        default=0,
        metavar="K",
        help="generate world v3 with world seed K (default 0, the study's world; each seed "
        "is cached apart): the verdicts of several worlds show what holds beyond one world",
    )
    p.add_argument(
        "--core", action="store_true", help="zero-shot, the CE-only adapter and CRoFT only"
    )
    p.add_argument(
        "--prompt-learners",
        action="store_true",
        help="add CoOp and DPLCLIP (they run the text encoder every step: slow on a CPU)",
    )
    p.add_argument("--no-cocoop", action="store_true", help=argparse.SUPPRESS)  # no CoCoOp now
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="run on the feature-space simulator instead (synthetic features, seconds; the "
        "packaged config assets/configs/synthetic_demo.yaml, written as croft run writes)",
    )
    p.add_argument(
        "--fit-engine",
        choices=["auto", "batched", "sequential"],
        default="auto",
        help="how fits run: auto (default) batches the adapter fits where batching measured "
        "faster (always on CUDA; on a CPU up to 64 classes), batched always, sequential one "
        "by one; the tables agree within the batched engine's float32 tolerance",
    )
    p.add_argument(
        "--workers-fit",
        type=int,
        metavar="N",
        help="fit worker processes, one torch thread each (default: CROFT_FIT_WORKERS, else "
        "one per CPU); the tables do not depend on N",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from croft.tables import render

    if args.synthetic:
        from croft.cli.common import print_report
        from croft.protocols.demo import SEEDS as SYN_SEEDS
        from croft.protocols.demo import run_synthetic_demo

        print("croft demo: SYNTHETIC features from croft.simulate (no images, no downloads)")
        result = run_synthetic_demo(
            args.out,
            seeds=tuple(range(args.seed, args.seed + SYN_SEEDS)),
            progress=not args.quiet,
            fit_engine=args.fit_engine,
            workers=args.workers_fit or 1,
        )
        print(f"{result['runs']} runs in {args.out}")
        print_report(result)
        print("\n" + "\n".join(f"- {line}" for line in result["training"]))
        print(f"\nreport: {result['report']} ({result['seconds']:.1f} s)")
        return 0
    from croft.protocols.world_demo import SEEDS, run_world_demo

    print("croft demo: the world study's short form on world v3 and its tiny CLIP (offline)")
    result = run_world_demo(
        args.out,
        seeds=tuple(range(args.seed, args.seed + SEEDS)),
        world_seed=args.world_seed,
        full=not args.core,
        prompt_learners=args.prompt_learners,
        progress=not args.quiet,
        fit_engine=args.fit_engine,
        workers=args.workers_fit,
    )
    print("\n" + "\n".join(result["lr"]))
    header, rows = result["summary"]
    print(
        "\nmean ± std over held-out styles x seeds (sample std), % (sketch: never seen in "
        "pre-training, scored by every fold's head; matched: held-out classes in the held-out "
        "style):"
    )
    print(render(header, rows))
    header, rows = result["tables"]["accuracy"]
    print("\nheld-out-style accuracy per style (%), mean ± std over seeds (sample std):")
    print(render(header, rows))
    if result.get("marks"):
        print("\n" + "\n".join(result["marks"]))
    print("\nDid each method train (selected model differs from its initialisation)?")
    print("\n".join(f"- {line}" for line in result["training"]))
    print(
        "\nCRoFT (official and paper; lr and lambda chosen on source validation) against "
        "every baseline, paired over (held-out style, seed) with 95% cluster bootstrap "
        "intervals (the held-out styles resampled, then the pairs within them; points; "
        "* the interval excludes 0 and Holm's adjustment agrees, (*) only the raw one):"
    )
    print(render(*result["verdict_table"]))
    print("\nwhich comparisons are within the noise (their interval contains 0):")
    print("\n".join(result["within_noise"]))
    print("\nthe verdict, line by line (matched: held-out classes in the held-out style):")
    print("\n".join(result["verdict"]))
    print(
        f"({SEEDS} seeds on a reduced grid: the full study, configs/world_study_v3.yaml, runs "
        "10 seeds on the whole grid, so its intervals are narrower; docs/world-study.md)"
    )
    print(f"\nreport and plots: {result['report']} ({result['seconds']:.0f} s)")
    return 0
