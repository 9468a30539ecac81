"""World v3 (preset "study-v3", docs/world-study.md "World v3"): world v2 with label noise
in the source splits. Checks that the noise is where and what the design says (train/val
only, another ID class drawn, label and shortcut colour kept), that everything else is
v2's image for image, and that v2 itself is unchanged."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from croft.errors import CroftError
from croft.world import generate_world, iter_world, world_preset
from croft.world.captions import describe
from croft.world.config import SHORTCUT_COLOURS, STUDY_WORLD, STUDY_WORLD_V3
from croft.world.generate import split_of

# sha256 of world v2 (preset "study-tiny", seed 2: images, captions, tints, colours) as
# drawn before v3 existed: adding v3 must not move a v2 pixel.
V2_TINY_SHA = "af977fa04e7779c806d7404623561d0bb6c9437a8709589d155b23dc2d33ab0d"
# the same for world v3 (preset "study-v3-tiny", seed 2, with the class each image shows),
# as drawn when the world study's v3 world was generated
V3_TINY_SHA = "a5dcbc4f1482c1ccb347c4cbac63b4b4d2b98350e0852740659e16b47cee3a53"


def test_world_v2_is_unchanged_by_v3() -> None:
    h = hashlib.sha256()
    for it in iter_world(world_preset("study-tiny"), seed=2):
        assert it.shown == ("" if it.kind == "texture" else it.name)
        h.update(it.image.tobytes())
        h.update(it.caption.encode())
        h.update(f"{it.tint}{it.colour}".encode())
    assert h.hexdigest() == V2_TINY_SHA


def images_digest(preset: str, seed: int) -> str:
    """sha256 over a world's images, captions, tints, colours and drawn classes."""
    h = hashlib.sha256()
    for it in iter_world(world_preset(preset), seed=seed):
        h.update(it.image.tobytes())
        h.update(it.caption.encode())
        h.update(f"{it.tint}{it.colour}{it.shown}".encode())
    return h.hexdigest()


def test_world_v3_images_are_pinned() -> None:
    assert images_digest("study-v3-tiny", 2) == V3_TINY_SHA


def test_manifests_record_the_frozen_generator_digests(tmp_path) -> None:
    """The digests are frozen with the golden hashes above: editing the generator's source
    does not regenerate (nor re-extract) an existing v2 or v3 world."""
    assert generate_world(tmp_path / "v2", "study-tiny")["generator"] == "7c17d009cefa5f10"
    assert generate_world(tmp_path / "v3", "study-v3-tiny")["generator"] == "fe2a1a5d61ee8976"


def test_v3_is_v2_with_label_noise_only() -> None:
    assert replace(STUDY_WORLD_V3, version="2", label_noise=0.0) == STUDY_WORLD
    assert STUDY_WORLD_V3.label_noise == 0.15  # the gates' choice (docs/world-study.md)
    assert "label_noise" not in STUDY_WORLD.to_dict()  # v2 manifests as before v3
    assert STUDY_WORLD_V3.to_dict()["label_noise"] == 0.15


def test_label_noise_draws_another_class_in_source_splits_only() -> None:
    cfg = world_preset("study-v3-tiny", label_noise=0.3)
    v2 = {(it.kind, it.name, it.domain, it.index): it for it in iter_world(
        world_preset("study-tiny"), seed=4)}  # fmt: skip
    flipped = trval = label_colour = shown_colour = 0
    for it in iter_world(cfg, seed=4):
        ref = v2[it.kind, it.name, it.domain, it.index]
        source = it.kind == "id" and split_of(cfg, it.index) != "test"
        trval += source
        if it.shown in (it.name, ""):  # not flipped (or a texture): v2's image, bit for bit
            assert (it.image == ref.image).all() and it.caption == ref.caption
            assert (it.tint, it.colour) == (ref.tint, ref.colour)
            continue
        assert source, "label noise outside the train/val splits"
        assert it.shown in cfg.id_classes and it.shown != it.name
        flipped += 1
        assert it.tint == ref.tint  # the tint stream is the image's own
        label_colour += it.colour == SHORTCUT_COLOURS[it.name]
        shown_colour += it.colour == SHORTCUT_COLOURS[it.shown]
        assert it.caption == describe(it.domain, it.shown, it.colour)  # what is drawn
    n = trval  # 7 classes x 5 styles x 10 train/val images
    assert n == 350
    assert 0.3 * n - 4 * (0.3 * 0.7 * n) ** 0.5 < flipped < 0.3 * n + 4 * (0.21 * n) ** 0.5
    # the shortcut colour follows the label (rho = 0.85 + 0.15 / 10), not the drawn class
    assert label_colour > 0.75 * flipped and shown_colour < 0.1 * flipped


def test_v3_world_writes_its_noise_and_keeps_labels(tmp_path) -> None:
    root = tmp_path / "w3"
    man = generate_world(root, preset="study-v3-tiny", seed=1)
    assert man["croft_world"] == "3"
    noise = man["layout"]["label_noise"]
    assert noise == {"rate": 0.15, "splits": ["train", "val"], "shown": "shapes.json"}
    shapes = json.loads((root / "shapes.json").read_text())
    expect = {
        it.relpath: it.shown
        for it in iter_world(world_preset("study-v3-tiny"), seed=1, kinds=("id",))
        if it.shown != it.name
    }
    assert shapes == expect and shapes
    split = json.loads((root / "test_on_photo.json").read_text())
    rows = {r[0]: (r[1], r[2]) for part in ("train", "val") for r in split[part]}
    classes = man["id_classes"]
    for rel in shapes:  # a noisy image keeps its folder's label in the split files
        folder_class = rel.split("/")[2]
        if rel.split("/")[1] != "photo" and rel.split("/")[1] in man["domains"]:
            assert rows[rel[len("images/") :]] == (classes.index(folder_class), folder_class)
    assert not any(r[0] in {s[len("images/") :] for s in shapes} for r in split["test"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"label_noise": 1.0}, "label_noise must be in"),
        ({"label_noise": -0.1}, "label_noise must be in"),
        ({"version": "2"}, "needs a v3 world"),
        ({"shortcut_rate": None}, "needs a v3 world"),
        ({"label_noise": 0.0}, "needs label_noise > 0"),
    ],
)
def test_label_noise_is_validated(overrides, message) -> None:
    with pytest.raises(CroftError, match=message):
        world_preset("study-v3", **overrides)


@pytest.mark.parametrize("preset", ["study", "demo"])
def test_label_noise_needs_v3(preset) -> None:
    with pytest.raises(CroftError, match="needs a v3 world"):
        world_preset(preset, label_noise=0.1)
