"""The one place for file-level helpers every layer shares.

* atomic writes: a temporary file beside the target, ``fsync``, then ``os.replace``; a
  reader never sees a half-written file and an interrupted write leaves the old one;
  folders alike (:func:`atomic_write_folder`: built in a ``.croft-tmp-`` sibling, renamed
  into place; :func:`remove_leftovers` clears those a killed process left);
* canonical JSON (sorted keys, no spaces) and its sha256, for keys and fingerprints;
* croft's cache directory (``$CROFT_CACHE_DIR`` or ``~/.cache/croft``);
* output paths that stay inside their root: :func:`safe_name` and :func:`inside`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from croft.errors import CroftError

CACHE_ENV = "CROFT_CACHE_DIR"


# ------------------------------------------------------------------------ atomic writes
def atomic_write_with(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it over ``path``.

    For writers that want a file name (``safetensors.torch.save_file``). The folder is
    created; the temporary file is removed when ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename in (None, str(tmp)):  # a failed write() names no file: name ours
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


TEMP_PREFIX = ".croft-tmp-"
"""Names of croft's temporary folders: ``.croft-tmp-<target name>.<pid>.<random>``."""


def _temp_sibling(path: Path, tag: str = "") -> Path:
    return Path(
        tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{path.name}.{os.getpid()}.{tag}", dir=path.parent)
    )


def atomic_write_folder(
    path: str | os.PathLike[str], write: Callable[[Path], Any], *, keep_extra: bool = False
) -> Path:
    """Call ``write(tmp)`` on a new temporary folder beside ``path``, then rename it to
    ``path``: a reader sees the whole folder or none of it, and a failed ``write`` (disk
    full, a bad value) leaves nothing. An existing ``path`` is replaced; with
    ``keep_extra`` the entries of the old folder that the new one lacks are moved over.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        for _attempt in range(3):
            if not os.path.lexists(path):
                try:
                    os.rename(tmp, path)
                    return path
                except OSError as exc:  # another process got there first: replace it
                    if not os.path.lexists(path):
                        raise OSError(exc.errno, f"{exc.strerror}: {path}") from None
            old = _temp_sibling(path, "old.")
            os.rmdir(old)
            try:
                os.rename(path, old)
            except FileNotFoundError:
                continue
            os.rename(tmp, path)
            if keep_extra and old.is_dir() and not old.is_symlink():
                for entry in old.iterdir():
                    if not os.path.lexists(path / entry.name):
                        os.rename(entry, path / entry.name)
            _remove(old)
            return path
        raise OSError(f"{path} keeps changing while croft replaces it")
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_leftovers(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary siblings of ``path`` (``.croft-tmp-<name>.<pid>.*``) whose
    process is gone: what a kill or power cut left behind. Returns what was removed."""
    path = Path(path)
    prefix = f"{TEMP_PREFIX}{path.name}."
    removed = []
    try:
        entries = [e for e in path.parent.iterdir() if e.name.startswith(prefix)]
    except OSError:
        return []
    for entry in entries:
        pid = entry.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another croft is writing it now
        _remove(entry)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write_with(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` (``\\n`` line ends) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as sorted, indented JSON with a final newline, atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False, default=str)
    return atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file raises one-line errors."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CroftError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise CroftError(f"cannot read {what} {path}: {reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CroftError(
            f"{what} {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "restore or regenerate the file"
        ) from None


# ------------------------------------------------------------------------ hashing
def canonical_json(obj: Any) -> str:
    """Deterministic JSON text: sorted keys, no spaces, non-ASCII kept."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_hash(obj: Any, length: int | None = None) -> str:
    """sha256 hex digest of :func:`canonical_json` (first ``length`` characters if given)."""
    digest = hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
    return digest[:length] if length else digest


# ------------------------------------------------------------------------ cache folder
def cache_dir() -> Path:
    """croft's cache root: ``$CROFT_CACHE_DIR`` or ``~/.cache/croft``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "croft"


# ------------------------------------------------------------------------ safe paths
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@-]{0,127}$")


def safe_name(name: str, what: str = "name") -> str:
    """``name`` if it is a safe single path component, else a one-line :class:`CroftError`.

    Safe: 1–128 characters of letters, digits and ``. _ + = @ -``, not starting with a
    dot or dash, and not ``..``. Labels of methods, runs and experiments become folder
    names, so a label can never point outside its output folder.
    """
    text = str(name)
    if not _SAFE.match(text) or text in (".", ".."):
        raise CroftError(
            f"{what} {text!r} cannot be used as a folder name: use 1-128 letters, digits and "
            "'._+=@-', starting with a letter or digit"
        )
    return text


def inside(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root/parts…`` after checking that the resolved path stays inside ``root``."""
    base = Path(root).resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        raise CroftError(f"{Path(root).joinpath(*parts)} lies outside {root}; refusing to write")
    return target
