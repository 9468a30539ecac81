"""Prompt learners through a real ``croft.backbones`` backbone (random tiny open_clip ViT)."""

from __future__ import annotations

import pytest
import torch

import croft.methods as M
from baseline_world import World, make_world
from croft.methods import load_head, save_head

backbones = pytest.importorskip("croft.backbones")


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    from safetensors.torch import save_file

    from croft.backbones.openclip import open_clip_module

    torch.manual_seed(0)
    model = open_clip_module().create_model(backbones.TINY_VIT).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return f"openclip:{backbones.TINY_VIT}:{path}"


@pytest.fixture(scope="module")
def world(spec: str) -> World:
    w = make_world(backbones.load_backbone(spec))
    w.train.extra["backbone_spec"] = spec
    return w


@pytest.mark.parametrize("name", ["coop", "cocoop", "dplclip"])
def test_prompt_learner_with_backbone_spec(name: str, spec: str, world: World, tmp_path) -> None:  # noqa: ANN001
    opts = {"epochs": 2, "n_ctx": 4} | ({"mlp_width": 32} if name == "dplclip" else {})
    head = M.fit(name, world.train, world.val, **opts).head  # backbone from extra
    x = world.test.eval_features()
    with torch.no_grad():
        before = head.logits(x)
    assert torch.isfinite(before).all() and before.shape == (len(x), 5)
    loaded = load_head(save_head(head, tmp_path / name))
    assert getattr(loaded, "backbone", spec) == spec
    with torch.no_grad():  # CoCoOp / DPLCLIP load the backbone lazily here
        assert torch.allclose(loaded.logits(x), before, atol=1e-5)
