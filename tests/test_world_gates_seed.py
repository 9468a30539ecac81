"""benchmarks/world_gates.py --world-seed: a world of another seed is never replaced."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "world_gates.py"


def _module():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("world_gates", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_world_of_another_seed_is_refused_in_one_line(tmp_path, capsys) -> None:
    wg = _module()
    world = tmp_path / "w"
    world.mkdir()
    (world / "world.json").write_text(json.dumps({"croft_world": 3, "seed": 0}))
    default = tmp_path / "cache" / "study-v3-seed1"
    assert wg.world_root(None, default, 1) == default  # the seed-specific cached folder
    assert wg.world_root(world, default, 0) == world  # the same seed: reused
    with pytest.raises(SystemExit) as exc:
        wg.world_root(world, default, 1)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds the world of seed 0, not --world-seed 1" in err
    assert json.loads((world / "world.json").read_text())["seed"] == 0  # untouched
