"""The one override grammar: ``key.path=value`` with a YAML value.

Used by ``croft run --set``, ``croft fit --set`` (flat method options), ``croft extract
--option`` (flat layout options), WiSE's ``base_options`` text and the experiment loader.
List-valued method options (``c_grid``, ``alpha_grid``) take a YAML list, mapping-valued
ones (``base_options``) a YAML mapping. Grammar::

    item   := path "=" value
    path   := segment ("." segment)*
    segment:= NAME | INDEX          NAME = [A-Za-z_][A-Za-z0-9_]*, INDEX = [0-9]+
    value  := any YAML flow value: 4, 0.01, true, paper, [1, 2], {a: 1}, "" (empty string)

A NAME segment indexes a mapping (created when missing); an INDEX segment indexes an
existing list and must be in range. Every malformed item is one :class:`CroftError`
line naming the item. Values are parsed with :func:`croft.fileio.parse_yaml` (safe and
bounded: no code runs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any

from croft.errors import CroftError
from croft.fileio import parse_yaml

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INDEX = re.compile(r"^[0-9]+$")
Segment = str | int


def parse_value(text: str, where: str = "value") -> Any:
    """``text`` as a YAML value (an empty text is the empty string)."""
    if not text.strip():
        return ""
    try:
        return parse_yaml(text, where)
    except CroftError as exc:
        if "not valid YAML" not in str(exc):
            raise
        first = str(exc).partition("not valid YAML (")[2].rstrip(")")
        raise CroftError(f"{where}: {text!r} is not a valid YAML value ({first})") from None


def parse_path(key: str, where: str) -> list[Segment]:
    """``"methods.2.options.lr"`` -> ``["methods", 2, "options", "lr"]``."""
    parts: list[Segment] = []
    for seg in key.strip().split("."):
        if _INDEX.match(seg):
            parts.append(int(seg))
        elif _NAME.match(seg):
            parts.append(seg)
        else:
            raise CroftError(
                f"{where}: bad key {key.strip()!r} (segment {seg!r}); use names and list "
                "indices joined by dots, e.g. methods.0.options.lr=0.01"
            )
    return parts


def parse_assignment(item: str, what: str = "--set") -> tuple[list[Segment], Any]:
    """``"a.b=1"`` -> ``(["a", "b"], 1)``."""
    where = f"{what} {item!r}"
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise CroftError(f"{where}: expected KEY=VALUE, e.g. {what} shots=4")
    return parse_path(key, where), parse_value(raw.strip(), where)


def set_path(doc: MutableMapping[str, Any], path: list[Segment], value: Any, where: str) -> None:
    """Set ``doc[path...] = value``; mappings on the way are created, lists must exist."""
    node: Any = doc
    for i, seg in enumerate(path):
        last = i == len(path) - 1
        shown = ".".join(str(s) for s in path[:i]) or "the document"
        if isinstance(seg, int):
            if not isinstance(node, list):
                raise CroftError(f"{where}: {shown} is not a list (index {seg})")
            if seg >= len(node):
                raise CroftError(
                    f"{where}: {shown} has {len(node)} item(s); index {seg} is out of range"
                )
        elif not isinstance(node, MutableMapping):
            raise CroftError(f"{where}: {shown} is not a mapping (key {seg!r})")
        if last:
            node[seg] = value
        elif isinstance(seg, int):
            node = node[seg]
        else:
            if node.get(seg) is None:
                node[seg] = {}
            node = node[seg]


def apply_overrides(
    doc: MutableMapping[str, Any], items: Iterable[str], what: str = "--set"
) -> MutableMapping[str, Any]:
    """Apply every ``key.path=value`` item to ``doc`` in order (in place); returns ``doc``."""
    for item in items:
        path, value = parse_assignment(item, what)
        set_path(doc, path, value, f"{what} {item!r}")
    return doc


def parse_options(items: Iterable[str] | None, what: str = "--set") -> dict[str, Any]:
    """Flat ``key=value`` items (method or layout options) -> a dict of YAML values."""
    out: dict[str, Any] = {}
    for item in items or []:
        path, value = parse_assignment(item, what)
        if len(path) != 1 or not isinstance(path[0], str):
            raise CroftError(f"{what} {item!r}: an option is one name, e.g. {what} lr=0.01")
        out[path[0]] = value
    return out
