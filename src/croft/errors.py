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
