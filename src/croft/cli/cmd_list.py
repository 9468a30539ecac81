"""``croft list``: everything registered — methods (``-v``: their options), scores, head
types, backbone kinds, dataset layouts, experiment protocols, and the size limits."""

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
    p.add_argument("what", nargs="?", choices=[*_KINDS, "limits"], default=None)
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="methods: list their options; scores: their parameters and defaults; "
        "backbones: every architecture",
    )
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


#: kind -> (module, registry attribute, heading); methods are listed by :func:`run` itself.
_KINDS: dict[str, tuple[str, str, str]] = {
    "methods": ("croft.methods", "METHODS", "methods:"),
    "scores": ("croft.scores", "SCORES", "scores (higher = more in-distribution):"),
    "heads": ("croft.methods", "HEADS", "head types (head.json 'head'):"),
    "backbones": ("croft.backbones.loader", "BACKBONES", "backbone kinds (spec prefix KIND:…):"),
    "layouts": ("croft.data.layouts", "LAYOUTS", "dataset layouts (--layout):"),
    "protocols": (
        "croft.experiments.protocols",
        "PROTOCOLS",
        "experiment protocols (YAML 'protocol'):",
    ),
}


def _list_registry(kind: str, verbose: bool = False) -> None:
    import importlib

    module, attr, heading = _KINDS[kind]
    print(heading)
    for e in getattr(importlib.import_module(module), attr):
        print(f"  {e.name:<16} {e.summary}".rstrip())
        describe = getattr(e.obj, "describe", None)
        if verbose and callable(describe):  # scores: parameters with defaults
            print(f"  {'':<16}   {describe()}")
        forms = getattr(e.obj, "forms", None)
        if kind == "backbones" and isinstance(forms, str):
            print(f"  {'':<16} {forms}")
    if kind == "backbones":
        _list_architectures(verbose)


def _list_architectures(verbose: bool) -> None:
    import croft.backbones  # noqa: F401  (registers croft's own architectures)
    from croft.backbones.archs import architecture_lines

    print(f"open_clip architectures (ARCH of openclip:ARCH:PATH{'' if verbose else '; -v: all'}):")
    for line in architecture_lines(verbose):
        print(f"  {line}")
    print(
        "  (NAME-quickgelu works for any NAME; * = text tower from the Hugging Face hub, needs "
        "--allow-download; an open_clip_config.json beside the weights may define its own ARCH)"
    )


def run(args: argparse.Namespace) -> int:
    import croft.methods

    if args.what in (None, "methods"):
        print("methods:")
        for e in croft.methods.METHODS:
            if args.verbose:
                from croft.options_doc import format_options

                print("  " + format_options(e.name).replace("\n", "\n  ") + "\n")
            else:
                print(f"  {e.name:<16} {e.summary}")
    if args.what in (None, "limits"):
        from croft.limits import limit_lines

        print("limits (raise one with its variable; the error that hits it names it):")
        for line in limit_lines():
            print(f"  {line}")
    for kind in _KINDS:
        if kind != "methods" and args.what in (None, kind):
            _list_registry(kind, args.verbose)
    return 0
