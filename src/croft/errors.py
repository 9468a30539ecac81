"""User-facing errors.

Every problem a user can fix (bad input, missing file, wrong shape) raises
:class:`CroftError` with one line that says what is wrong, where, and how to fix
it. The CLI prints that line and exits with status 2; it never shows a traceback
for these.
"""

from __future__ import annotations

import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROLS = {
    code: _NAMED.get(chr(code), f"\\x{code:02x}") for code in (*range(0x20), *range(0x7F, 0xA0))
}
_CONTROLS.update({0x2028: "\\u2028", 0x2029: "\\u2029"})
_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())  # a byte of an undecodable file name (surrogateescape) or junk
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``text`` safe to print on a terminal: C0/C1 control characters (ESC sequences,
    newlines, tabs, DEL), the Unicode line separators and the undecodable bytes of a file name
    written as ``\\x1b``, ``\\n``, ``\\xff``, …

    Used wherever text from file names or files reaches the terminal (error lines, warning
    lines, ``croft predict`` tables), so a crafted name cannot recolour, move the cursor or
    fake extra output lines.
    """
    return _SURROGATE.sub(_surrogate, str(text).translate(_CONTROLS))


class CroftError(ValueError):
    """A problem with the user's input, stated in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type name when the message is empty): how a
    third-party exception is quoted inside a one-line :class:`CroftError`."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class CroftDeprecationWarning(DeprecationWarning):
    """An input form croft still reads but will stop reading; the CLI always shows it."""
