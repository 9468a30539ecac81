"""benchmarks/world_gates_pool.py: G1-G5 per world and G6 on the cluster interval over
worlds (docs/world-study.md, "World v4")."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "world_gates_pool.py"


def _pool():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("world_gates_pool", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.pool


def _world(seed: int, gain: float, fail: str = "") -> dict:
    records = [
        {"style": st, "seed": s, "zeroshot": {"test_acc": 0.6},
         "ce_adapter": {"test_acc": 0.6 + gain + 0.002 * s}}
        for st in ("photo", "pixel") for s in (1, 2, 3)
    ]  # fmt: skip
    gates = {g: {"pass": g != fail} for g in ("G1", "G2", "G3", "G4", "G5")}
    gates["G6"] = {"half_width": 0.01}
    return {"world_seed": seed, "records": records, "gates": gates}


def test_g6_uses_the_interval_over_worlds() -> None:
    pool = _pool()
    close = pool([_world(0, 0.05), _world(1, 0.051), _world(2, 0.049)])
    assert close["G6"]["clusters"] == 3 and close["G6"]["pairs"] == 18
    assert close["G6"]["ce_minus_zeroshot_heldout_acc"] == pytest.approx(5.4, abs=1e-9)
    assert close["G6"]["pass"] and close["G1-G5 pass on every world"]
    spread = pool([_world(0, 0.0), _world(1, 0.05), _world(2, 0.10)])  # worlds disagree
    assert not spread["G6"]["pass"]  # the i.i.d. interval alone would be narrow
    lo, hi = spread["G6"]["iid_interval (not the gate)"]
    assert (hi - lo) / 2 < spread["G6"]["half_width"]
    failed = pool([_world(0, 0.05), _world(1, 0.05, fail="G4")])
    assert not failed["G1-G5 pass on every world"] and not failed["per_world"]["1"]["G4"]
    with pytest.raises(SystemExit, match="one file per world seed"):
        pool([_world(0, 0.05), _world(0, 0.05)])
