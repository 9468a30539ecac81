"""Reading CLIP weight files as data: state dicts (``.pt``/``.bin``/``.pth`` with
``weights_only=True``, ``.safetensors``), OpenAI TorchScript archives (parsed, never run)
and the metadata found beside them (checkpoint wrapper keys, safetensors header,
``open_clip_config.json``). torch and safetensors are imported inside functions only."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from croft.errors import CroftError, first_line
from croft.fileio import parse_json

if TYPE_CHECKING:
    import torch

OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
WRAPPER_KEYS = ("state_dict", "model")
PREFIXES = ("module.", "_orig_mod.")
OPENAI_QUICK_GELU_WHERE = "OpenAI CLIP weights (trained with QuickGELU)"
SIDECAR = "open_clip_config.json"


def is_torchscript_archive(path: Path) -> bool:
    """True for a TorchScript zip (``torch.jit.save``), as OpenAI's clip package ships."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _strip_prefixes(sd: dict[str, Any]) -> dict[str, Any]:
    for prefix in PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def read_torchscript_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """State dict of a TorchScript archive, parsed as data: nothing in it is run (see
    :mod:`croft.backbones.torchscript`); OpenAI's extra entries are dropped."""
    from croft.backbones.torchscript import read_state_dict

    sd = read_state_dict(path)
    for key in OPENAI_EXTRA_KEYS:
        sd.pop(key, None)
    return sd


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a ``.pt``/``.bin``/``.pth`` state dict (``weights_only=True``; possibly wrapped
    in ``{"state_dict": ...}`` or ``{"model": ...}`` with ``module.`` prefixes), a
    ``.safetensors`` file, or an OpenAI TorchScript archive.

    Returns the state dict and the metadata found beside it (wrapper keys, safetensors
    header metadata, ``{"torchscript": True}`` for TorchScript archives).
    """
    import torch

    meta: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                sd: dict[str, Any] = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except Exception as exc:  # noqa: BLE001
            raise CroftError(f"cannot read safetensors file {path}: {first_line(exc)}") from None
        return _strip_prefixes(sd), meta
    if is_torchscript_archive(path):
        return read_torchscript_state_dict(path), {"torchscript": True}
    _check_records(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CroftError(
            f"cannot read {path} as a weights-only torch checkpoint ({first_line(exc)}); "
            "save it with torch.save(model.state_dict(), path) or as .safetensors"
        ) from None
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                meta = {k: v for k, v in obj.items() if k != key}
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CroftError(f"{path} holds no state dict (found {type(obj).__name__})")
    sd = _strip_prefixes(obj)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CroftError(
            f"{path} is not a plain state dict: {len(bad)} non-tensor entries (e.g. {bad[0]!r}); "
            "wrap the weights as {'state_dict': model.state_dict()}"
        )
    for k, v in sd.items():
        _check_tensor(path, k, v)
    return sd, meta


def _check_records(path: Path) -> None:
    """Refuse a zip checkpoint whose tensor records would unpack beyond the element limit,
    before torch reads any of them."""
    from croft.limits import limit_value

    bound = 8 * limit_value("tensor_elements")  # bytes of the widest dtype
    try:
        with zipfile.ZipFile(path) as zf:
            big = [i for i in zf.infolist() if "/data/" in i.filename and i.file_size > bound]
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: torch.load reports it
    if big:
        _check_tensor_limit(path, big[0].filename, big[0].file_size // 8)


def _check_tensor_limit(path: Path, key: str, numel: int) -> None:
    from croft.limits import check_limit

    check_limit("tensor_elements", numel, f"{path}: tensor {key} element count")


def _check_tensor(path: Path, key: str, t: torch.Tensor) -> None:
    """A tensor loaded by torch may still be a view: refuse a stride-0 or overlapping one
    (materialising it would take far more memory than the file holds) and one above the
    element limit."""
    from croft.backbones.torchscript import check_view

    storage = t.untyped_storage().nbytes() // max(t.element_size(), 1)
    try:
        check_view(tuple(t.shape), tuple(t.stride()), t.storage_offset(), storage, f"tensor {key}")
    except ValueError as exc:
        raise CroftError(f"cannot read {path}: {exc}") from None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no"):
        return False
    return None


def _as_dict(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        try:
            value = parse_json(value, "checkpoint metadata")
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def weights_metadata(
    meta: dict[str, Any], path: Path
) -> tuple[bool | None, str, dict[str, Any] | None]:
    """(quick_gelu the weights were trained with or None, where that was read, preprocess
    config or None) from checkpoint metadata or an ``open_clip_config.json`` beside it."""
    if meta.get("torchscript"):
        return True, OPENAI_QUICK_GELU_WHERE + f" in {path}", None
    qg = _as_bool(meta.get("quick_gelu"))
    model_cfg = _as_dict(meta.get("model_cfg"))
    if qg is None and model_cfg is not None:
        qg = bool(model_cfg.get("quick_gelu", False))
    pp = _as_dict(meta.get("preprocess_cfg"))
    where = f"metadata of {path}"
    if qg is None or pp is None:
        side = read_sidecar(path)
        if qg is None and isinstance(side.get("model_cfg"), dict):
            qg, where = bool(side["model_cfg"].get("quick_gelu", False)), str(path.parent / SIDECAR)
        if pp is None and isinstance(side.get("preprocess_cfg"), dict):
            pp = side["preprocess_cfg"]
    return qg, where, pp


def read_sidecar(path: Path) -> dict[str, Any]:
    """The ``open_clip_config.json`` beside a checkpoint, or ``{}``."""
    sibling = path.parent / SIDECAR
    if not sibling.is_file():
        return {}
    try:
        text = sibling.read_text()
    except (OSError, ValueError):
        return {}
    doc = parse_json(text, str(sibling))
    return doc if isinstance(doc, dict) else {}
