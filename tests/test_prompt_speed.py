"""The prompt learners' shared-prefix, unpadded text path equals the full-length one.

``croft.backbones.text_prefix`` runs ``[SOS] ctx`` once per context and each class's
tail only up to its EOS (exact under causal attention pooled at EOS); here in float64
against :meth:`ClassPrompts._encode_full` on the shipped tiny CLIP (word tokenizer, 12
tokens) and on a random open_clip ViT text tower (BPE, 77 tokens), then DPLCLIP fitted
both ways.
"""

from __future__ import annotations

import pytest
import torch

import croft.methods as M
from baseline_world import make_world
from croft.backbones import TINY_VIT, load_backbone
from croft.methods.prompts import prompting
from croft.methods.prompts.prompting import ClassPrompts

NAMES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]


@pytest.fixture(scope="module")
def tiny_clip():
    from croft.world import TINY_CLIP_ARCH, tiny_clip_checkpoint

    return load_backbone(f"openclip:{TINY_CLIP_ARCH}:{tiny_clip_checkpoint('study')}")


@pytest.fixture(scope="module")
def random_vit(tmp_path_factory):
    from safetensors.torch import save_file

    from croft.backbones.openclip import open_clip_module

    torch.manual_seed(0)
    model = open_clip_module().create_model(TINY_VIT).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return load_backbone(f"openclip:{TINY_VIT}:{path}")


@pytest.mark.parametrize("which", ["tiny_clip", "random_vit"])
def test_shared_prefix_equals_full_length_float64(which: str, request) -> None:  # noqa: ANN001
    tower = request.getfixturevalue(which)
    tower.model.double()
    try:
        prompts = ClassPrompts(tower, NAMES, 4, "cpu")
        assert prompts._shared is not None, "the tower should offer the exact shared path"
        _, _, kept = prompts._shared
        assert kept < prompts.suffix.shape[1]  # padding dropped
        g = torch.Generator().manual_seed(1)
        ctx = torch.randn(3, 4, prompts.prefix.shape[-1], generator=g, dtype=torch.float64)
        ctx.requires_grad_(True)
        fast = prompts._encode_shared(prompts._shared, ctx)
        (gf,) = torch.autograd.grad(fast.double().square().sum(), ctx)
        full = prompts._encode_full(ctx)
        (gr,) = torch.autograd.grad(full.double().square().sum(), ctx)
        assert fast.shape == full.shape == (3, len(NAMES), tower.dim)
        # the outputs are float32 (the tower's contract): equal to float32 rounding
        torch.testing.assert_close(fast, full, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gf, gr, rtol=1e-5, atol=1e-6)
    finally:
        tower.model.float()


def test_unsupported_tower_falls_back(tiny_clip) -> None:  # noqa: ANN001
    class Plain:  # a tower without shared_prefix_encoder: every prompt at full length
        def __getattr__(self, name):  # noqa: ANN001, ANN204
            if name == "shared_prefix_encoder":
                raise AttributeError(name)
            return getattr(tiny_clip, name)

    prompts = ClassPrompts(Plain(), NAMES, 4, "cpu")
    assert prompts._shared is None
    ctx = torch.randn(4, prompts.prefix.shape[-1])
    assert prompts.encode(ctx).shape == (len(NAMES), tiny_clip.dim)


def test_dplclip_same_predictions_both_paths(tiny_clip, monkeypatch) -> None:  # noqa: ANN001
    world = make_world(tiny_clip)
    tiny_clip.model.double()  # the text tower in float64: the two paths agree to ~1e-15
    x = world.test.eval_features()
    try:
        out = {}
        for shared in (True, False):
            monkeypatch.setattr(prompting, "SHARED_PREFIX", shared)
            torch.manual_seed(0)
            opts = {"epochs": 3, "n_ctx": 4, "mlp_width": 32, "text_tower": tiny_clip}
            res = M.fit("dplclip", world.train, world.val, **opts)
            assert (res.head.class_prompts(4)._shared is not None) == shared
            with torch.no_grad():
                out[shared] = (res.head.logits(x), res.selected_epoch)
    finally:
        tiny_clip.model.float()
    assert out[True][1] == out[False][1]
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-5)
    assert torch.equal(out[True][0].argmax(1), out[False][0].argmax(1))


def test_validation_subset_is_fixed_stratified_and_in_file_order(tiny_clip) -> None:  # noqa: ANN001
    from croft.methods.loop import validation_subset

    val = make_world(tiny_clip).val
    assert validation_subset(val, 0, 1) is val and validation_subset(val, len(val), 1) is val
    k = val.num_classes + 2  # every class once, two of them twice
    a, b = validation_subset(val, k, 1), validation_subset(val, k, 1)
    assert len(a) == k and torch.equal(a.features, b.features)
    counts = torch.bincount(a.labels, minlength=val.num_classes)
    assert int(counts.min()) == 1 and int(counts.max()) == 2
    rows = [int((val.features == r).all(1).nonzero()[0]) for r in a.features]
    assert rows == sorted(rows)
    assert not torch.equal(validation_subset(val, k, 2).features, a.features)


def test_dplclip_validates_less_often_and_on_a_subsample(tiny_clip) -> None:  # noqa: ANN001
    from croft.errors import CroftError

    world = make_world(tiny_clip)
    opts = {"epochs": 5, "n_ctx": 4, "mlp_width": 32, "text_tower": tiny_clip}
    torch.manual_seed(0)
    res = M.fit("dplclip", world.train, world.val, val_every=2, val_max=7, **opts)
    checked = [int(h["epoch"]) for h in res.history if "val_acc" in h]
    assert checked == [1, 3, 4]  # every 2nd epoch and the last
    assert res.selected_epoch in checked
    # the default validates every epoch: unchanged selection behaviour
    torch.manual_seed(0)
    full = M.fit("dplclip", world.train, world.val, **opts)
    assert all("val_acc" in h for h in full.history)
    with pytest.raises(CroftError, match="val_every must be at least 1"):
        M.fit("dplclip", world.train, world.val, val_every=0, **opts)
