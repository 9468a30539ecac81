"""The run key: what a run computes, so a rerun resumes the same work or refuses.

``config`` = the resolved settings that change a run (the protocol config without
``name, methods, seeds, held_out, device, batch_size, workers, cache, progress``; for the
synthetic demo its simulator settings), the protocol, the method name, the method's
full resolved config (seed included), the held-out domain and the seed.
``data`` = one fingerprint per feature set the run reads (train, val, test, bank, each
OOD / shifted / detection set): the feature store's key when the set came from the
store (backbone fingerprint, dataset index hash, view), else a sha256 of the tensors;
plus the subset name and row count.

``run_key = canonical_hash({"config": config_key, "data": data_key})`` where each part is
:func:`croft.fileio.canonical_hash` of its document. ``run_key.json`` in the run folder
holds all three and the config document (to say which setting differs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from croft.errors import CroftError
from croft.fileio import canonical_hash, canonical_json

#: Method options added after run keys existed, at the value that computes exactly what
#: runs did before the option existed: left out of the key at that value, so older run
#: folders stay valid (any other value is keyed as usual).
NEUTRAL_NEW_OPTIONS: dict[str, Any] = {
    "lr_scaling": "none",
    "residual": False,  # ce_adapter (issue 24's attribution control)
    "lambda2_scaling": "none",  # croft (issue 24's attribution control)
    "val_every": 1,  # prompt learners (issue 22's validation option)
    "val_max": 0,  # prompt learners (issue 22's validation option)
}


def config_document(
    settings: Mapping[str, Any],
    method: str,
    options: Mapping[str, Any],
    domain: str,
    seed: int,
) -> dict[str, Any]:
    """The keyed configuration of one run (JSON-ready); options at their
    :data:`NEUTRAL_NEW_OPTIONS` value are left out."""
    import json

    options = {
        k: v
        for k, v in options.items()
        if not (k in NEUTRAL_NEW_OPTIONS and v == NEUTRAL_NEW_OPTIONS[k])
    }
    doc = {"settings": dict(settings), "method": method, "options": dict(options)}
    doc |= {"test_domain": domain, "seed": seed}
    return json.loads(canonical_json(_plain(doc)))


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def fingerprint(fs: Any) -> dict[str, Any]:
    """Identity of one feature set: store key (or tensor sha256), subset name, rows."""
    extra = getattr(fs, "extra", {}) or {}
    store = extra.get("store_key")
    if store is None:
        h = hashlib.sha256()
        for t in (fs.features, fs.labels, fs.domains, fs.text_features):
            if t is not None:
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        store = "sha256:" + h.hexdigest()
    return {"store": store, "subset": extra.get("subset", ""), "rows": len(fs)}


def task_data_key(task: Any) -> str:
    """The data part of the run key of every run on ``task``."""
    return canonical_hash(task_data(task))


def task_data(task: Any) -> dict[str, Any]:
    """The fingerprint of every feature set of ``task`` (hashed into the data key)."""
    sets: dict[str, Any] = {"train": task.train, "test": task.test, "val": task.val}
    sets["bank"] = task.bank
    sets["detection_id"] = task.detection_id
    sets.update({f"ood/{k}": v for k, v in task.ood_sets.items()})
    sets.update({f"shifted/{k}": v for k, v in task.shifted.items()})
    doc = {k: fingerprint(v) for k, v in sets.items() if v is not None}
    doc["shifted_classes"] = {k: list(v) for k, v in task.shifted_classes.items()}
    return doc


def make_key(config: Mapping[str, Any], data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stored key document; ``data`` (:func:`task_data`) None: the config part only."""
    ckey = canonical_hash(config)
    dkey = canonical_hash(data) if data is not None else None
    out = {"config_key": ckey, "data_key": dkey, "config": dict(config), "data": data}
    if dkey is not None:
        out["run_key"] = canonical_hash({"config": ckey, "data": dkey})
    return out


def difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """The first differing setting, e.g. ``another shots (16 there, 4 now)``."""
    a, b = _flat(old.get("config", {})), _flat(new.get("config", {}))
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            name = k.split(".", 1)[1] if k.startswith(("settings.", "options.")) else k
            return f"another {name} ({a.get(k)!r} there, {b.get(k)!r} now)"
    if old.get("config_key") != new.get("config_key"):
        return "other settings"
    olddata, newdata = old.get("data") or {}, new.get("data") or {}
    changed = sorted(k for k in set(olddata) | set(newdata) if olddata.get(k) != newdata.get(k))
    what = f" ({', '.join(changed[:3])})" if changed else ""
    return f"other data (the features it read have changed{what})"


def _flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, Mapping):
        out: dict[str, Any] = {}
        for k, v in doc.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: doc}


def refuse(rdir: Path, out: Path, what: str) -> CroftError:
    """The one line for a run folder that holds other work."""
    return CroftError(
        f"{rdir} holds a run made with {what}; its results would be stale. Pass --fresh to "
        f"discard {out / 'runs'} and start over, or use another --out"
    )
