"""User-facing errors.

Every problem a user can fix (bad input, missing file, wrong shape) raises
:class:`CroftError` with one line that says what is wrong, where, and how to fix
it. The CLI prints that line and exits with status 2; it never shows a traceback
for these.
"""

from __future__ import annotations


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
