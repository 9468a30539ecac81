"""Training-view crop scale: ``ViewSpec.crop_scale``, the experiments' ``crop_scale`` key and
``croft extract --crop-scale``. The default (0.08, 1) leaves every store key, run key and
the demo exactly as they were; another scale enters the keys and the crops."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from croft.backbones import TINY_VIT, load_backbone
from croft.cli.main import main
from croft.data import load_image, read_layout
from croft.errors import CroftError
from croft.experiments import load_experiment
from croft.features import ViewSpec, extract_features, load_features, view_seed

pytestmark = pytest.mark.usefixtures("isolated_cache")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "setup2_pacs.yaml"


def test_default_scale_keeps_old_keys() -> None:
    default = ViewSpec.train_views(8, 0)
    assert default.crop_scale == (0.08, 1.0)
    assert default.to_dict() == {"kind": "train", "views": 8, "seed": 0}  # as before
    assert default.tag == "train-v8-s0"
    assert ViewSpec.train_views(8, 0, [0.08, 1]) == default
    assert ViewSpec.eval_view().to_dict() == {"kind": "eval"}
    mild = ViewSpec.train_views(8, 0, (0.7, 1))
    assert mild.to_dict() == {"kind": "train", "views": 8, "seed": 0, "crop_scale": [0.7, 1.0]}
    assert mild.tag == "train-v8-s0-c0.7-1" and mild != default


@pytest.mark.parametrize(
    ("scale", "match"),
    [((0.0, 1.0), "0 < lo <= hi <= 1"), ((0.9, 0.5), "0 < lo <= hi <= 1"),
     ((0.5, 1.2), "0 < lo <= hi <= 1"), ((0.5,), "two numbers"), ("ab", "two numbers")],
)  # fmt: skip
def test_bad_scales_are_one_line_errors(scale, match) -> None:
    with pytest.raises(CroftError, match=match):
        ViewSpec.train_views(2, 0, scale)
    with pytest.raises(CroftError, match="train views only"):
        ViewSpec("eval", crop_scale=(0.7, 1.0))


def test_scale_reaches_the_crops_and_the_store(tiny_ckpts, tmp_path) -> None:
    root = tmp_path / "imgs"
    g = torch.Generator().manual_seed(0)
    for c in ("cat", "dog"):
        (root / "art" / c).mkdir(parents=True)
        for k in range(3):
            arr = (torch.rand((40, 40, 3), generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(root / "art" / c / f"{k}.png")
    index = read_layout(root, "domainbed")
    bb = load_backbone(f"openclip:{TINY_VIT}:{tiny_ckpts[0]}")
    common = {"cache_dir": tmp_path / "cache", "progress": False, "batch_size": 4}
    plain = extract_features(bb, index, view=ViewSpec.train_views(2, 3), **common)
    mild = extract_features(bb, index, view=ViewSpec.train_views(2, 3, (0.7, 1.0)), **common)
    assert plain.extra["view"] == {"kind": "train", "views": 2, "seed": 3}
    assert mild.extra["view"]["crop_scale"] == [0.7, 1.0]
    assert not torch.allclose(plain.features, mild.features)
    dirs = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir())
    assert len(dirs) == 2 and any("-c0.7-1-" in d for d in dirs)
    img = load_image(root / index.records[4].path)
    crop = bb.preprocess.train_transform(scale=(0.7, 1.0))(img, view_seed(3, 4, 1))
    ref = bb.encode_image(crop[None])[0]
    torch.testing.assert_close(mild.features[4, 1], ref, atol=1e-5, rtol=1e-4)
    # the crop covers at least 70 % of the image: (1, 1) keeps it all but flips
    full = bb.preprocess.train_transform(scale=(1.0, 1.0))(img, 7)
    whole = bb.preprocess.eval_transform()(img)
    assert torch.allclose(full, whole, atol=1e-5) or torch.allclose(full, whole.flip(-1), atol=1e-5)

    # croft extract --crop-scale
    out = tmp_path / "f.safetensors"
    argv = ["extract", "--backbone", f"openclip:{TINY_VIT}:{tiny_ckpts[0]}", "--root",
            str(root), "--layout", "domainbed", "--out", str(out), "--cache",
            str(tmp_path / "cache"), "--quiet", "--batch-size", "4"]  # fmt: skip
    assert main([*argv, "--views", "2", "--seed", "3", "--crop-scale", "0.7,1"]) == 0
    assert torch.equal(load_features(out).features, mild.features)


@pytest.mark.parametrize(
    ("args", "match"),
    [(["--views", "2", "--crop-scale", "0,1"], "0 < lo <= hi <= 1"),
     (["--crop-scale", "0.7,1"], "pass --views V as well"),
     (["--views", "2", "--crop-scale", "0.7"], "two numbers")],
)  # fmt: skip
def test_cli_crop_scale_errors(tmp_path, capsys, args, match) -> None:
    argv = ["extract", "--backbone", "openclip:x:y", "--root", str(tmp_path), "--layout",
            "domainbed", "--out", str(tmp_path / "f.safetensors"), *args]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("croft: error: ") and "\n" not in err and match in err, err


def test_experiment_crop_scale_key_enters_the_run_key_only_when_set() -> None:
    plain = load_experiment(CONFIG)
    assert plain.crop_scale is None and "crop_scale" not in plain.run_settings()
    assert plain.train_view() == ViewSpec.train_views(plain.views, plain.view_seed)
    mild = load_experiment(CONFIG, ["crop_scale=[0.7, 1]"])
    assert mild.run_settings()["crop_scale"] == [0.7, 1.0]
    assert mild.train_view().crop_scale == (0.7, 1.0)
    with pytest.raises(CroftError, match=r"0 < lo <= hi <= 1.*crop_scale"):
        load_experiment(CONFIG, ["crop_scale=[1.5, 1]"])
    with pytest.raises(CroftError, match="crop_scale"):
        load_experiment(CONFIG, ["crop_scale=big"])
