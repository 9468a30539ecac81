"""The built-in world: generator, layouts, tokenizer, shipped tiny CLIP, pretrain command."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from croft.errors import CroftError
from croft.world import (
    TINY_CLIP_ARCH,
    WordTokenizer,
    generate_world,
    iter_world,
    tiny_clip_checkpoint,
    tiny_clip_config,
    world_preset,
)
from croft.world.captions import world_vocabulary
from croft.world.render import STYLES, render_object, render_texture
from croft.world.shapes import OBJECT_CLASSES

TINY = world_preset("tiny")


def _images(seed: int) -> list[np.ndarray]:
    small = replace(TINY, per_class=1, domains=TINY.domains[:2])
    return [it.image for it in iter_world(small, seed)]


def test_import_is_light() -> None:
    code = "import sys, croft.world; print('open_clip' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_generation_is_deterministic_per_seed() -> None:
    a, b, c = _images(0), _images(0), _images(1)
    assert len(a) == len(b) == len(c) > 0
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert sum(not np.array_equal(x, y) for x, y in zip(a, c, strict=True)) > 0.9 * len(a)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_class_renders_in_every_style(style: str) -> None:
    for k, name in enumerate(OBJECT_CLASSES):
        img, colour = render_object(name, style, np.random.default_rng([k, 5]), 32)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        # the object is visible: the image is not flat, and differs from its border colour
        assert img.std() > 8, (name, style)
        assert colour


def test_textures_render() -> None:
    for k in TINY.textures:
        img = render_texture(k, np.random.default_rng(0), 32)
        assert img.shape == (32, 32, 3) and img.std() > 5


def test_world_has_enough_classes_and_styles() -> None:
    assert len(OBJECT_CLASSES) >= 20 and len(STYLES) >= 5
    demo = world_preset("demo")
    assert len(demo.id_classes) == 7 and len(demo.domains) == 4


def test_captions_name_the_class() -> None:
    for it in iter_world(TINY, 0):
        if it.kind == "texture":
            assert it.name in it.caption
        else:
            assert it.caption.split()[-1] == it.name
            assert set(WordTokenizer.words(it.caption)) <= set(world_vocabulary())


def test_written_layouts_are_consistent(tmp_path: Path) -> None:
    root = tmp_path / "w"
    man = generate_world(root, "tiny", seed=3)
    assert man["counts"]["id"] == len(TINY.domains) * len(TINY.id_classes) * TINY.per_class
    classes = man["id_classes"]
    for d in TINY.domains:
        for c in classes:
            assert len(list((root / "images" / d / c).glob("*.png"))) == TINY.per_class
        split = json.loads((root / f"test_on_{d}.json").read_text())
        assert set(split) == {"train", "val", "test"}
        for part, rows in split.items():
            assert rows
            for rel, label, cname in rows:
                assert (root / "images" / rel).is_file()
                assert classes[label] == cname and rel.split("/")[1] == cname
                assert (rel.split("/")[0] == d) == (part == "test")
        n_src = (len(TINY.domains) - 1) * len(classes) * TINY.per_class
        assert len(split["train"]) + len(split["val"]) == n_src
        assert len(split["test"]) == len(classes) * TINY.per_class
    assert len(list((root / "ood_classes").rglob("*.png"))) == man["counts"]["ood_class"] > 0
    assert len(list((root / "ood_textures").rglob("*.png"))) == man["counts"]["texture"] > 0
    caps = json.loads((root / "captions.json").read_text())
    assert all((root / p).is_file() for p in caps)
    from PIL import Image

    with Image.open(next((root / "images").rglob("*.png"))) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    # same seed: reused; another generated world: replaced; anything else: refused
    stamp = (root / "world.json").stat().st_mtime_ns
    assert generate_world(root, "tiny", seed=3) == man
    assert (root / "world.json").stat().st_mtime_ns == stamp
    generate_world(root, "tiny", seed=4)
    assert json.loads((root / "world.json").read_text())["seed"] == 4
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(CroftError, match="--overwrite"):
        generate_world(other, "tiny", seed=3)
    generate_world(other, "tiny", seed=3, overwrite=True)
    assert not (other / "notes.txt").exists()


def test_tokenizer_round_trip_and_unknown_words() -> None:
    tok = WordTokenizer(world_vocabulary(), context_length=12)
    ids = tok(["A photo of a red Cup.", "a zebra of a florp"])
    assert ids.shape == (2, 12) and ids.dtype == torch.long
    assert tok.decode(ids[0].tolist()) == "a photo of a red cup"
    assert tok.decode(ids[1].tolist()) == "a <unk> of a <unk>"
    assert (ids[1] == tok.unk_id).sum() == 2
    # <eot> holds the highest id, so open_clip's argmax pooling finds it
    assert int(ids[0].argmax()) == 7 and tok.eot_id == tok.vocab_size - 1
    long = tok([" ".join(["cup"] * 30)])[0]
    assert long[-1] == tok.eot_id and long[0] == tok.sot_id
    again = WordTokenizer(tok.vocab, 12)
    assert again.vocab == tok.vocab


def _load_shipped():
    import open_clip
    from safetensors.torch import load_file

    from croft.world import register_tiny_clip

    path = tiny_clip_checkpoint()
    cfg = json.loads((path.parent / "open_clip_config.json").read_text())
    assert register_tiny_clip() == TINY_CLIP_ARCH and TINY_CLIP_ARCH in open_clip.list_models()
    model = open_clip.create_model(TINY_CLIP_ARCH, pretrained=str(path)).eval()
    state = load_file(str(path))
    assert torch.equal(model.state_dict()["logit_scale"], state["logit_scale"])
    tok = WordTokenizer.from_json(path.parent / "open_clip_config.json")
    return model, tok, cfg


def test_shipped_checkpoint_loads_and_classifies() -> None:
    path = tiny_clip_checkpoint()
    assert path.stat().st_size <= 10.5e6
    model, tok, cfg = _load_shipped()
    assert cfg["architecture"] == TINY_CLIP_ARCH and tiny_clip_config() == cfg["model_cfg"]
    assert abs(model.logit_scale.exp().item() - cfg["logit_scale"]) < 1e-4
    pre = cfg["preprocess_cfg"]
    demo = world_preset("demo")
    seen = [s for s in demo.domains if s in cfg["training"]["config"]["styles"]]
    cfg_small = replace(demo, domains=tuple(seen), per_class=4)
    items = list(iter_world(cfg_small, seed=123, kinds=("id",)))
    x = torch.stack([torch.from_numpy(it.image).permute(2, 0, 1).float() / 255 for it in items])
    x = (x - torch.tensor(pre["mean"]).view(1, 3, 1, 1)) / torch.tensor(pre["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        f = model.encode_image(x)
        t = model.encode_text(tok([f"a photo of a {c}." for c in demo.id_classes]))
    assert f.shape == (len(items), cfg["model_cfg"]["embed_dim"]) and torch.isfinite(f).all()
    pred = (f / f.norm(dim=-1, keepdim=True) @ (t / t.norm(dim=-1, keepdim=True)).T).argmax(1)
    labels = torch.tensor([demo.id_classes.index(it.name) for it in items])
    acc = float((pred == labels).float().mean())
    assert acc > 0.5, acc  # chance is 1/7


def test_shipped_checkpoint_loads_as_open_clip_local_dir() -> None:
    import open_clip

    model = open_clip.create_model("local-dir:" + str(tiny_clip_checkpoint().parent))
    assert model.visual.image_size == (32, 32) or model.visual.image_size == 32


def test_pretrain_cli_writes_loadable_checkpoint(tmp_path: Path) -> None:
    from croft.cli.main import main
    from croft.world import load_tiny_clip

    out = tmp_path / "ckpt"
    rc = main(
        [
            "world",
            "pretrain",
            "--out",
            str(out),
            "--steps",
            "3",
            "--pool-size",
            "64",
            "--batch-size",
            "32",
            "--minutes",
            "2",
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    model, tok, cfg = load_tiny_clip(out)
    assert cfg["training"]["steps_done"] == 3 and not list(out.glob(".*tmp"))
    with torch.no_grad():
        f = model.encode_image(torch.zeros(2, 3, 32, 32))
        t = model.encode_text(tok(["a photo of a cup", "a mug"]))
    assert f.shape == t.shape == (2, cfg["model_cfg"]["embed_dim"])
    # weights and config from different runs are refused
    doc = json.loads((out / "open_clip_config.json").read_text())
    doc["weights_sha256"] = "0" * 64
    (out / "open_clip_config.json").write_text(json.dumps(doc))
    with pytest.raises(CroftError, match="sha256"):
        load_tiny_clip(out)
    # loading the shipped checkpoint afterwards still gets its own architecture
    load_tiny_clip()


@pytest.mark.slow
def test_pretrain_minutes_budget(tmp_path: Path) -> None:
    from croft.cli.main import main

    out = tmp_path / "ckpt"
    rc = main(
        [
            "world",
            "pretrain",
            "--out",
            str(out),
            "--minutes",
            "0.05",
            "--pool-size",
            "64",
            "--batch-size",
            "32",
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    cfg = json.loads((out / "open_clip_config.json").read_text())
    assert cfg["training"]["stopped_by"] == "minutes" and cfg["training"]["wall_s"] < 30


def test_pretrain_rejects_bad_budget(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from croft.cli.main import main

    assert main(["world", "pretrain", "--out", str(tmp_path), "--minutes", "0"]) == 2
    assert "croft: error:" in capsys.readouterr().err


def test_generate_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from croft.cli.main import main

    assert main(["world", "generate", str(tmp_path / "w"), "--preset", "tiny", "--seed", "1"]) == 0
    assert (tmp_path / "w" / "test_on_sketch.json").is_file()
    assert "wrote the world" in capsys.readouterr().out
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.txt").write_text("a")
    assert main(["world", "generate", str(tmp_path / "x"), "--preset", "tiny"]) == 2
    assert "--overwrite" in capsys.readouterr().err
