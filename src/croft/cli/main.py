"""``croft`` entry point.

Every sub-command lives in a module ``croft.cli.cmd_<name>`` that defines
``register(subparsers)``; the parser sets ``func(args) -> int``. Command modules
import only ``argparse`` at module level and load the library inside ``func``, so
``croft --help`` stays fast.

A :class:`croft.CroftError` (bad input) prints one line ``croft: error: …`` and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from croft._version import __version__
from croft.errors import CroftError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="croft",
        description="Robust fine-tuning of frozen CLIP-like models with CRoFT: "
        "covariate-shift accuracy and open-set OOD detection in one run.",
    )
    parser.add_argument("--version", action="version", version=f"croft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import croft.cli as pkg

    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("cmd_"))
    for name in names:
        importlib.import_module(f"croft.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CroftError as exc:
        print(f"croft: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("croft: interrupted; finished work is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
