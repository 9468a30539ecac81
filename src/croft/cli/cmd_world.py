"""``croft world``: generate the built-in image world, or pre-train its tiny CLIP."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "world",
        help="the built-in image world: generate its datasets, pre-train its tiny CLIP",
        description="The built-in image world (object images in several styles, open-set "
        "sets, and a tiny CLIP pre-trained on its captions).",
    )
    sub = p.add_subparsers(dest="world_command", metavar="ACTION")

    g = sub.add_parser(
        "generate",
        help="write the world's images and split files",
        description="Write OUT/images/<domain>/<class>/*.png (a DomainBed root), "
        "OUT/test_on_<domain>.json (PACS/Dassl splits), OUT/ood_classes/, OUT/ood_textures/ "
        "and OUT/world.json. Deterministic per seed; an identical world is reused, another "
        "generated world replaced.",
    )
    g.add_argument("out", help="output folder")
    g.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    g.add_argument(
        "--preset",
        default="demo",
        choices=[
            "demo",
            "tiny",
            "study",
            "study-tiny",
            "study-v3",
            "study-v3-tiny",
            "study-v4",
            "study-v4-tiny",
        ],
        help="world size and classes (default demo = world v1; study = world v2, study-v3 = "
        "world v3 and study-v4 = world v4 of docs/world-study.md)",
    )
    g.add_argument(
        "--overwrite", action="store_true", help="replace OUT when it holds something else"
    )
    g.set_defaults(func=_generate)

    t = sub.add_parser(
        "pretrain",
        help="pre-train the tiny world CLIP (contrastive, on the world's captions)",
        description="Reproduce the shipped tiny CLIP: render a pre-training pool, train "
        "for a step budget, write open_clip_model.safetensors and open_clip_config.json "
        "into --out (atomically: an interrupted run keeps the old checkpoint).",
    )
    t.add_argument("--out", required=True, help="output folder for the checkpoint")
    t.add_argument(
        "--preset",
        default="demo",
        choices=["demo", "study"],
        help="which world's tiny CLIP: demo (v1, shipped in assets/world) or study (v2, "
        "shipped in assets/world_v2); default demo",
    )
    t.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    t.add_argument(
        "--steps",
        type=int,
        default=None,
        help="step budget (default: the shipped checkpoint's, 1000)",
    )
    t.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock cap for the whole run; the schedule then follows it",
    )
    t.add_argument("--batch-size", type=int, default=None, help="batch size (default 256)")
    t.add_argument(
        "--pool-size", type=int, default=None, help="rendered pre-training images (default 40000)"
    )
    t.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that render the pool (default: up to 2)",
    )
    t.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 1: reproducible, fast on shared machines)",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=_pretrain)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _generate(args: argparse.Namespace) -> int:
    from croft.world.generate import generate_world

    generate_world(args.out, args.preset, args.seed, overwrite=args.overwrite, log=print)
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from croft.errors import CroftError
    from croft.world.config import pretrain_preset
    from croft.world.pretrain import pretrain

    over = {
        k: v
        for k, v in (
            ("seed", args.seed),
            ("steps", args.steps),
            ("batch_size", args.batch_size),
            ("pool_size", args.pool_size),
        )
        if v is not None
    }
    for k, v in over.items():
        if k != "seed" and v < 1:
            raise CroftError(f"--{k.replace('_', '-')} must be >= 1, got {v}")
    cfg = replace(pretrain_preset(args.preset), **over)
    if cfg.pool_size < cfg.batch_size:
        cfg = replace(cfg, batch_size=cfg.pool_size)
    path = pretrain(
        args.out,
        cfg,
        minutes=args.minutes,
        workers=args.workers,
        threads=args.threads,
        progress=not args.no_progress,
        log=print,
    )
    print(f"wrote {path} and {path.parent / 'open_clip_config.json'}")
    return 0
