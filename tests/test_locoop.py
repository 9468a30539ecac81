"""LoCoOp: the background-entropy term (known values), the top-K rule, equality with CoOp
at lambda_en = 0 (one loop), a head that saves, loads and predicts, and GL-MCM on it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import croft.methods as M
from baseline_world import TinyTextTower, World, make_world
from croft.errors import CroftError
from croft.evaluation import evaluate
from croft.features.files import FeatureSet
from croft.methods import load_head, save_head
from croft.methods.prompts.locoop import background_entropy, resolve_top_k

PROMPT = {"epochs": 3, "n_ctx": 4}
P = 6  # local features per image


@pytest.fixture(scope="module")
def tower() -> TinyTextTower:
    return TinyTextTower()


def _with_local(fs: FeatureSet, seed: int) -> FeatureSet:
    """Local features: two near the image's global feature (the object), the rest noise
    (background), in fp16 as the store keeps them."""
    g = torch.Generator().manual_seed(seed)
    x = fs.features
    shape = (*x.shape[:-1], P, x.shape[-1])
    noise = 3.0 * torch.randn(shape, generator=g)
    noise[..., :2, :] = x[..., None, :] + 0.3 * torch.randn(x[..., None, :].shape, generator=g)
    fs.local_features = noise.half()
    fs.validate()
    return fs


@pytest.fixture(scope="module")
def world(tower: TinyTextTower) -> World:
    w = make_world(tower)
    for i, fs in enumerate((w.train, w.val, w.test, w.ood)):
        _with_local(fs, i)
    return w


def test_background_entropy_known_values():
    def h(v: list[float]) -> float:
        p = torch.tensor(v).softmax(0)
        return float(-(p * p.log()).sum())

    rows = [[9.0, 0.0, 0.0], [0.0, 1.0, 2.0], [0.5, 5.0, 0.0]]  # label 0; no ties
    logits = torch.tensor([rows])
    # top-1: patch 0 names the label (an object region); patches 1 and 2 are background
    got = background_entropy(logits, torch.tensor([0]), 1)
    assert float(got) == pytest.approx((h(rows[1]) + h(rows[2])) / 2, rel=1e-6)
    # top-2: patch 2's {1, 0} holds the label, patch 1's {2, 1} does not
    assert float(background_entropy(logits, torch.tensor([0]), 2)) == pytest.approx(
        h(rows[1]), rel=1e-6
    )
    # every local feature names the label: the term is 0 (and still differentiable)
    z = torch.zeros(2, 2, 3, requires_grad=True)
    zero = background_entropy(z + torch.tensor([5.0, 0, 0]), torch.tensor([0, 0]), 1)
    assert float(zero.detach()) == 0.0 and zero.requires_grad


def test_top_k_rule():
    assert resolve_top_k(0, 1000) == 200 and resolve_top_k(0, 7) == 1 and resolve_top_k(3, 7) == 3
    with pytest.raises(CroftError, match="top_k=5 must be smaller than the number of classes"):
        resolve_top_k(5, 5)


def test_lambda_zero_is_coop(world: World, tower) -> None:  # noqa: ANN001
    coop = M.fit("coop", world.train, world.val, text_tower=tower, **PROMPT)
    loc = M.fit("locoop", world.train, world.val, text_tower=tower, lambda_en=0.0, **PROMPT)
    torch.testing.assert_close(loc.head.text, coop.head.text)
    assert [h["loss"] for h in loc.history] == pytest.approx([h["loss"] for h in coop.history])


def _mean_background_entropy(head, fs: FeatureSet) -> float:  # noqa: ANN001
    with torch.no_grad():
        loc = fs.eval_local()[:, 2:].float().flatten(0, 1)  # the noise local features
        p = head.logits(head.check_features(loc)).softmax(-1)
    return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())


def test_locoop_fits_saves_loads_predicts_and_scores_gl_mcm(world: World, tower, tmp_path):  # noqa: ANN001
    opts = {"epochs": 6, "n_ctx": 4, "lr": 0.01, "warmup_epochs": 0}
    coop = M.fit("coop", world.train, world.val, text_tower=tower, **opts).head
    result = M.fit("locoop", world.train, world.val, text_tower=tower, lambda_en=2.0, **opts)
    head = result.head
    assert head.meta["method"] == "locoop" and head.meta["score"] == "gl_mcm"
    assert head.meta["top_k"] == 1  # 5 classes: a fifth
    acc = float((head.predict(world.test.eval_features()) == world.test.labels).float().mean())
    assert acc > 0.5  # chance 0.2
    # the term does its job: background local features get flatter class distributions
    assert _mean_background_entropy(head, world.test) > _mean_background_entropy(coop, world.test)
    loaded = load_head(save_head(head, tmp_path / "locoop"), expect_dim=world.train.dim)
    assert loaded.meta["method"] == "locoop"
    x = world.test.eval_features()
    assert torch.equal(loaded.predict(x), head.predict(x))
    ev = evaluate(loaded, world.test, {"ood": world.ood}, scores=["gl_mcm", "mcm"])
    assert ev.detection["ood"]["gl_mcm"]["auroc"] > 0.5


def test_locoop_needs_local_features(world: World, tower) -> None:  # noqa: ANN001
    plain = world.train.subset(torch.arange(len(world.train)))
    plain.local_features = None
    with pytest.raises(CroftError, match="croft extract --local-features"):
        M.fit("locoop", plain, None, text_tower=tower, **PROMPT)


@pytest.mark.slow
def test_croft_run_locoop_gl_mcm_near_far_and_full_spectrum(tmp_path, monkeypatch):
    """``croft run`` end to end on image folders: local features cached, LoCoOp fitted,
    GL-MCM scored, tagged OOD sets averaged, full-spectrum columns reported."""
    from PIL import Image

    from croft.backbones import TINY_VIT
    from croft.backbones.openclip import open_clip_module
    from croft.cli.main import main
    from croft.report import collect_runs

    monkeypatch.setenv("CROFT_CACHE_DIR", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(0)
    colours = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fish": (40, 40, 200)}

    def image(path, colour) -> None:  # noqa: ANN001
        arr = (torch.rand(24, 24, 3, generator=g) * 60).to(torch.uint8)
        arr[6:18, 6:18] = torch.tensor(colour, dtype=torch.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.numpy()).save(path)

    for d in ("art", "photo", "sketch"):
        for c, colour in colours.items():
            for k in range(4):
                image(tmp_path / "data" / d / c / f"{k}.png", colour)
    for ood in ("textures", "objects"):
        for k in range(6):
            image(tmp_path / ood / "a" / f"{k}.png", (120, 120, 40))
    torch.manual_seed(0)
    torch.save(open_clip_module().create_model(TINY_VIT).state_dict(), tmp_path / "tiny.pt")
    (tmp_path / "exp.yaml").write_text(
        f"""
name: local_run
backbone: openclip:{TINY_VIT}:tiny.pt
data: {{root: data, layout: domainbed}}
held_out: [photo]
ood:
  - {{name: textures, root: textures, layout: folder, tag: far, options: {{ood: true}}}}
  - {{name: objects, root: objects, layout: folder, tag: near, options: {{ood: true}}}}
shots: 2
views: 2
seeds: [1]
progress: false
local_features: true
scores: [energy, gl_mcm]
methods:
  - {{label: locoop, method: locoop, options: {{epochs: 2, n_ctx: 2, top_k: 1}}}}
"""
    )
    out = tmp_path / "runs"
    assert main(["run", str(tmp_path / "exp.yaml"), "--out", str(out), "--quiet"]) == 0
    (rec,) = collect_runs(out)
    assert rec["ood_tags"] == {"textures": "far", "objects": "near"}
    assert set(rec["detection"]["objects"]) == {"energy", "gl_mcm"}
    assert set(rec["detection_full_spectrum"]) == {"textures", "objects"}
    md = (out / "report" / "detection_gl_mcm.csv").read_text().splitlines()[0]
    assert "near_avg__auroc_mean" in md and "fs_objects__auroc_std" in md
    assert "fs_far_avg__auroc_n" in md
    if importlib.util.find_spec("pandas") is not None:  # near/far and FS columns pivot too
        from report_pivot import assert_results_csv_reproduces_report

        assert assert_results_csv_reproduces_report(out / "report") >= 3
    head = load_head(Path(rec["run_dir"]) / "head")
    assert head.meta["method"] == "locoop" and head.meta["score"] == "gl_mcm"
