"""Progress for long work: a live bar on a terminal, periodic log lines otherwise.

:func:`progress` returns a context-managed object with ``update(n)``, ``set_postfix(**kw)``
and ``close()``. On a terminal it is a tqdm bar (on stderr). When stderr is not a
terminal (a log file, CI) it logs one plain line at most every ``every`` seconds with
the phase, count, rate and ETA, so logs hold no carriage returns; the CLI shows these
``croft.progress`` info records as ``croft: progress: …`` lines (``croft.cli.main``). ``quiet`` (or
``CROFT_QUIET=1``) silences both. :func:`quieted` marks a whole command quiet (the CLI's
``--quiet``), so third-party output croft triggers (transformers' "Loading weights" bar) can
follow it through :func:`is_quiet` and :func:`live_bars`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("croft.progress")


@contextmanager
def quieted(on: bool = True) -> Iterator[None]:
    """Within the block croft runs quietly (``on=False``: no change): ``CROFT_QUIET=1`` is set,
    so :func:`is_quiet` holds here and in any worker process started meanwhile."""
    if not on:
        yield
        return
    before = os.environ.get("CROFT_QUIET")
    os.environ["CROFT_QUIET"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CROFT_QUIET", None)
        else:
            os.environ["CROFT_QUIET"] = before


def is_quiet() -> bool:
    """True with ``CROFT_QUIET=1`` (set by :func:`quieted`, the CLI's ``--quiet``)."""
    return os.environ.get("CROFT_QUIET") == "1"


def live_bars() -> bool:
    """True where croft shows live bars: not quiet, and stderr is a terminal."""
    return not is_quiet() and _is_tty()


def _is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """Periodic plain progress lines through :mod:`logging`."""

    def __init__(
        self, total: int | None, desc: str, unit: str, every: float, leave: bool = True
    ) -> None:
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.leave = leave  # False (an inner bar, one per fit): no extra line at completion
        self.n = 0
        self.t0 = self.last = time.monotonic()
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        done = self.leave and self.total is not None and self.n >= self.total
        if now - self.last >= self.every or done:
            self.last = now
            self._emit(now)

    def _emit(self, now: float) -> None:
        elapsed = max(now - self.t0, 1e-9)
        rate = self.n / elapsed
        text = f"{self.desc}: {self.n}"
        if self.total:
            eta = (self.total - self.n) / rate if rate > 0 else float("inf")
            text += f"/{self.total} ({100.0 * self.n / self.total:.0f}%), ETA {eta:.0f}s"
        text += f", {rate:.2f} {self.unit}/s"
        if self.postfix:
            text += f" [{self.postfix}]"
        log.info(text)

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        pass

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NoProgress(LineProgress):
    def __init__(self) -> None:
        super().__init__(None, "", "", float("inf"))

    def update(self, n: int = 1) -> None:
        self.n += n


def progress(
    total: int | None,
    desc: str,
    unit: str = "it",
    *,
    enabled: bool = True,
    every: float = 10.0,
    leave: bool = True,
) -> Any:
    """A progress reporter over ``total`` units (see the module docstring)."""
    if not enabled or is_quiet():
        return NoProgress()
    if _is_tty():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)
    return LineProgress(total, desc, unit, every, leave)
