"""A small typed registry (decorator style, as timm's ``@register_model``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from croft.errors import CroftError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with its one-line description."""

    name: str
    obj: T
    summary: str


class Registry(Generic[T]):
    """Maps names to objects; unknown names fail with the list of known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, summary: str = "") -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``; the summary defaults to its docstring."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            text = summary or _first_sentence(getattr(obj, "__doc__", None) or "")
            self._entries[name] = Entry(name, obj, text)
            return obj

        return deco

    def get(self, name: str) -> T:
        """The entry ``name`` (exact, else the one name equal to it ignoring case); an
        unknown name is one error line with the closest known name."""
        if name in self._entries:
            return self._entries[name].obj
        folded = [k for k in self._entries if isinstance(name, str) and k.lower() == name.lower()]
        if len(folded) == 1:
            return self._entries[folded[0]].obj
        import difflib

        known = ", ".join(sorted(self._entries)) or "none"
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise CroftError(f"unknown {self.kind} {name!r}; known: {known}{hint}")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self._entries)


def _first_sentence(doc: str) -> str:
    """A docstring's first sentence as plain text: its first paragraph joined, cut at the
    first ". ", reST literal markup (````x````) removed."""
    para = " ".join(doc.strip().split("\n\n", 1)[0].split())
    sentence = para.split(". ", 1)[0].rstrip(".")
    return sentence.replace("``", "") + ("." if sentence else "")
