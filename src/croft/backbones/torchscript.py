"""Read the parameters and buffers of a TorchScript archive without running any of it.

A ``torch.jit.save`` archive is a zip holding, under one root folder ``NAME/``:
``data.pkl`` (the module tree, pickled), ``data/<key>`` (raw little-endian tensor bytes),
``code/**.py`` (TorchScript source, one class declaration per module type, each listing
its ``__parameters__`` and ``__buffers__``), ``constants.pkl``, ``version`` and
``byteorder``. ``torch.jit.load`` compiles the code and calls the archive's own
``__setstate__`` methods, so a crafted archive runs code on load.

This reader never imports the archive's code and never calls anything it names. The
pickle is read with a restricted unpickler whose ``find_class`` yields inert stand-ins:
module objects (``__torch__.*`` classes) keep their state as a dict, tensors are recorded
as (storage key, offset, size, stride) and built afterwards from the raw bytes. Any other
global (``os.system``, ``builtins.eval``, custom classes) is refused with one line. The
``code/`` files are read as text, only for their ``__parameters__``/``__buffers__`` lists.
The result equals the state dict TorchScript's own loader returns (tested), without
running anything from the archive.
"""

from __future__ import annotations

import ast
import collections
import io
import math
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from croft.errors import CroftError
from croft.limits import check_limit

if TYPE_CHECKING:
    import torch

MAX_PICKLE_BYTES = 256 * 1024 * 1024  # the module tree, not the weights
_SLACK = 4096  # bytes a tensor record may hold beyond its storage

_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
_KEY = re.compile(r"^[A-Za-z0-9_]+$")
_CLASS = re.compile(r"^class\s+(\w+)\s*\(")
_LIST = re.compile(r"^\s+(__parameters__|__buffers__)\s*=\s*(\[.*\])\s*$")


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _StorageRef:
    dtype: str
    key: str
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _ScriptObject:
    """Stand-in for a ``__torch__.*`` module object: its pickled state, kept as data."""

    qualname = "__torch__"

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD: store, never interpret
        self.state = state


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise pickle.UnpicklingError(f"tensor {what} is not a tuple of non-negative ints")
    return value


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> _TensorRef:
    if not isinstance(storage, _StorageRef) or not isinstance(offset, int) or offset < 0:
        raise pickle.UnpicklingError("malformed tensor record")
    return _TensorRef(storage, offset, _ints(size, "size"), _ints(stride, "stride"))


def _rebuild_parameter(data: Any, *_rest: Any) -> _TensorRef:
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError("malformed parameter record")
    return data


def _ordered_dict(*args: Any) -> dict[Any, Any]:
    if args and not (len(args) == 1 and isinstance(args[0], (list, tuple))):
        raise pickle.UnpicklingError("malformed OrderedDict record")
    return collections.OrderedDict(args[0] if args else ())


class _Unpickler(pickle.Unpickler):
    """Builds only inert records; every global outside a short allow-list is refused."""

    def __init__(self, data: bytes, keys: set[str]) -> None:
        super().__init__(io.BytesIO(data))
        self._keys = keys
        self._classes: dict[str, type[_ScriptObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "collections" and name == "OrderedDict":
            return _ordered_dict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module == "__torch__" or module.startswith("__torch__.")) and name.isidentifier():
            qualname = f"{module}.{name}"
            if qualname not in self._classes:
                self._classes[qualname] = type(name, (_ScriptObject,), {"qualname": qualname})
            return self._classes[qualname]
        raise pickle.UnpicklingError(f"refused to load global {module}.{name}")

    def persistent_load(self, pid: Any) -> _StorageRef:
        ok = (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
            and pid[2] in self._keys
            and isinstance(pid[4], int)
            and pid[4] >= 0
        )
        if not ok:
            raise pickle.UnpicklingError(f"malformed storage record {pid!r:.60}")
        return _StorageRef(pid[1].dtype, pid[2], pid[4])


def _root(names: list[str]) -> str:
    roots = [n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1:
        raise ValueError("no single <name>/data.pkl entry")
    return roots[0]


def _declarations(zf: zipfile.ZipFile, root: str) -> dict[str, dict[str, list[str]]]:
    """``{qualified class name: {"__parameters__": [...], "__buffers__": [...]}}`` read as
    text from ``code/`` (literal lists only; nothing is compiled)."""
    out: dict[str, dict[str, list[str]]] = {}
    prefix = f"{root}/code/"
    for name in zf.namelist():
        if not (name.startswith(prefix) and name.endswith(".py")):
            continue
        module = ".".join(PurePosixPath(name[len(prefix) : -3]).parts)
        current: dict[str, list[str]] | None = None
        for line in zf.read(name).decode("utf-8", "replace").splitlines():
            if m := _CLASS.match(line):
                current = out.setdefault(f"{module}.{m.group(1)}", {})
            elif current is not None and (m := _LIST.match(line)):
                try:
                    value = ast.literal_eval(m.group(2))
                except (ValueError, SyntaxError):
                    continue
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    current[m.group(1)] = value
    return out


def check_view(
    size: tuple[int, ...], stride: tuple[int, ...], offset: int, storage_numel: int, where: str
) -> None:
    """Raise ValueError unless the view ``(size, stride, offset)`` addresses distinct elements
    of a storage of ``storage_numel`` elements, and no more elements than the
    ``tensor_elements`` limit (so materialising it is bounded by what the file holds).

    A stride-0 or overlapping view (one element read many times: a 4-byte storage can claim
    a (32768, 32768) tensor) is refused, never expanded.
    """
    if len(size) != len(stride):
        raise ValueError(f"{where} has mismatched size and stride")
    numel = math.prod(size)
    check_limit("tensor_elements", numel, f"{where}: element count")
    if numel == 0:
        return
    reach = 0  # the highest offset reached by the dimensions checked so far
    for n, st in sorted(((n, st) for n, st in zip(size, stride, strict=True) if n > 1),
                        key=lambda d: d[1]):  # fmt: skip
        if st <= reach:
            raise ValueError(
                f"{where} is a stride-{st} view that reads its elements more than once "
                f"(size {size}, stride {stride}); save the tensor itself (tensor.clone())"
            )
        reach += (n - 1) * st
    if offset + reach >= storage_numel:
        raise ValueError(f"{where} is out of bounds of its data")


def _tensor(zf: zipfile.ZipFile, root: str, ref: _TensorRef, cache: dict[str, Any]) -> Any:
    import torch

    key = ref.storage.key
    check_view(ref.size, ref.stride, ref.offset, ref.storage.numel, f"tensor view on data {key}")
    if key not in cache:
        dtype = getattr(torch, ref.storage.dtype)
        check_limit("tensor_elements", ref.storage.numel, f"tensor data {key}: element count")
        need = ref.storage.numel * torch.empty((), dtype=dtype).element_size()
        info = zf.getinfo(f"{root}/data/{key}")
        if info.file_size > need + _SLACK:
            raise ValueError(f"tensor data {key} holds {info.file_size} bytes, not {need}")
        raw = bytearray(zf.read(info))
        if len(raw) < need:
            raise ValueError(f"tensor data {key} is truncated ({len(raw)} of {need} bytes)")
        flat = torch.frombuffer(raw, dtype=dtype, count=ref.storage.numel) if need else None
        cache[key] = flat if flat is not None else torch.empty(0, dtype=dtype)
    flat = cache[key]
    return torch.as_strided(flat, ref.size, ref.stride, ref.offset).clone()


def _walk(
    obj: _ScriptObject,
    prefix: str,
    decls: dict[str, dict[str, list[str]]],
    out: dict[str, _TensorRef],
) -> None:
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        raise ValueError(
            f"module {obj.qualname} carries custom state (its own __setstate__), which croft "
            "does not run"
        )
    decl = decls.get(obj.qualname)
    if decl is None:  # no declaration found: every tensor attribute counts
        names = [k for k, v in state.items() if isinstance(v, _TensorRef)]
    else:
        names = decl.get("__parameters__", []) + decl.get("__buffers__", [])
    for name in names:
        value = state.get(name)
        if isinstance(value, _TensorRef):
            out[prefix + name] = value
    for name, value in state.items():
        if isinstance(value, _ScriptObject):
            _walk(value, f"{prefix}{name}.", decls, out)


def read_state_dict(path: Any) -> dict[str, torch.Tensor]:
    """Parameters and buffers of the TorchScript archive at ``path`` (CPU tensors, keyed as
    TorchScript's own loader's ``state_dict()``). Raises CroftError (one line) for anything that
    is not a plain module tree of tensors."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            root = _root(names)
            order = (
                zf.read(f"{root}/byteorder").decode().strip()
                if f"{root}/byteorder" in names
                else "little"
            )
            if order != "little":
                raise ValueError(f"byte order {order!r} is not supported")
            info = zf.getinfo(f"{root}/data.pkl")
            if info.file_size > MAX_PICKLE_BYTES:
                raise ValueError(f"data.pkl is {info.file_size} bytes, over the limit")
            keys = {n[len(root) + 6 :] for n in names if n.startswith(f"{root}/data/")}
            keys = {k for k in keys if _KEY.match(k)}
            obj = _Unpickler(zf.read(info), keys).load()
            if not isinstance(obj, _ScriptObject):
                raise ValueError("the archive's root is not a module")
            refs: dict[str, _TensorRef] = {}
            _walk(obj, "", _declarations(zf, root), refs)
            cache: dict[str, Any] = {}
            return {k: _tensor(zf, root, ref, cache) for k, ref in refs.items()}
    except (
        pickle.UnpicklingError,
        ValueError,
        KeyError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        RuntimeError,
        TypeError,
        AttributeError,
        IndexError,
        RecursionError,
    ) as exc:
        text = str(exc).strip().splitlines()
        why = text[0] if text else type(exc).__name__
        raise CroftError(f"cannot read {path} as a TorchScript archive: {why}") from None
