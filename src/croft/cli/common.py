"""Helpers shared by the CLI commands (argparse only at import time)."""

from __future__ import annotations

import argparse
from typing import Any


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["lr=0.01", "variant=paper"]`` -> ``{"lr": "0.01", "variant": "paper"}``.

    The grammar is :mod:`croft.overrides` (one name per item, a YAML value); scalar values
    stay text so that the method config converts them to its field types.
    """
    from croft.overrides import parse_options

    parsed = parse_options(items)
    out: dict[str, Any] = {}
    for item in items or []:
        key, _, raw = item.partition("=")
        value = parsed[key.strip()]
        out[key.strip()] = value if isinstance(value, (list, dict)) else raw.strip()
    return out


def add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a method option (repeatable), e.g. --set variant=paper --set lambda2=10",
    )


def print_report(rep: dict[str, Any]) -> None:
    """What ``croft run`` and ``croft demo --synthetic`` print of a written report
    (:func:`croft.report.write_report`'s result): its tables, then its verdict."""
    from croft.tables import render

    for name, (header, rows) in rep["tables"].items():
        print(f"\n{name}:")
        print(render(header, rows))
    if rep["verdict"]:  # as the report computes it (croft.verdict)
        print("\nverdict:")
        print("\n".join(rep["verdict"]))
