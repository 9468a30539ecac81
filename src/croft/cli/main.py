"""``croft`` entry point.

Every sub-command lives in a module ``croft.cli.cmd_<name>`` that defines
``register(subparsers)``; the parser sets ``func(args) -> int``. Command modules
import only ``argparse`` at module level and load the library inside ``func``, so
``croft --help`` stays fast.

Errors end in one line on stderr, never a traceback: a :class:`croft.CroftError` (bad
input) or an operating-system error on a path the user named (missing, read-only, not a
directory, disk full) prints ``croft: error: …`` and exits 2; anything else is a bug in
croft: one line saying so and exit 1 (``CROFT_DEBUG=1`` shows the traceback). Library
warnings (``logging``) appear as ``croft: warning: …`` lines. Every such line passes through
:func:`croft.errors.printable`, so control characters from file names or files (ESC
sequences, newlines) are shown escaped, never sent to the terminal raw.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import pkgutil
import sys
import warnings
from collections.abc import Sequence

from croft._version import __version__
from croft.errors import CroftDeprecationWarning, CroftError, printable
from croft.progress import quieted


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


class _StderrHandler(logging.Handler):
    """Library log records as ``croft: warning: …`` lines on the current ``sys.stderr``.

    Warnings and errors from any ``croft`` logger pass; info records pass only from
    ``croft.progress`` (the periodic progress lines of :mod:`croft.progress`, printed as
    ``croft: progress: …``), so a log file of ``croft run … > log 2>&1`` shows how far a
    job is. A command's ``--quiet`` turns those lines off at their source.
    """

    def filter(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        return record.levelno >= logging.WARNING or (
            record.levelno >= logging.INFO and record.name.startswith("croft.progress")
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = printable(" ".join(record.getMessage().split()))
            kind = "progress" if record.levelno < logging.WARNING else record.levelname.lower()
            print(f"croft: {kind}: {text}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _install_log_handler() -> None:
    logger = logging.getLogger("croft")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler(logging.INFO))
    bars = logging.getLogger("croft.progress")
    if bars.level == logging.NOTSET:
        bars.setLevel(logging.INFO)  # progress lines reach the handler; other info does not


def _show_deprecation(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
    """croft's own deprecations as ``croft: warning: …`` lines; other warnings as usual."""
    if issubclass(category, CroftDeprecationWarning):
        print(f"croft: warning: {printable(' '.join(str(message).split()))}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


_FIXES = {
    errno.ENOENT: "check the path",
    errno.EACCES: "choose a writable location or fix its permissions",
    errno.EPERM: "choose a writable location or fix its permissions",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "the path is a folder; name a file",
    errno.ENOSPC: "the disk is full; free space or choose another location",
    errno.EEXIST: "it exists already; remove it or choose another path",
}


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: what failed, on which path, how to fix."""
    what = exc.strerror or type(exc).__name__
    where = " -> ".join(printable(p) for p in (exc.filename, exc.filename2) if p is not None)
    fix = _FIXES.get(exc.errno or 0, "")
    return f"{what}: {where or str(exc)}" + (f"; {fix}" if fix else "")


def check_device_arg(args: argparse.Namespace) -> None:
    """``--device cuda[:N]`` on a machine without CUDA (or without GPU N) is one line, before
    any work starts (every command that takes ``--device``)."""
    device = getattr(args, "device", None)
    if not isinstance(device, str) or not device.strip().lower().startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise CroftError(
            f"--device {device} asked for but CUDA is not available on this machine; "
            "use --device cpu"
        )
    _, _, num = device.partition(":")
    if num.strip().isdigit() and int(num) >= torch.cuda.device_count():
        raise CroftError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); "
            "use cuda:0 .. cuda:N-1"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _install_log_handler()
    with warnings.catch_warnings():  # croft's deprecations are always shown, as one line
        warnings.simplefilter("default", CroftDeprecationWarning)
        warnings.showwarning = _show_deprecation
        with quieted(bool(getattr(args, "quiet", False))):  # also silences third-party bars
            return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; every failure becomes one ``croft: error:`` line and an exit code."""
    try:
        check_device_arg(args)
        return int(args.func(args) or 0)
    except CroftError as exc:
        print(f"croft: error: {printable(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader closed the pipe (croft eval ... | head): stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        except (OSError, ValueError):
            pass
        return 141  # 128 + SIGPIPE, as a C program killed by the signal reports
    except OSError as exc:
        if os.environ.get("CROFT_DEBUG") == "1":
            raise
        print(f"croft: error: {printable(' '.join(os_error_line(exc).split()))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("croft: interrupted; finished work is kept", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback on request
        if os.environ.get("CROFT_DEBUG") == "1":
            raise
        text = printable(" ".join(str(exc).split())[:300]) or "no message"
        print(
            f"croft: error: {type(exc).__name__}: {text} -- this is a bug in croft; rerun "
            "with CROFT_DEBUG=1 for the traceback and report it",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
