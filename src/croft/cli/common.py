"""Helpers shared by the CLI commands (argparse only at import time)."""

from __future__ import annotations

import argparse
from typing import Any


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["lr=0.01", "variant=paper"]`` -> ``{"lr": "0.01", "variant": "paper"}``."""
    from croft.errors import CroftError

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CroftError(f"--set {item!r}: expected KEY=VALUE (e.g. --set lr=0.01)")
        out[key.strip()] = value.strip()
    return out


def add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a method option (repeatable), e.g. --set variant=paper --set lambda2=10",
    )
