"""Size limits on what croft builds from files and configs a user hands it.

Every number read from a file or a config that decides how much memory or time croft spends
(a tensor's element count, a feature dimension, a context length, a grid's size, epochs ×
steps, a JSON document's depth) is checked against a limit stated here *before* anything is
allocated. Each limit has a default that no honest input comes near and an environment
variable that raises it; the error names that variable, so the fix is one line:

    CroftError: head.json: feature_dim 200000 is above the limit 16384
    (set CROFT_MAX_FEATURE_DIM higher if this is genuine)

``croft list limits`` (and the README's "Limits" table) lists them all.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from croft.errors import CroftError


@dataclass(frozen=True)
class Limit:
    """One bound: its name, default value, the variable that overrides it, and its meaning."""

    name: str
    default: int
    env: str
    meaning: str


LIMITS: dict[str, Limit] = {}


def register_limit(name: str, default: int, meaning: str) -> Limit:
    """Declare a limit (``env`` is ``CROFT_MAX_<NAME>``); returns it. Names are unique."""
    if name in LIMITS:
        raise ValueError(f"limit {name!r} is declared twice")
    lim = Limit(name, int(default), f"CROFT_MAX_{name.upper()}", meaning)
    LIMITS[name] = lim
    return lim


def limit_value(name: str) -> int:
    """The limit in force: ``$CROFT_MAX_<NAME>`` when set (a positive integer), else the
    default. A malformed variable is a :class:`CroftError` that names it."""
    lim = LIMITS[name]
    raw = os.environ.get(lim.env, "").strip()
    if not raw:
        return lim.default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise CroftError(f"{lim.env}={raw!r} is not a positive integer; set it to a whole number")
    return value


def check_limit(name: str, value: float, where: str) -> None:
    """Raise a one-line :class:`CroftError` when ``value`` exceeds limit ``name``.

    ``where`` says what was read (``"head.json: feature_dim"``); NaN counts as over.
    """
    bound = limit_value(name)
    if isinstance(value, float) and math.isnan(value) or value > bound:
        lim = LIMITS[name]
        raise CroftError(
            f"{where} {_number(value)} is above the limit {bound} ({lim.meaning}); "
            f"set {lim.env} higher if this is genuine"
        )


def limit_lines() -> list[str]:
    """One line per limit: name, value in force (default when different), variable, meaning."""
    rows = []
    for lim in sorted(LIMITS.values(), key=lambda x: x.name):
        try:
            now = limit_value(lim.name)
        except CroftError:
            now = lim.default
        shown = f"{now}" if now == lim.default else f"{now} (default {lim.default})"
        rows.append(f"{lim.name:<14} {shown:<12} {lim.env:<26} {lim.meaning}")
    return rows


def _number(value: float) -> str:
    """``12345`` for a whole number (however large), else ``%g``."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and value < 1e18:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


register_limit("json_depth", 64, "nesting depth of a JSON or YAML document croft reads")
register_limit(
    "tensor_elements", 1 << 30, "elements of one tensor or storage read from a weight file"
)
register_limit("context_length", 8192, "token context length a tokenizer or text config asks for")
register_limit("image_file_bytes", 1 << 30, "bytes of one image file croft opens or hashes")
register_limit("json_bytes", 256 << 20, "size in bytes of a JSON or YAML document croft reads")
register_limit("json_nodes", 20_000_000, "values (keys included) in one JSON document")
register_limit(
    "yaml_nodes", 1_000_000, "values in one YAML document or override, aliases counted as expanded"
)
register_limit("feature_dim", 16384, "feature dimension of a head or a feature file")
register_limit("classes", 100_000, "classes in a head or a feature file")
register_limit("logit_scale", 10_000, "logit scale of a head or a feature file (CLIP: 100)")
register_limit("head_size", 1 << 20, "any size field in a head's spec (width, n_ctx, cache)")
register_limit("head_elements", 1 << 28, "weights in one head built from head.json")
register_limit("epochs", 100_000, "training epochs of one fit")
register_limit("batch_size", 1 << 16, "training batch size of one fit")
register_limit("train_steps", 10_000_000, "epochs x inner steps per batch (CRoFT: gen_step + 1)")
register_limit("grid_points", 10_000, "runs per task an experiment's method grids expand to")
register_limit("image_size", 8192, "side in pixels a backbone's preprocessing resizes to")
register_limit("folder_depth", 256, "folders nested inside one class folder of a dataset")
