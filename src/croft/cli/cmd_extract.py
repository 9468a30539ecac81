"""``croft extract``: images + a backbone in, a feature file out (through the keyed cache).

Runs under torchrun unchanged: ``torchrun --nproc_per_node N -m croft extract ...`` shards
the work over the ranks; rank 0 writes the manifest and the output file.
"""

from __future__ import annotations

import argparse

_LAYOUTS = "domainbed, oodbench, coop, imagenet, folder"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "extract",
        help="encode a dataset's images (and class prompts) with a frozen backbone",
        description="Read ROOT as LAYOUT, encode every selected image with the backbone "
        "(one centre-crop view, or --views V augmented views per image) through a "
        "resumable cache, and write a feature file. Undecodable images are skipped and "
        "listed (or an error with --strict). Under torchrun the ranks share the work.",
    )
    p.add_argument("--backbone", required=True, metavar="SPEC", help="e.g. openclip:ViT-B-16:W.pt")
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--layout", required=True, metavar="NAME", help=f"one of: {_LAYOUTS}")
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="layout option (repeatable), e.g. --option test_domain=photo; the value is "
        "YAML, as for --set: ood=true, max_per_class=100, splits=[train, val]",
    )
    p.add_argument("--split", default="all", help="train, val, test or all (default: all records)")
    p.add_argument("--domains", metavar="A,B", help="keep only these domains (comma-separated)")
    p.add_argument(
        "--views",
        type=int,
        metavar="V",
        help="V augmented training views per image (random resized crop + flip); "
        "default: one centre-crop eval view",
    )
    p.add_argument("--seed", type=int, help="base seed of the training views (default 0)")
    p.add_argument(
        "--crop-scale",
        metavar="LO,HI",
        help="area range of the training views' random resized crop (default 0.08,1)",
    )
    p.add_argument(
        "--templates",
        nargs="+",
        metavar="T",
        help='prompt templates for class text features, e.g. "a photo of a {}."',
    )
    p.add_argument(
        "--local-features",
        action="store_true",
        help="also store each image's local (patch) features in fp16, from the same pass "
        "(ViT patch tokens / ResNet attention-pool map, projected; for GL-MCM and LoCoOp); "
        "their size is printed first (ViT-B/16: 196 x 512, about 200 KB per image)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="output .safetensors file")
    p.add_argument(
        "--cache",
        metavar="DIR",
        help="feature cache (default $CROFT_CACHE_DIR/features or ~/.cache/croft/features)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per forward (default 64)")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers (default 4)")
    p.add_argument("--shard-size", type=int, default=1024, help="images per shard (default 1024)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--strict", action="store_true", help="an undecodable image is an error")
    p.add_argument(
        "--hash-contents",
        action="store_true",
        help="key the feature cache on each image's sha256 (reads every image on every run) "
        "instead of its size and modification/change times",
    )
    p.add_argument("--allow-download", action="store_true", help="permit openclip:ARCH@TAG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_options(items: list[str] | None) -> dict[str, object]:
    """``["test_domain=photo", "ood=true", "splits=[train, val]"]`` -> layout options,
    with the :mod:`croft.overrides` grammar (one name, a YAML value). The older comma list
    (``splits=train,val``) is still read as a list, with a DeprecationWarning."""
    import warnings

    from croft.errors import CroftDeprecationWarning
    from croft.overrides import parse_options as parse

    out: dict[str, object] = parse(items, "--option")
    for key, value in out.items():
        if isinstance(value, str) and "," in value:
            parts = tuple(v.strip() for v in value.split(",") if v.strip())
            warnings.warn(
                f"--option {key}={value}: a comma list is deprecated; write "
                f"{key}=[{', '.join(parts)}]",
                CroftDeprecationWarning,
                stacklevel=2,
            )
            out[key] = parts
    return out


def run(args: argparse.Namespace) -> int:
    import sys

    from croft.errors import CroftError

    if args.views is None and args.seed is not None:
        raise CroftError("--seed sets the seed of training views; pass --views V as well")
    if args.views is None and args.crop_scale is not None:
        raise CroftError("--crop-scale sets the training views' crop; pass --views V as well")
    if args.views is not None and args.views < 1:
        raise CroftError(f"--views must be at least 1, got {args.views}")
    if not str(args.out).endswith(".safetensors"):
        raise CroftError(f"--out {args.out!r} must name a .safetensors file")

    from croft.backbones import load_backbone
    from croft.data import read_layout
    from croft.features.extract import ViewSpec, env_context, resolve_device
    from croft.features.files import check_writable_file
    from croft.features.store import (
        ExtractionInterrupted,
        extract_features,
        local_feature_size,
    )

    scale = None if args.crop_scale is None else args.crop_scale.split(",")
    view = (
        ViewSpec.train_views(args.views, args.seed or 0, scale)
        if args.views
        else ViewSpec.eval_view()
    )
    check_writable_file(args.out, "--out")

    options = parse_options(args.option)
    index = read_layout(args.root, args.layout, **options)
    if args.split != "all":
        present = sorted(index.counts("split"))
        index = index.filter(split=args.split)
        if len(index) == 0:
            raise CroftError(
                f"no records of split {args.split!r} under {args.root} (layout {args.layout}; "
                f"splits present: {', '.join(present)}); pass --split all or another split"
            )
    domains = [d.strip() for d in args.domains.split(",") if d.strip()] if args.domains else None
    if domains:
        index = index.filter(domains=domains)
    ctx = env_context()
    device = resolve_device(args.device, ctx)
    backbone = load_backbone(
        args.backbone,
        device=device,
        precision=args.precision,
        allow_download=args.allow_download,
    )
    extra = {"layout": args.layout, "split": args.split, "domains": domains or []}
    if args.local_features and ctx.is_main:
        print(f"croft: {local_feature_size(backbone, len(index), view)}", flush=True)
    try:
        fs = extract_features(
            backbone,
            index,
            view=view,
            templates=args.templates,
            cache_dir=args.cache,
            out=args.out,
            batch_size=args.batch_size,
            workers=args.workers,
            shard_size=args.shard_size,
            strict=args.strict,
            progress=not args.quiet,
            extra=extra,
            hash_contents=args.hash_contents,
            local_features=args.local_features,
        )
    except ExtractionInterrupted as exc:
        print(
            f"croft: interrupted; {exc.done} of {exc.total} shards are kept in {exc.directory}; "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    if fs is not None:
        shape = "x".join(str(s) for s in fs.features.shape)
        what = f"{shape} ({view.tag})"
        if fs.local_features is not None:
            what += " + local " + "x".join(str(s) for s in fs.local_features.shape)
        print(f"wrote features {what} of {len(fs)} images to {args.out}")
    return 0
