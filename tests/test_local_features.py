"""Local (patch) features: the backbones' maps (checked against independent computations),
the store (fp16, same pass, keyed apart from global-only caches, checksummed), feature
files, ``croft extract --local-features`` and GL-MCM on them."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from croft.backbones import TINY_VIT, load_backbone
from croft.backbones.local import local_size_text, local_tokens
from croft.cli.main import main
from croft.data import read_layout
from croft.errors import CroftError
from croft.features import ViewSpec, extract_features, load_features, save_features
from croft.features.shards import shard_name

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """DomainBed folder: 2 domains x 2 classes x 3 PNGs."""
    root = tmp_path_factory.mktemp("imgs")
    g = torch.Generator().manual_seed(0)
    for d in ("art", "photo"):
        for c in ("cat", "dog"):
            (root / d / c).mkdir(parents=True)
            for k in range(3):
                arr = (torch.rand(40, 44, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(root / d / c / f"{k}.png")
    return root


@pytest.fixture(scope="module")
def vit(tiny_ckpts):
    return load_backbone(f"openclip:{TINY_VIT}:{tiny_ckpts[0]}")


def _images(bb, n=3, seed=0):
    s = bb.preprocess.image_size
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(seed))


def test_vit_local_features_match_open_clips_intermediates(vit):
    x = _images(vit)
    glob, loc = vit.encode_image_local(x)
    assert vit.local_tokens() == 16 and loc.shape == (3, 16, vit.dim)  # 32 px / patch 8
    assert torch.equal(glob, vit.encode_image(x))  # the same pass gives the same global
    visual = vit.model.visual
    with torch.no_grad():  # independent: open_clip's own intermediates API
        out = visual.forward_intermediates(
            x, indices=1, normalize_intermediates=True, output_fmt="NLC"
        )
        want = out["image_intermediates"][-1] @ visual.proj
    torch.testing.assert_close(loc, want, rtol=1e-5, atol=1e-5)


def _rn_model(image_size: int):
    from croft.backbones.openclip import open_clip_module
    from croft.world.tiny_clip import build_model_config

    oc = open_clip_module()
    cfg = build_model_config(50, image_size=image_size)
    torch.manual_seed(0)
    return oc.model.CLIP(**cfg).eval()


def test_resnet_local_map_is_the_attention_pools_value_path():
    """Each cell's local feature equals the attention pool run with every query attending
    to its own cell only (an independent route through open_clip's pool)."""
    from croft.backbones.local import encode_image_local

    model = _rn_model(64)  # 64 px / stride 32: a 2 x 2 map
    assert local_tokens(model, "rn") == 4
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        glob, loc = encode_image_local(model, x, "rn")
        assert torch.equal(glob, model.encode_image(x))
        visual, seen = model.visual, {}
        h = visual.attnpool.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
        model.encode_image(x)
        h.remove()
        pool, fmap = visual.attnpool, seen["x"]
        seq = fmap.flatten(2).permute(2, 0, 1)
        seq = torch.cat([seq.mean(0, keepdim=True), seq]) + pool.positional_embedding[:, None]
        mask = torch.full((5, 5), float("-inf"))
        mask.fill_diagonal_(0.0)
        out, _ = F.multi_head_attention_forward(
            seq, seq, seq, seq.shape[-1], pool.num_heads,
            None, torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            None, None, False, 0.0, pool.c_proj.weight, pool.c_proj.bias,
            training=False, need_weights=False, attn_mask=mask, use_separate_proj_weight=True,
            q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
            v_proj_weight=pool.v_proj.weight,
        )  # fmt: skip
    torch.testing.assert_close(loc, out[1:].permute(1, 0, 2), rtol=1e-5, atol=1e-5)


def test_tiny_world_clip_exposes_its_map():
    from croft.world.tiny_clip import TINY_CLIP_ARCH, tiny_clip_checkpoint

    bb = load_backbone(f"openclip:{TINY_CLIP_ARCH}:{tiny_clip_checkpoint()}")
    x = _images(bb, 2)
    glob, loc = bb.encode_image_local(x)
    # 32 px through stride 32: a 1 x 1 attention-pool map, one local feature per image
    assert bb.local_tokens() == 1 and loc.shape == (2, 1, bb.dim)
    assert torch.equal(glob, bb.encode_image(x))
    assert not torch.allclose(loc[:, 0], glob)  # the value path, not the pooled query


def test_towers_without_a_map_say_so():
    fake = types.SimpleNamespace(visual=torch.nn.Linear(2, 2))
    with pytest.raises(CroftError, match="no local \\(patch\\) features"):
        local_tokens(fake, "backbone x")


def test_size_is_stated_in_plain_units():
    # the example: a 196 x 512 fp16 map is about 200 KB per image
    assert local_size_text(1000, 1, 196, 512) == (
        "local features: 196 x 512 fp16 per view (200.7 KB per image), 200.7 MB for 1000 images"
    )


def _extract(bb, index, tmp, name, **kw):
    kw.setdefault("shard_size", 5)
    kw.setdefault("batch_size", 4)
    return extract_features(
        bb, index, out=tmp / f"{name}.safetensors", progress=False, cache_dir=tmp / "c", **kw
    )


def test_store_keeps_local_features_under_their_own_key(vit, root, tmp_path, monkeypatch):
    index = read_layout(root, "domainbed")
    plain = _extract(vit, index, tmp_path, "plain")
    assert plain.local_features is None
    loc = _extract(vit, index, tmp_path, "local", local_features=True)
    assert loc.local_features.dtype == torch.float16
    assert loc.local_features.shape == (len(index), 16, vit.dim)
    assert torch.equal(loc.features, plain.features)  # the global feature is unchanged
    dirs = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert len(dirs) == 2 and sum("-local-" in d for d in dirs) == 1  # two keys, two dirs
    # values: the encoder's local features of the eval transform, rounded to fp16
    img = Image.open(root / index.records[4].path).convert("RGB")
    x = vit.preprocess.eval_transform()(img).unsqueeze(0)
    want = vit.encode_image_local(x)[1][0].half()
    torch.testing.assert_close(loc.local_features[4], want, rtol=2e-3, atol=2e-3)
    # a second run with local features reads the cache: no image is encoded again
    calls = []
    monkeypatch.setattr(vit, "encode_image_local", lambda im: calls.append(1))
    monkeypatch.setattr(vit, "encode_image", lambda im: calls.append(1))
    again = _extract(vit, index, tmp_path, "again", local_features=True)
    assert not calls and torch.equal(again.local_features, loc.local_features)
    # ... and so does a plain run (its own cache, never the local one)
    assert _extract(vit, index, tmp_path, "plain2").local_features is None and not calls
    # the feature file round-trips the local tensor
    back = load_features(tmp_path / "local.safetensors")
    assert torch.equal(back.local_features, loc.local_features)
    assert torch.equal(back.subset(torch.tensor([1, 3])).local_features, loc.local_features[[1, 3]])


def test_a_corrupted_local_shard_is_removed_and_reported(vit, root, tmp_path):
    index = read_layout(root, "domainbed")
    _extract(vit, index, tmp_path, "a", local_features=True)
    (shard,) = [d for d in (tmp_path / "c").iterdir() if "-local-" in d.name]
    path = shard / shard_name(0)
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0xFF  # a byte of the last tensor's data
    path.write_bytes(bytes(raw))
    with pytest.raises(CroftError, match="corrupted"):
        _extract(vit, index, tmp_path, "b", local_features=True)
    assert not path.exists()


def test_train_views_keep_local_features_per_view(vit, root, tmp_path):
    index = read_layout(root, "domainbed").filter(domains=["art"])
    fs = _extract(vit, index, tmp_path, "tv", view=ViewSpec.train_views(2, 0), local_features=True)
    assert fs.local_features.shape == (len(index), 2, 16, vit.dim)
    assert fs.local_view(1).shape == (len(index), 16, vit.dim)
    assert fs.eval_local().shape == (len(index), 16, vit.dim)


def test_feature_file_rejects_local_features_of_the_wrong_shape(tmp_path):
    from croft.features import FeatureSet

    with pytest.raises(CroftError, match="local_features' must be floating point of shape"):
        FeatureSet(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), ["a"],
                   local_features=torch.randn(3, 5, 6))  # fmt: skip
    fs = FeatureSet(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), ["a"])
    with pytest.raises(CroftError, match="--local-features"):
        fs.require_local()
    save_features(fs, tmp_path / "f.safetensors")
    assert load_features(tmp_path / "f.safetensors").local_features is None


def test_cli_local_features_states_the_size_first(tiny_ckpts, root, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    argv = ["extract", "--backbone", f"openclip:{TINY_VIT}:{tiny_ckpts[0]}", "--root",
            str(root), "--layout", "domainbed", "--out", str(out), "--workers", "0",
            "--quiet", "--local-features"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    size_line = "croft: local features: 16 x 32 fp16 per view (1.0 KB per image), 12.3 KB"
    assert text.index(size_line) < text.index("wrote features 12x32 (eval) + local 12x16x32")
    assert load_features(out).local_features.shape == (12, 16, 32)


def test_gl_mcm_runs_on_extracted_local_features(vit, root, tmp_path):
    from croft.evaluation import evaluate, head_outputs
    from croft.methods.zeroshot import zeroshot_head
    from croft.scores_local import gl_mcm

    index = read_layout(root, "domainbed")
    fs = _extract(vit, index, tmp_path, "g", local_features=True, templates=["a {}."])
    head = zeroshot_head(fs.class_names, fs.text_features, fs.logit_scale)
    ood = fs.subset(torch.arange(6, 12))
    ood.labels = torch.full((6,), -1)
    ev = evaluate(head, fs.subset(torch.arange(6)), {"o": ood}, scores=["mcm", "gl_mcm"])
    got = ev.per_sample["id/gl_mcm"]
    out = head_outputs(head, fs.features[:6], local=fs.local_features[:6])
    assert out.local_similarities.shape == (6, 16, 2)
    want = gl_mcm(out.similarities, out.local_similarities).double().numpy()
    assert got == pytest.approx(want, rel=1e-6)
    assert (got > ev.per_sample["id/mcm"]).all()  # the local term adds at least 1/C
    plain = _extract(vit, index, tmp_path, "g2", templates=["a {}."])
    with pytest.raises(CroftError, match="--local-features"):
        evaluate(head, plain.subset(torch.arange(6)), {}, scores=["gl_mcm"])


@pytest.mark.slow
def test_random_vit_b_16_in_open_clip_format(root, tmp_path, capsys):
    """open_clip's ViT-B-16 (random init, saved as open_clip saves a state dict): 196 x 512."""
    from croft.backbones.openclip import open_clip_module

    oc = open_clip_module()
    torch.manual_seed(0)
    path = tmp_path / "vitb16.pt"
    torch.save(oc.create_model("ViT-B-16").state_dict(), path)
    argv = ["extract", "--backbone", f"openclip:ViT-B-16:{path}", "--root", str(root),
            "--layout", "domainbed", "--domains", "art", "--out", str(tmp_path / "b.safetensors"),
            "--workers", "0", "--quiet", "--local-features", "--batch-size", "6"]  # fmt: skip
    assert main(argv) == 0
    assert "196 x 512 fp16 per view (200.7 KB per image)" in capsys.readouterr().out
    fs = load_features(tmp_path / "b.safetensors")
    assert fs.local_features.shape == (6, 196, 512) and fs.local_features.dtype == torch.float16


def test_gl_mcm_known_values():
    from croft.scores import SCORES, ScoreInputs
    from croft.scores_local import gl_mcm

    glob = torch.zeros(2, 4)  # uniform global similarities: MCM = 1/4
    loc = torch.zeros(2, 3, 4)
    loc[0, 1, 2] = 50.0  # one decisive patch: local MCM -> 1
    got = gl_mcm(glob, loc)
    torch.testing.assert_close(got, torch.tensor([0.25 + 1.0, 0.25 + 0.25]))
    # T scales both terms: at T = 0.5 the patch's softmax is e^2 / (e^2 + 3)
    loc[1, 0, 0] = 1.0
    t = gl_mcm(glob, loc, temperature=0.5)
    e2 = torch.tensor(2.0).exp()
    torch.testing.assert_close(t[1], 0.25 + e2 / (e2 + 3))
    via = SCORES.get("gl_mcm").compute(ScoreInputs(similarities=glob, local_similarities=loc))
    torch.testing.assert_close(via, gl_mcm(glob, loc))
    with pytest.raises(CroftError, match="do not match similarities"):
        gl_mcm(glob, torch.zeros(2, 3, 5))
