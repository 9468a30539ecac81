"""Run-level settings of an experiment document: ``defaults``, ``data_root``, filters.

``defaults: {lr_scaling: logit_scale, epochs: 10}`` sets an option on every method row
whose method has it and whose own ``options`` / ``grid`` do not set it (a key no listed
method has is an error). ``data_root: DIR`` (or the environment's ``CROFT_DATA``, which
replaces a ``data_root`` written in the file; ``--set data_root=...`` wins over both) is
prepended to every relative dataset root (``data``, ``ood.N``, ``shifted.N``), so one
setting points a preset at a data folder. Both are consumed here: the typed config and
its run keys see only the resolved method options and roots.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Sequence
from typing import Any

from croft.errors import CroftError

DATA_ENV = "CROFT_DATA"


def env_data_root(doc: dict[str, Any], overrides: Sequence[str]) -> None:
    """``CROFT_DATA`` replaces the file's ``data_root`` unless ``--set data_root=`` gives one."""
    env = os.environ.get(DATA_ENV)
    if env and "data_root" in doc and not any(o.startswith("data_root=") for o in overrides):
        doc["data_root"] = env


def _option_fields(method: str) -> set[str]:
    import croft.methods  # noqa: F401  (registers every method)
    from croft.methods.base import METHODS

    if method not in METHODS:
        return set()  # an unknown method is reported where the run is built
    return {f.name for f in dataclasses.fields(METHODS.get(method).config_cls)}


def apply_run_defaults(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """``doc`` without ``defaults`` / ``data_root``, their values put where they apply."""
    doc = dict(doc)
    defaults = doc.pop("defaults", None) or {}
    root = doc.pop("data_root", None)
    if not isinstance(defaults, dict):
        raise CroftError(f"{where}: defaults must be a mapping of method options, e.g. "
                         "defaults: {lr_scaling: logit_scale}")  # fmt: skip
    methods = doc.get("methods")
    if defaults and isinstance(methods, list):
        used: set[str] = set()
        rows = []
        for row in methods:
            if not isinstance(row, dict):
                rows.append(row)
                continue
            fields = _option_fields(str(row.get("method", "")))
            opts = dict(row.get("options") or {})
            grid = row.get("grid") or {}
            for key, value in defaults.items():
                if key in fields:
                    used.add(key)
                    if key not in opts and key not in grid:
                        opts[key] = value
            rows.append({**row, "options": opts} if opts else row)
        unused = sorted(set(defaults) - used)
        if unused:
            raise CroftError(
                f"{where}: defaults.{unused[0]} is an option of none of the listed methods; "
                "see croft list methods -v"
            )
        doc["methods"] = rows
    if root is not None:
        if not isinstance(root, str) or not root:
            raise CroftError(f"{where}: data_root must be a folder path, got {root!r}")
        for key in ("data", "ood", "shifted"):
            value = doc.get(key)
            specs = value if isinstance(value, list) else [value]
            for spec in specs:
                if isinstance(spec, dict) and isinstance(spec.get("root"), str):
                    r = spec["root"]
                    if not os.path.isabs(r) and not r.startswith("~"):
                        spec["root"] = os.path.normpath(os.path.join(os.path.expanduser(root), r))
    return doc


def method_option_hint(doc: dict[str, Any], unknown: Sequence[str], known: Sequence[str]) -> str:
    """A fix for unknown top-level keys: ``defaults.KEY`` for a method option, else the
    closest known key (empty when there is none)."""
    hints = []
    for key in unknown:
        rows = doc.get("methods") if isinstance(doc.get("methods"), list) else []
        methods = [str(r.get("method", "")) for r in rows if isinstance(r, dict)]
        if any(key in _option_fields(m) for m in methods):
            hints.append(f"{key} is a method option: set it for every method with "
                         f"defaults.{key} (e.g. --set defaults.{key}=...)")  # fmt: skip
            continue
        close = difflib.get_close_matches(key, list(known), n=1)
        if close:
            hints.append(f"did you mean {close[0]!r} for {key!r}?")
    return "; ".join(hints)


def select(cfg: Any, methods: str | None = None, seeds: str | None = None) -> Any:
    """``cfg`` with only the method rows labelled in ``methods`` (comma-separated, any case)
    and the ``seeds`` given (comma-separated integers); a label it lacks is an error."""
    if methods:
        want = [m.strip() for m in methods.split(",") if m.strip()]
        labels = {m.label.lower(): m for m in cfg.methods}
        missing = [w for w in want if w.lower() not in labels]
        if missing:
            close = difflib.get_close_matches(missing[0], [m.label for m in cfg.methods], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CroftError(
                f"--methods: no method labelled {missing[0]!r}{hint}; labels: "
                + ", ".join(m.label for m in cfg.methods)
            )
        chosen = {w.lower() for w in want}
        cfg.methods = [m for m in cfg.methods if m.label.lower() in chosen]
    if seeds:
        try:
            cfg.seeds = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise CroftError(f"--seeds {seeds!r}: use comma-separated integers, e.g. 1,2") from None
        cfg.check()
    return cfg
