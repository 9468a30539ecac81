"""World v4 (preset "study-v4", docs/world-study.md "World v4"): world v3 with the shortcut
rate differing between source styles (Coloured MNIST's environments). Checks that only
the train/val shortcut draws differ from v3, per style as designed, and that v3 (its
images and its frozen digest) is untouched."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from croft.errors import CroftError
from croft.world import generate_world, iter_world, world_preset
from croft.world.config import SHORTCUT_COLOURS, STUDY_WORLD_V3, STUDY_WORLD_V4
from croft.world.generate import _colour, split_of

# sha256 of world v4 (preset "study-v4-tiny", seed 2; as tests/test_world_v3.py pins v3)
V4_TINY_SHA = "05aa0a695e67ec71916f4b31c447e9225a561037025f8590247c3eb153f83675"
RATES = {"photo": 0.95, "painting": 0.90, "cartoon": 0.80, "pixel": 0.75}


def test_v4_is_v3_with_a_shortcut_rate_per_source_style_only() -> None:
    assert replace(STUDY_WORLD_V4, version="3", shortcut_rate_by_style=()) == STUDY_WORLD_V3
    assert dict(STUDY_WORLD_V4.shortcut_rate_by_style) == RATES
    assert STUDY_WORLD_V4.shortcut_rate_of("sketch") == 0.85  # never a source: v3's rate
    assert STUDY_WORLD_V4.label_noise == STUDY_WORLD_V3.label_noise == 0.15
    assert "shortcut_rate_by_style" not in STUDY_WORLD_V3.to_dict()  # v3 manifests as before
    assert STUDY_WORLD_V4.to_dict()["shortcut_rate_by_style"]


def test_world_v4_images_are_pinned() -> None:
    from test_world_v3 import images_digest

    assert images_digest("study-v4-tiny", 2) == V4_TINY_SHA


def test_only_source_colours_differ_from_v3() -> None:
    v3 = {(it.kind, it.name, it.domain, it.index): it
          for it in iter_world(world_preset("study-v3-tiny"), seed=3)}  # fmt: skip
    cfg = world_preset("study-v4-tiny")
    moved = 0
    for it in iter_world(cfg, seed=3):
        ref = v3[it.kind, it.name, it.domain, it.index]
        assert it.shown == ref.shown and it.tint == ref.tint  # noise and tint: v3's draws
        if it.kind != "id" or split_of(cfg, it.index) == "test":
            assert (it.image == ref.image).all(), "a test or open-set image moved"
            continue
        moved += not (it.image == ref.image).all()
    assert moved > 0


def test_the_shortcut_rate_differs_between_source_styles_as_designed() -> None:
    """The forced-colour draw reuses v3's stream with a per-style threshold: at a higher
    rate every v3-forced image stays forced, at a lower one every v4-forced image was
    v3-forced; the rates are met within sampling error (2,800 draws per style)."""
    v3, v4 = world_preset("study-v3"), world_preset("study-v4")
    for di, style in enumerate(v4.domains):
        draws = [(ci, k) for ci in range(7) for k in range(v4.per_class)]
        seeds = range(8)
        f3 = np.array([_colour(v3, s, 1, di, ci, k) is not None for s in seeds for ci, k in draws])
        f4 = np.array([_colour(v4, s, 1, di, ci, k) is not None for s in seeds for ci, k in draws])
        if RATES[style] >= 0.85:
            assert f4[f3].all()
        else:
            assert f3[f4].all()
        assert abs(f4.mean() - RATES[style]) < 0.03, (style, f4.mean())
        colours = {_colour(v4, 0, 1, di, ci, 0) for ci in range(7)} - {None}
        assert colours <= set(SHORTCUT_COLOURS.values())


def test_v4_manifest_names_the_rates_and_v3_digest_is_untouched(tmp_path) -> None:
    man = generate_world(tmp_path / "v4", "study-v4-tiny")
    assert man["croft_world"] == "4" and man["generator"] == "e283dc3d5439ba20"
    assert man["layout"]["shortcut"]["rate_by_style"] == RATES
    v3 = generate_world(tmp_path / "v3", "study-v3-tiny")
    assert v3["generator"] == "fe2a1a5d61ee8976" and "rate_by_style" not in v3["layout"]["shortcut"]


def test_rates_by_style_are_checked() -> None:
    with pytest.raises(CroftError, match="needs a v4 world"):
        world_preset("study-v3", shortcut_rate_by_style=(("photo", 0.9),))
    with pytest.raises(CroftError, match="v4 world needs it"):
        world_preset("study-v4", shortcut_rate_by_style=())
    with pytest.raises(CroftError, match="each style of the world once"):
        world_preset("study-v4", shortcut_rate_by_style=(("neon", 0.9),))
    with pytest.raises(CroftError, match="must be in"):
        world_preset("study-v4", shortcut_rate_by_style=(("photo", 1.5),))


def test_v4_study_config_is_v3_plus_the_controls_on_five_worlds(tmp_path, capsys) -> None:
    """configs/world_study_v4.yaml: every v3 row as it is, the four attribution controls,
    5 world seeds (one generated world each), fit seed 1 (cut for compute, logged), the
    primary named; checked on tiny v4 worlds."""
    from pathlib import Path

    from croft.cli.main import main
    from croft.experiments import load_experiment
    from croft.world import tiny_clip_checkpoint

    configs = Path(__file__).resolve().parents[1] / "configs"
    weights = "../src/croft/assets/world_v2/open_clip_model.safetensors"

    def load(name: str, world: str, out: str) -> tuple[Path, object]:
        text = (configs / name).read_text().replace(world, out)
        path = tmp_path / name
        path.write_text(text.replace(weights, str(tiny_clip_checkpoint("study"))))
        return path, load_experiment(path)

    for k in range(5):
        generate_world(tmp_path / "v4" / f"seed{k}", "study-v4-tiny", seed=k)
    generate_world(tmp_path / "v3", "study-v3-tiny", seed=0)
    v4_path, v4 = load("world_study_v4.yaml", "../world_study_v4", str(tmp_path / "v4"))
    _, v3 = load("world_study_v3.yaml", "../world_study_v3", str(tmp_path / "v3"))
    assert v4.world_seeds == [0, 1, 2, 3, 4] and v4.seeds == [1]
    assert v4.primary == {"a": "croft", "b": "ce_adapter", "metric": "accuracy"}
    rows3, rows4 = {m.label: m for m in v3.methods}, {m.label: m for m in v4.methods}
    controls = {"ce_adapter_residual", "croft_paper_no_wcf", "croft_paper_worst_case",
                "croft_paper_l2_rescaled"}  # fmt: skip
    assert set(rows4) == set(rows3) | controls
    assert all(rows4[k] == rows3[k] for k in rows3)
    assert rows4["ce_adapter_residual"].options["residual"] is True
    assert rows4["ce_adapter_residual"].grid == rows3["ce_adapter"].grid  # the same lr grid
    no_wcf = rows4["croft_paper_no_wcf"]
    assert no_wcf.options["wccf"] is False and "lambda1" not in no_wcf.grid
    forced = rows4["croft_paper_worst_case"].grid
    assert forced["lambda1"] and 0.0 not in forced["lambda1"]
    rescaled = rows4["croft_paper_l2_rescaled"]
    assert rescaled.options["lambda2_scaling"] == "temperature"
    assert rescaled.grid == rows3["croft_paper"].grid
    assert sum(m.points() for m in v4.methods) == 362
    assert main(["run", str(v4_path), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "world_study_v4: OK" in printed and "world seed 4:" in printed
