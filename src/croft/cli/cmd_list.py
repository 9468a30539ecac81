"""``croft list``: registered methods (with ``-v`` their options), scores and head types."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list registered methods (-v: with their options), OOD scores and head types",
        description="List what is registered. With -v, every method's options with type, "
        "default and meaning (set them with 'croft fit --set NAME=VALUE' or in a run's "
        "YAML).",
    )
    p.add_argument("what", nargs="?", choices=["methods", "scores", "heads"], default=None)
    p.add_argument("-v", "--verbose", action="store_true", help="methods: list their options")
    p.set_defaults(func=run)


class HelpOptionsAction(argparse.Action):
    """``--help-options [METHOD]``: print a method's options and exit (like ``--help``).

    Without METHOD it uses a ``--method`` given before it, else ``croft``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        import croft.methods  # noqa: F401  (registers every method)
        from croft.options_doc import format_options

        method = values or getattr(namespace, "method", None) or "croft"
        print(format_options(method))
        parser.exit(0)


def run(args: argparse.Namespace) -> int:
    import croft.methods
    from croft.scores import SCORES

    if args.what in (None, "methods"):
        print("methods:")
        for e in croft.methods.METHODS:
            if args.verbose:
                from croft.options_doc import format_options

                print("  " + format_options(e.name).replace("\n", "\n  ") + "\n")
            else:
                print(f"  {e.name:<16} {e.summary}")
    if args.what in (None, "scores"):
        print("scores (higher = more in-distribution):")
        for e in SCORES:
            print(f"  {e.name:<16} {e.summary}")
    if args.what in (None, "heads"):
        print("head types (head.json 'head'):")
        for e in croft.methods.HEADS:
            print(f"  {e.name}")
    return 0
