"""``croft data``: check dataset folders and write leave-one-domain-out split files.

``croft data check ROOT --layout NAME`` prints a summary (classes, domains, images per
split and domain) and every problem on its own line; exit 0 if fine, 1 if problems.
``croft data splits ROOT`` writes the missing ``test_on_<domain>.json`` of an
OoD-Bench style folder (PACS / VLCS).
"""

from __future__ import annotations

import argparse

_LAYOUTS = "domainbed, oodbench, coop, imagenet, folder"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``data check`` and ``data splits``."""
    p = subparsers.add_parser("data", help="check dataset folders, write split files")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")

    c = sub.add_parser(
        "check",
        help="read a dataset folder and report its content and every problem",
        description="Read ROOT as LAYOUT, print a summary and each problem found. "
        "Exit 0 if fine, 1 if problems were found.",
    )
    c.add_argument("root", metavar="ROOT", help="dataset folder")
    c.add_argument(
        "--layout", metavar="NAME", help=f"one of: {_LAYOUTS} (default: guessed from ROOT)"
    )
    c.add_argument("--test-domain", metavar="D", help="oodbench: held-out domain")
    c.add_argument("--dataset", metavar="NAME", help="coop: dtd, food101 or caltech101")
    c.add_argument(
        "--exclude-overlap-with",
        metavar="ID",
        help="coop caltech101: apply the paper's class filter for pacs or vlcs",
    )
    c.add_argument("--variant", metavar="V", help="imagenet: v2, sketch, a or r")
    c.add_argument("--classnames", metavar="PATH", help="imagenet: classnames.txt")
    c.add_argument("--ood", action="store_true", help="folder/coop: unlabelled OOD set")
    c.add_argument(
        "--verify-images", action="store_true", help="decode every image (slow on big sets)"
    )
    c.set_defaults(func=run)

    s = sub.add_parser(
        "splits",
        help="write missing test_on_<domain>.json files (PACS/VLCS leave-one-domain-out)",
        description="ROOT holds images/<domain>/<class>/<image> (or <domain>/<class>/<image>, "
        "a DomainBed tree). For each domain D, "
        "test_on_D.json gets test = D and a seeded, stratified train/val split of the "
        "other domains.",
    )
    s.add_argument(
        "root", metavar="ROOT", help="dataset folder holding images/ or the domain folders"
    )
    s.add_argument("--val-fraction", type=float, default=0.2, help="default 0.2")
    s.add_argument("--seed", type=int, default=1, help="default 1")
    s.add_argument("--overwrite", action="store_true", help="rewrite existing split files")
    s.set_defaults(func=run)
    p.set_defaults(func=run, data_command=None)


def _options(args: argparse.Namespace) -> dict[str, object]:
    opts: dict[str, object] = {}
    for name in ("test_domain", "dataset", "exclude_overlap_with", "variant", "classnames"):
        value = getattr(args, name, None)
        if value is not None:
            opts[name] = value
    if args.ood:
        opts["ood"] = True
    if args.verify_images:
        opts["verify_images"] = True
    return opts


def _count_lines(title: str, counts: dict[object, int]) -> list[str]:
    return [f"  {title} {k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))]


def _check(args: argparse.Namespace) -> int:
    from croft.data import inspect_layout
    from croft.data.layouts import guess_layout

    if not args.layout:
        args.layout = guess_layout(args.root)
    from croft.errors import printable

    index, problems = inspect_layout(args.root, args.layout, **_options(args))
    print(f"layout {args.layout}: {printable(args.root)}")
    if index is not None:
        shown = printable(", ".join(index.class_names[:10]))
        more = f", ... (+{len(index.class_names) - 10})" if len(index.class_names) > 10 else ""
        print(f"index root: {printable(index.root)}")
        print(f"classes: {len(index.class_names)}" + (f" ({shown}{more})" if shown else ""))
        print(f"domains: {len(index.domain_names)} ({printable(', '.join(index.domain_names))})")
        print(f"images: {len(index)}")
        for line in _count_lines("split", index.counts("split")):
            print(line)
        for line in _count_lines("domain", index.counts("domain")):
            print(printable(line))
        print(f"hash: {index.hash()[:16]}")
    for problem in problems:
        print(f"problem: {printable(problem)}")
    print(f"{len(problems)} problem(s)" if problems else "ok: no problems found")
    return 1 if problems else 0


def _splits(args: argparse.Namespace) -> int:
    from croft.data import generate_lodo_splits

    written = generate_lodo_splits(
        args.root, val_fraction=args.val_fraction, seed=args.seed, overwrite=args.overwrite
    )
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("all split files exist; pass --overwrite to regenerate them")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch ``croft data ACTION``."""
    from croft.errors import CroftError

    if args.data_command == "check":
        return _check(args)
    if args.data_command == "splits":
        return _splits(args)
    raise CroftError("croft data needs an action: check or splits (see croft data --help)")
