"""The one place for file-level helpers every layer shares.

* atomic writes: a temporary file beside the target, ``fsync``, then ``os.replace``; a
  reader never sees a half-written file and an interrupted write leaves the old one;
  folders alike (:func:`atomic_write_folder`: built in a ``.croft-tmp-`` sibling, renamed
  into place; :func:`remove_leftovers` clears those a killed process left);
* the one bounded JSON/YAML reader (:func:`parse_json`, :func:`read_json`,
  :func:`parse_yaml`): size, nesting depth and (YAML alias) expansion are limited;
* canonical JSON (sorted keys, no spaces) and its sha256, for keys and fingerprints;
* croft's cache directory (``$CROFT_CACHE_DIR`` or ``~/.cache/croft``);
* output paths that stay inside their root: :func:`safe_name` and :func:`inside`.
"""

from __future__ import annotations

import functools
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
from croft.limits import check_limit, limit_value

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
    """Parse a JSON file with :func:`parse_json`; a missing, unreadable, oversized, too deep
    or malformed file raises one-line errors."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CroftError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise CroftError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    check_limit("json_bytes", size, f"{what} {path}: size in bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CroftError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise CroftError(f"cannot read {what} {path}: {reason}") from None
    return parse_json(text, f"{what} {path}")


def parse_json(text: str | bytes, where: str) -> Any:
    """``text`` as JSON, bounded: its size (``json_bytes``), nesting depth (``json_depth``)
    and node count (``json_nodes``) are checked, and malformed or too deep text is one
    :class:`CroftError` line naming ``where`` (a file, or ``file: key``)."""
    check_limit("json_bytes", len(text), f"{where}: size in bytes")
    _check_depth_of_text(text, where)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CroftError(
            f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "restore or regenerate the file"
        ) from None
    except (RecursionError, ValueError) as exc:  # ValueError: bytes that are not UTF-8
        raise CroftError(f"{where}: not valid JSON ({type(exc).__name__}); restore it") from None
    check_tree(doc, where)
    return doc


def _check_depth_of_text(text: str | bytes, where: str) -> None:
    """Refuse JSON nested deeper than ``json_depth`` before parsing it (the parser recurses).
    Brackets inside strings are counted too, so this is an upper bound; a document that
    passes here is then measured exactly by :func:`check_tree`."""
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else text
    bound = limit_value("json_depth")
    if raw.count(b"[") + raw.count(b"{") <= bound:
        return
    depth = 0
    in_str = esc = False
    for byte in raw:
        if in_str:
            if esc:
                esc = False
            elif byte == 0x5C:
                esc = True
            elif byte == 0x22:
                in_str = False
        elif byte == 0x22:
            in_str = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > bound:
                check_limit("json_depth", depth, f"{where}: nesting depth")
        elif byte in (0x5D, 0x7D):
            depth -= 1


def check_tree(doc: Any, where: str, nodes_limit: str = "json_nodes") -> None:
    """Walk a parsed JSON/YAML value without recursion, counting every value as expanded
    (a YAML alias counts each time it is used) and the nesting depth; over ``nodes_limit``
    or ``json_depth`` is one :class:`CroftError` line. Stops at the first excess, so an
    alias bomb costs at most about ``nodes_limit`` steps."""
    max_nodes, max_depth = limit_value(nodes_limit), limit_value("json_depth")
    if not isinstance(doc, (dict, list, tuple)):
        return
    stack: list[tuple[Any, int]] = [(doc, 1)]
    nodes = 1
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            check_limit("json_depth", depth, f"{where}: nesting depth")
        values = node.values() if isinstance(node, dict) else node
        nodes += len(node) * (2 if isinstance(node, dict) else 1)
        if nodes > max_nodes:
            check_limit(nodes_limit, nodes, f"{where}: number of values (aliases expanded)")
        stack.extend((v, depth + 1) for v in values if isinstance(v, (dict, list, tuple)))


def parse_yaml(text: str, where: str) -> Any:
    """``text`` as YAML (safe loader: no code runs), bounded like :func:`parse_json`; a
    malformed document is one :class:`CroftError` line naming ``where``."""
    import yaml

    check_limit("json_bytes", len(text), f"{where}: size in bytes")
    try:
        doc = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except _TooDeep as exc:
        check_limit("json_depth", exc.depth, f"{where}: nesting depth")
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CroftError(f"{where}: not valid YAML ({first})") from None
    except RecursionError:
        check_limit("json_depth", float("nan"), f"{where}: nesting depth")
    check_tree(doc, where, "yaml_nodes")
    return doc


class _TooDeep(Exception):
    def __init__(self, depth: int) -> None:
        super().__init__(depth)
        self.depth = depth


@functools.lru_cache(maxsize=1)
def _yaml_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that refuses documents nested deeper than ``json_depth`` while
        composing, before PyYAML's recursive constructor runs."""

        _croft_depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self._croft_depth += 1
            try:
                if self._croft_depth > limit_value("json_depth"):
                    raise _TooDeep(self._croft_depth)
                return super().compose_node(parent, index)
            finally:
                self._croft_depth -= 1

    return Loader


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
