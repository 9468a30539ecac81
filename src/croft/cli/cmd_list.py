"""``croft list``: registered methods and scores."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered methods and OOD scores")
    p.add_argument("what", nargs="?", choices=["methods", "scores"], default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import croft.methods
    from croft.scores import SCORES

    if args.what in (None, "methods"):
        print("methods:")
        for e in croft.methods.METHODS:
            print(f"  {e.name:<16} {e.summary}")
    if args.what in (None, "scores"):
        print("scores (higher = more in-distribution):")
        for e in SCORES:
            print(f"  {e.name:<16} {e.summary}")
    return 0
