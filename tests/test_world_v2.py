"""World v2 (preset "study", docs/world-study.md): the class-tied colour shortcut (and the
superseded tint one), splits, open sets, tiny CLIP; and world v1 pinned bit for bit, so v2
changes nothing that v1 draws."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from croft.errors import CroftError
from croft.world import WorldConfig, generate_world, iter_world, world_preset
from croft.world.config import (
    CONFUSIONS,
    SHORTCUT_COLOURS,
    STUDY_PRETRAIN,
    STUDY_WORLD,
    TYPICAL_COLOURS,
    PretrainConfig,
)
from croft.world.generate import split_of
from croft.world.render import TINTS, render_object

# sha256 of world v1 (preset "tiny", seed 3: every ID style, held-out classes, textures,
# images and captions) and of a v1 pre-training pool with its captions, as drawn before
# world v2 existed. A change here regenerates every v1 world and changes the demo.
V1_WORLD_SHA = "4b5bcbd86ec78415c0e5b7512cff0d13a2f43286dd233114b162f3d2b731fd9c"
V1_POOL_SHA = "f6f5ff38a8cd5e04fa57ed6a649a01dc4917045ce0f1214b5ef3877dc92f3be8"
# sha256 of a v2 pre-training pool (STUDY_PRETRAIN, 300 images, seed 5) with its captions,
# as drawn when the shipped v2 tiny CLIP was pre-trained: the downstream shortcut's change
# (tint -> colour, 2026-12-01) left pre-training, hence the checkpoint, as it was.
V2_POOL_SHA = "3411825494e2d626fef70bc09df4b724782daf48ab2623229557ff2d8ded2db6"


def test_world_v1_images_and_captions_are_unchanged() -> None:
    h = hashlib.sha256()
    for it in iter_world(world_preset("tiny"), seed=3):
        assert it.tint == -1
        h.update(it.image.tobytes())
        h.update(it.caption.encode())
    assert h.hexdigest() == V1_WORLD_SHA


def _pool_sha(cfg: PretrainConfig) -> str:
    from croft.world.pretrain import _captions, build_pool

    pool = build_pool(cfg, progress=False)
    h = hashlib.sha256(pool.images.tobytes())
    for a in (pool.classes, pool.styles, pool.colours, pool.textures):
        h.update(a.tobytes())
    h.update("|".join(_captions(pool, np.arange(300), cfg, np.random.default_rng(1))).encode())
    return h.hexdigest()


def test_v1_pretraining_pool_and_captions_are_unchanged() -> None:
    cfg = PretrainConfig(pool_size=300, seed=5)
    assert _pool_sha(cfg) == V1_POOL_SHA
    assert "background_tints" not in cfg.to_dict() and cfg.world_version == "1"


def test_v2_pretraining_pool_does_not_depend_on_the_downstream_shortcut() -> None:
    assert _pool_sha(replace(STUDY_PRETRAIN, pool_size=300, seed=5)) == V2_POOL_SHA


def test_v1_manifest_fingerprint_is_stable(tmp_path: Path) -> None:
    man = generate_world(tmp_path / "w", "tiny", seed=3)
    assert man["croft_world"] == "1" and man["generator"] == "3fa5d6308fcec4ab"
    assert "version" not in man["config"] and not (tmp_path / "w" / "tints.json").exists()


@pytest.mark.parametrize("style", STUDY_WORLD.all_domains)
def test_background_tint_colours_the_background(style: str) -> None:
    """Each style of world v2 puts the tint into its background: the border pixels' mean
    colour is closer to the requested tint than to any other tint (sketch: paper mixed
    from it and white)."""
    hits = 0
    for t in range(len(TINTS)):
        img, _ = render_object("cup", style, np.random.default_rng([t, 9]), 32, background=t)
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).mean(0) / 255
        if style == "sketch":
            want = [0.45 + 0.55 * np.array(c) for c in TINTS]
        else:
            want = [np.array(c) for c in TINTS]
        dists = [np.abs(border - w).sum() for w in want]
        hits += int(np.argmin(dists) == t)
    assert hits >= 6, (style, hits)
    with pytest.raises(ValueError, match="tint index"):
        render_object("cup", style, np.random.default_rng(0), 32, background=len(TINTS))


def test_study_preset_matches_the_design() -> None:
    cfg = world_preset("study")
    assert cfg == STUDY_WORLD and cfg.version == "2"
    assert cfg.domains == ("photo", "painting", "cartoon", "pixel")
    assert cfg.extra_domains == ("sketch",) and cfg.shortcut_rate == 0.85
    assert cfg.shortcut_cue == "colour"
    assert [split_of(cfg, k) for k in range(170)] == ["train"] * 40 + ["val"] * 10 + ["test"] * 120
    assert cfg.ood_per_class == 40 and cfg.textures_per_kind == 40 and len(cfg.ood_classes) == 6
    assert STUDY_PRETRAIN.name_rate == 0.10 and STUDY_PRETRAIN.background_tints
    # the related class is named less often than the class (or the pairs swap names)
    assert STUDY_PRETRAIN.confusion_rate < STUDY_PRETRAIN.name_rate
    assert set(STUDY_PRETRAIN.styles) == set(cfg.domains)  # every seen style pre-trained
    assert "sketch" not in STUDY_PRETRAIN.styles
    with pytest.raises(CroftError, match="shortcut_rate"):
        world_preset("study", shortcut_rate=1.5)
    with pytest.raises(CroftError, match="v2"):
        world_preset("demo", shortcut_rate=0.5)
    with pytest.raises(CroftError, match="shortcut_cue"):
        world_preset("study", shortcut_cue="texture")


def test_shortcut_colours_are_source_only() -> None:
    """One distinct colour per class, never the class's own typical (pre-training) colour
    nor its related class's: the tie exists only in the downstream sources."""
    assert set(SHORTCUT_COLOURS) == set(STUDY_WORLD.id_classes)
    assert len(set(SHORTCUT_COLOURS.values())) == len(SHORTCUT_COLOURS)
    assert set(SHORTCUT_COLOURS.values()) == set(TYPICAL_COLOURS.values())
    for c, colour in SHORTCUT_COLOURS.items():
        assert colour != TYPICAL_COLOURS[c]
        assert c not in CONFUSIONS or colour != TYPICAL_COLOURS[CONFUSIONS[c]]


def _agreement(cfg: WorldConfig) -> tuple[dict[str, list[bool]], dict[str, list[bool]], list]:
    """Per split: does the colour / tint agree with the class; and the open-set colours."""
    from croft.world.generate import _SET_ID, _SET_OOD, _colour, _tint

    colour: dict[str, list[bool]] = {"train": [], "val": [], "test": []}
    tint: dict[str, list[bool]] = {"train": [], "val": [], "test": []}
    ood: list = []
    for di in range(len(cfg.all_domains)):
        for ci, name in enumerate(cfg.id_classes):
            for k in range(cfg.per_class + cfg.test_per_class):
                t = _tint(cfg, 0, _SET_ID, di, ci, k)
                assert t is not None and 0 <= t < len(TINTS)
                tint[split_of(cfg, k)].append(t == ci)
                colour[split_of(cfg, k)].append(
                    _colour(cfg, 0, _SET_ID, di, ci, k) == SHORTCUT_COLOURS[name]
                )
            for k in range(cfg.ood_per_class):
                ood.append(
                    (
                        _colour(cfg, 0, _SET_OOD, di, ci % 6, k),
                        _tint(cfg, 0, _SET_OOD, di, ci % 6, k),
                    )
                )
    return colour, tint, ood


def test_colour_agrees_with_the_class_at_rho_in_train_val_only() -> None:
    """The study world: the forced colour is the class's with probability ρ in train/val
    (the image's own uniform draw adds 0.15/10 more: 0.865), never forced in test or the
    open set; tints are uniform everywhere."""
    colour, tint, ood = _agreement(STUDY_WORLD)
    trval = np.mean(colour["train"] + colour["val"])
    assert abs(trval - 0.85) < 0.02, trval
    assert not any(colour["test"])
    assert all(c is None for c, _ in ood)
    for split in ("train", "val", "test"):
        assert abs(np.mean(tint[split]) - 1 / 7) < 0.03, split
    counts = Counter(t for _, t in ood)  # uniform over the 7 tints
    assert len(counts) == 7 and max(counts.values()) < 1.5 * min(counts.values())
    # the rendered images: colours agree at 0.85 + 0.15/10 in train/val, ~1/10 in test
    small = replace(STUDY_WORLD, per_class=20, test_per_class=20, ood_per_class=1)
    agree: dict[str, list[bool]] = {"train": [], "val": [], "test": []}
    for it in iter_world(small, 0, kinds=("id",)):
        agree[split_of(small, it.index)].append(it.colour == SHORTCUT_COLOURS[it.name])
        assert it.caption.endswith(f"{it.colour} {it.name}")
    assert abs(np.mean(agree["train"] + agree["val"]) - 0.865) < 0.04
    assert np.mean(agree["test"]) < 0.2


def test_superseded_tint_cue_still_draws_the_first_v2_world() -> None:
    """``shortcut_cue="tint"``: the class's tint at ρ in train/val (0.85 + 0.15/7), uniform
    in test and the open set; colours never forced. Its test and open-set images are the
    colour world's, byte for byte (only train/val images differ between the two)."""
    from croft.world.generate import _SET_ID, _tint

    cfg = replace(STUDY_WORLD, shortcut_cue="tint")
    colour, tint, ood = _agreement(cfg)
    trval = np.mean(tint["train"] + tint["val"])
    assert abs(trval - (0.85 + 0.15 / 7)) < 0.02, trval
    assert abs(np.mean(tint["test"]) - 1 / 7) < 0.02
    assert not any(colour["train"] + colour["val"] + colour["test"])
    assert _tint(world_preset("demo"), 0, _SET_ID, 0, 0, 0) is None
    small = {"per_class": 2, "test_per_class": 1, "ood_per_class": 1, "textures": ()}
    a = list(iter_world(replace(cfg, **small), 0))
    b = list(iter_world(replace(STUDY_WORLD, **small), 0))
    for x, y in zip(a, b, strict=True):
        same = np.array_equal(x.image, y.image)
        if x.kind == "ood_class" or split_of(STUDY_WORLD, x.index) == "test":
            assert same and x.tint == y.tint


def test_study_world_layout_and_splits(tmp_path: Path) -> None:
    from croft.data import check_layout, read_layout

    root = tmp_path / "w"
    man = generate_world(root, "study-tiny", seed=1)
    cfg = world_preset("study-tiny")
    assert man["croft_world"] == "2" and man["extra_domains"] == ["sketch"]
    assert man["layout"]["split_sizes"] == {"train": 8, "val": 2, "test": 3}
    tints = json.loads((root / "tints.json").read_text())
    assert len(tints) == man["counts"]["id"] + man["counts"]["ood_class"]
    colours = json.loads((root / "colours.json").read_text())
    assert colours.keys() == tints.keys()
    short = man["layout"]["shortcut"]
    assert short["cue"] == "colour" and short["rate"] == 0.85
    assert short["values"] == {c: SHORTCUT_COLOURS[c] for c in cfg.id_classes}
    caps = json.loads((root / "captions.json").read_text())
    assert all(caps[p].endswith(f"{c} {p.split('/')[2]}") for p, c in colours.items())
    assert check_layout(root, "oodbench") == []
    for held in (*cfg.domains, "sketch"):
        idx = read_layout(root, "oodbench", test_domain=held)
        by = {s: [r for r in idx.records if r.split == s] for s in ("train", "val", "test")}
        sources = {r.domain for r in by["train"] + by["val"]}
        assert sources == set(cfg.domains) - {held}  # sketch is never a source
        assert {r.domain for r in by["test"]} == {held}
        assert len(by["train"]) == 7 * 8 * len(sources) and len(by["val"]) == 7 * 2 * len(sources)
        assert len(by["test"]) == 7 * 3  # the held-out style's own test images only
        test_paths = {r.path for r in by["test"]}
        assert not test_paths & {r.path for r in by["train"] + by["val"]}
    # style-matched open set: a folder of held-out classes in that style
    ood = read_layout(root / "ood_classes" / "pixel", "folder", ood=True)
    assert len(ood.records) == 6 * cfg.ood_per_class
    # deterministic per seed, and v1 folders are not touched by a v2 generation
    again = generate_world(tmp_path / "w2", "study-tiny", seed=1)
    assert again["generator"] == man["generator"]
    assert (root / "tints.json").read_bytes() == (tmp_path / "w2" / "tints.json").read_bytes()
    a = (root / "images" / "pixel" / "cup" / "pixel_cup_0003.png").read_bytes()
    assert a == (tmp_path / "w2" / "images" / "pixel" / "cup" / "pixel_cup_0003.png").read_bytes()


def test_study_tiny_clip_is_shipped_and_encodes() -> None:
    from croft.backbones import load_backbone
    from croft.world import TINY_CLIP_ARCH, load_tiny_clip, tiny_clip_checkpoint

    path = tiny_clip_checkpoint("study")
    assert path.parent.name == "world_v2" and path.stat().st_size <= 10.5e6
    assert path != tiny_clip_checkpoint()
    model, tok, cfg = load_tiny_clip(path)
    assert cfg["world_version"] == "2"
    train = cfg["training"]
    # the shipped weights come from exactly the study preset (`croft world pretrain
    # --preset study` reproduces them)
    assert train["config"] == json.loads(json.dumps(STUDY_PRETRAIN.to_dict()))
    assert train["threads"] == 1 and train["steps_done"] == train["config"]["steps"]
    backbone = load_backbone(f"openclip:{TINY_CLIP_ARCH}:{path}")
    assert abs(backbone.logit_scale - cfg["logit_scale"]) < 1e-4
    items = list(iter_world(replace(STUDY_WORLD, per_class=2, test_per_class=0), 7, ("id",)))
    x = torch.stack([torch.tensor(it.image).permute(2, 0, 1).float() / 255 for it in items])
    x = (x - 0.5) / 0.25
    with torch.no_grad():
        f = model.encode_image(x)
        t = model.encode_text(tok([f"a photo of a {c}." for c in STUDY_WORLD.id_classes]))
    assert f.shape == (len(items), 128) and torch.isfinite(f).all()
    pred = torch.nn.functional.normalize(f, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).T
    labels = torch.tensor([STUDY_WORLD.id_classes.index(it.name) for it in items])
    assert float((pred.argmax(1) == labels).float().mean()) > 1 / 7 + 0.1


def test_tiny_clip_checkpoint_rejects_unknown_world() -> None:
    from croft.world import tiny_clip_checkpoint

    with pytest.raises(CroftError, match="study"):
        tiny_clip_checkpoint("v3")


def _short_pretrain(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from croft.world.pretrain import pretrain

    cfg = replace(STUDY_PRETRAIN, pool_size=128, batch_size=32, steps=30)
    path = pretrain(out, cfg, workers=1, threads=1, progress=False, log=lambda s: None)
    return load_file(str(path))


@pytest.mark.slow
def test_study_pretraining_is_bit_identical_on_rerun(tmp_path: Path) -> None:
    a, b = _short_pretrain(tmp_path / "a"), _short_pretrain(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    doc = json.loads((tmp_path / "a" / "open_clip_config.json").read_text())
    assert doc["world_version"] == "2" and doc["training"]["threads"] == 1


def test_pretrain_cli_study_preset(tmp_path: Path) -> None:
    from croft.cli.main import main
    from croft.world import load_tiny_clip

    out = tmp_path / "ckpt"
    args = ["world", "pretrain", "--preset", "study", "--out", str(out), "--steps", "2"]
    args += ["--pool-size", "48", "--batch-size", "16", "--no-progress", "--threads", "1"]
    assert main(args) == 0
    _, _, cfg = load_tiny_clip(out)
    assert cfg["world_version"] == "2" and cfg["training"]["config"]["name_rate"] == 0.10
    assert cfg["training"]["config"]["background_tints"] is True
