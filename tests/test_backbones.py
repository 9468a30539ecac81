"""Backbones: spec loading from every weight format, preprocessing, fingerprints, prompts.

All offline and on CPU with random-init tiny models (``croft-tiny-vit``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from croft.backbones import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    TINY_VIT,
    TINY_VIT_CONFIG,
    Preprocess,
    file_sha256,
    hashing,
    load_backbone,
    parse_spec,
    register_architecture,
)
from croft.errors import CroftError

TEXTS = ["a photo of a cat", "a sketch of a dog", "x"]
ATOL = 1e-5
TINY_RN = "croft-test-tiny-rn"
TINY_RN_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
    "text_cfg": dict(TINY_VIT_CONFIG["text_cfg"]),
}


@pytest.fixture(autouse=True)
def _sha_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CROFT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def oc():
    pytest.importorskip("open_clip")
    from croft.backbones.openclip import open_clip_module

    return open_clip_module()


def _make(oc, name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return oc.create_model(name, **kwargs).eval()


@pytest.fixture(scope="module")
def tiny(oc):
    """A random-init open_clip tiny model (GELU)."""
    return _make(oc, TINY_VIT)


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _outputs(model, images, tokens):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def _check_same(backbone, model, images, oc, name=TINY_VIT):
    tokens = oc.get_tokenizer(name)(TEXTS)
    assert torch.equal(backbone.tokenize(TEXTS), tokens)
    ref_img, ref_txt = _outputs(model, images, tokens)
    img = backbone.encode_image(images)
    txt = backbone.encode_text(TEXTS)
    assert img.shape == (len(images), backbone.dim) and txt.shape == (len(TEXTS), backbone.dim)
    torch.testing.assert_close(img, ref_img, atol=ATOL, rtol=0)
    torch.testing.assert_close(txt, ref_txt, atol=ATOL, rtol=0)
    assert backbone.logit_scale == pytest.approx(model.logit_scale.exp().item())


def _openai_archive(sd: dict[str, torch.Tensor], path: Path) -> Path:
    """A TorchScript archive whose state dict has exactly ``sd``'s (OpenAI) key names, plus
    the ``input_resolution`` entry OpenAI archives carry. Scripted from a parameter-only
    module tree: tracing the whole model gives the same state dict but takes seconds."""
    root = torch.nn.Module()
    for key, tensor in {**sd, "input_resolution": torch.tensor(224)}.items():
        *parents, leaf = key.split(".")
        mod = root
        for part in parents:
            if not hasattr(mod, part):
                mod.add_module(part, torch.nn.Module())
            mod = getattr(mod, part)
        mod.register_parameter(leaf, torch.nn.Parameter(tensor.clone(), requires_grad=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        torch.jit.script(root).save(str(path))
    return path


# -- open_clip state dicts ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pt", "wrapped-bin", "safetensors"])
def test_openclip_state_dict_formats(tmp_path, oc, tiny, images, fmt):
    sd = tiny.state_dict()
    if fmt == "pt":
        path = tmp_path / "tiny.pt"
        torch.save(sd, path)
    elif fmt == "wrapped-bin":
        path = tmp_path / "tiny.bin"
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "tiny.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    backbone = load_backbone(f"openclip:{TINY_VIT}:{path}")
    _check_same(backbone, tiny, images, oc)
    assert backbone.name == TINY_VIT and backbone.dim == 32 and backbone.precision == "fp32"
    assert backbone.preprocess == Preprocess(32, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    assert backbone.quick_gelu is False and str(backbone.device) == "cpu"
    assert not any(p.requires_grad for p in backbone.model.parameters())
    assert not backbone.model.training


def test_state_dict_that_does_not_fit_names_keys_and_the_right_arch(tmp_path, tiny):
    register_architecture(
        "croft-test-tiny-wide",
        {**TINY_VIT_CONFIG, "vision_cfg": {**TINY_VIT_CONFIG["vision_cfg"], "width": 128}},
    )
    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(CroftError) as err:
        load_backbone(f"openclip:croft-test-tiny-wide:{path}")
    msg = str(err.value)
    assert "visual.class_embedding (64) vs (128)" in msg and f"openclip:{TINY_VIT}:{path}" in msg
    assert "\n" not in msg

    sd = dict(tiny.state_dict())
    sd["extra.weight"] = sd.pop("ln_final.weight")
    torch.save(sd, path)
    with pytest.raises(CroftError, match=r"1 missing keys \(ln_final.weight\).*extra.weight"):
        load_backbone(f"openclip:{TINY_VIT}:{path}")


def test_big_arch_mismatch_fails_fast_without_building_it(tmp_path, oc, tiny):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    start = time.perf_counter()
    with pytest.raises(CroftError, match=f"do not fit architecture ViT-B-16.*{TINY_VIT}"):
        load_backbone(f"openclip:ViT-B-16:{path}")
    assert time.perf_counter() - start < 2.0  # checked on the meta device


def test_quick_gelu_metadata_is_followed_and_contradictions_refused(tmp_path, oc, images):
    from safetensors.torch import save_file

    model = _make(oc, TINY_VIT, seed=2, force_quick_gelu=True)
    path = tmp_path / "qg.safetensors"
    save_file(model.state_dict(), str(path), metadata={"quick_gelu": "true"})
    backbone = load_backbone(f"openclip:{TINY_VIT}:{path}")  # arch says nothing: weights win
    assert backbone.quick_gelu is True and backbone.fingerprint()["quick_gelu"] is True
    _check_same(backbone, model, images, oc)
    assert load_backbone(f"openclip:{TINY_VIT}-quickgelu:{path}").quick_gelu is True
    with pytest.raises(CroftError, match="activation mismatch.*QuickGELU"):
        load_backbone(f"openclip:{TINY_VIT}:{path}", quick_gelu=False)

    wrapped = tmp_path / "gelu.pt"
    torch.save({"state_dict": model.state_dict(), "quick_gelu": False}, wrapped)
    with pytest.raises(CroftError, match=f"trained with GELU.*pass {TINY_VIT} or quick_gelu"):
        load_backbone(f"openclip:{TINY_VIT}-quickgelu:{wrapped}")


# -- OpenAI TorchScript archives --------------------------------------------------------------


def test_openai_torchscript_archive(tmp_path, oc, images):
    model = _make(oc, TINY_VIT, seed=3, force_quick_gelu=True)  # OpenAI keys, QuickGELU
    path = _openai_archive(model.state_dict(), tmp_path / "ViT-T-8.pt")
    backbone = load_backbone(f"openai:{path}")  # architecture inferred from the shapes
    _check_same(backbone, model, images, oc)
    assert backbone.source == "openai" and backbone.name == TINY_VIT
    assert backbone.quick_gelu is True and backbone.architecture["quick_gelu"] is True
    assert backbone.preprocess == Preprocess.openai(32)

    # naming an arch without -quickgelu still builds QuickGELU, and records it
    named = load_backbone(f"openai:{TINY_VIT}:{path}")
    assert named.fingerprint()["quick_gelu"] is True
    torch.testing.assert_close(named.encode_image(images), backbone.encode_image(images))
    # ... which matters: the same weights with GELU give other features
    gelu = _make(oc, TINY_VIT)
    gelu.load_state_dict(model.state_dict())
    assert not torch.allclose(
        _outputs(gelu, images, named.tokenize(TEXTS))[0], named.encode_image(images), atol=1e-3
    )
    with pytest.raises(CroftError, match="activation mismatch"):
        load_backbone(f"openai:{path}", quick_gelu=False)
    # an archive given to openclip: is read the same way
    assert load_backbone(f"openclip:{TINY_VIT}:{path}").quick_gelu is True


def test_openai_resnet_archive(tmp_path, oc):
    register_architecture(TINY_RN, TINY_RN_CONFIG)
    model = _make(oc, TINY_RN, seed=4, force_quick_gelu=True)
    path = _openai_archive(model.state_dict(), tmp_path / "RN-T.pt")
    backbone = load_backbone(f"openai:{path}")
    imgs = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    _check_same(backbone, model, imgs, oc, name=TINY_RN)
    assert backbone.architecture["vision_cfg"]["layers"] == [1, 1, 1, 1]
    assert backbone.preprocess.image_size == 64


def test_openai_rejects_plain_state_dict(tmp_path, tiny):
    path = tmp_path / "plain.pt"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(CroftError, match="not a TorchScript archive.*openclip:ARCH:"):
        load_backbone(f"openai:{path}")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_openai_traced_archive(tmp_path, oc, images):
    """A genuinely traced model, as OpenAI's archives are (tracing takes seconds)."""
    model = _make(oc, TINY_VIT, seed=6, force_quick_gelu=True)
    example = {
        "encode_image": (images[:1],),
        "encode_text": (torch.zeros(1, 16, dtype=torch.long),),
    }
    traced = torch.jit.trace_module(model, example)
    traced.save(str(tmp_path / "traced.pt"))
    _check_same(load_backbone(f"openai:{tmp_path / 'traced.pt'}"), model, images, oc)


# -- Hugging Face -----------------------------------------------------------------------------


def _hf_tiny(directory: Path):
    transformers = pytest.importorskip("transformers")
    letters = "abcdefghijklmnopqrstuvwxyz"
    merges = ["c a", "ca t</w>", "d o", "do g</w>"]
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": len(letters) + i for i, c in enumerate(letters)})
    for merge in merges:
        vocab[merge.replace(" ", "")] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    directory.mkdir()
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    vision = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
    torch.manual_seed(7)
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(str(directory))
    (directory / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "crop_size": {"height": 32, "width": 32},
                "size": {"shortest_edge": 32},
                "do_center_crop": True,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.25, 0.25, 0.25],
                "resample": 2,
            }
        )
    )
    return transformers, model


def _features(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_hf_directory(tmp_path, images):
    transformers, model = _hf_tiny(tmp_path / "hf-tiny")
    backbone = load_backbone(f"hf:{tmp_path / 'hf-tiny'}")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(tmp_path / "hf-tiny"))
    tokens = tokenizer(TEXTS, padding="max_length", max_length=16, return_tensors="pt")["input_ids"]
    assert torch.equal(backbone.tokenize(TEXTS), tokens)
    with torch.no_grad():
        ref_img = _features(model.get_image_features(pixel_values=images))
        ref_txt = _features(model.get_text_features(input_ids=tokens))
    torch.testing.assert_close(backbone.encode_image(images), ref_img, atol=ATOL, rtol=0)
    torch.testing.assert_close(backbone.encode_text(TEXTS), ref_txt, atol=ATOL, rtol=0)
    assert backbone.dim == 24 and backbone.source == "hf" and backbone.quick_gelu is True
    assert backbone.logit_scale == pytest.approx(model.logit_scale.exp().item())
    assert backbone.preprocess == Preprocess(32, (0.5,) * 3, (0.25,) * 3, "bilinear", "shortest")
    emb = backbone.token_embedding(tokens).detach().requires_grad_(True)
    out = backbone.encode_text_embeddings(emb, tokens)
    torch.testing.assert_close(out, ref_txt, atol=ATOL, rtol=0)
    out.sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    fp = backbone.fingerprint()
    assert (
        fp["weights_sha256"]
        == hashlib.sha256((tmp_path / "hf-tiny/model.safetensors").read_bytes()).hexdigest()
    )


def test_hf_needs_transformers(tmp_path, monkeypatch):
    directory = tmp_path / "hf"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (directory / "model.safetensors").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(CroftError, match=r'pip install "croft-ood\[hf\]"'):
        load_backbone(f"hf:{directory}")


def test_hf_rejects_other_directories(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(CroftError, match="no config.json"):
        load_backbone(f"hf:{tmp_path / 'd'}")
    (tmp_path / "d/config.json").write_text(json.dumps({"model_type": "siglip"}))
    with pytest.raises(CroftError, match="'siglip' model"):
        load_backbone(f"hf:{tmp_path / 'd'}")
    (tmp_path / "d/config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(CroftError, match="no weights"):
        load_backbone(f"hf:{tmp_path / 'd'}")


# -- fast, clear errors -----------------------------------------------------------------------


def test_user_errors_are_fast_and_one_line(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not used")
    cases = [
        (f"openclip:{TINY_VIT}:{tmp_path / 'missing.pt'}", {}, "weight file not found"),
        (f"openclip:No-Such-Arch:{weights}", {}, "unknown architecture 'No-Such-Arch'"),
        ("openclip:ViT-B-16@openai", {}, "--allow-download"),
        ("openclip:ViT-B-16", {}, "names no weights"),
        (f"openai:{tmp_path / 'ViT-B-16.pt'}", {}, "weight file not found"),
        (f"openai:No-Such-Arch:{weights}", {}, "unknown architecture"),
        (f"hf:{tmp_path / 'nope'}", {}, "directory not found"),
        ("clip:ViT-B-16", {}, "bad backbone spec"),
        (f"openclip:{TINY_VIT}:{weights}", {"precision": "fp64"}, "unknown precision"),
    ]
    for spec, kwargs, expected in cases:
        start = time.perf_counter()
        with pytest.raises(CroftError) as err:
            load_backbone(spec, **kwargs)
        assert time.perf_counter() - start < 2.0, spec
        assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_hub_tag_unknown_with_download_allowed(oc):
    with pytest.raises(CroftError, match="unknown pretrained tag 'nope'.*openai"):
        load_backbone("openclip:ViT-B-16@nope", allow_download=True)


def test_unreadable_checkpoint(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(CroftError, match="weights-only torch checkpoint"):
        load_backbone(f"openclip:{TINY_VIT}:{path}")


def test_parse_spec(tmp_path):
    assert parse_spec("openclip:ViT-B-16@laion2b_s34b_b88k").tag == "laion2b_s34b_b88k"
    p = parse_spec("openclip:ViT-B-16:/w/a:b.pt")
    assert (p.arch, p.path) == ("ViT-B-16", Path("/w/a:b.pt"))
    assert parse_spec("openai:/w/ViT-B-16.pt").arch is None
    p = parse_spec("openai:RN50:/w/RN50.pt")
    assert (p.arch, p.path) == ("RN50", Path("/w/RN50.pt"))
    assert parse_spec("hf:~/m").path == Path("~/m").expanduser().absolute()


def test_register_architecture_validates_and_reaches_open_clip(oc):
    with pytest.raises(CroftError, match="lacks text_cfg"):
        register_architecture("croft-test-bad", {"embed_dim": 8, "vision_cfg": {}})
    register_architecture("croft-test-registered", TINY_VIT_CONFIG)
    assert "croft-test-registered" in oc.list_models()
    assert TINY_VIT in oc.list_models()


# -- text embeddings for prompt learners -------------------------------------------------------


def test_token_embeddings_reproduce_encode_text_and_carry_gradients(tmp_path, tiny):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    backbone = load_backbone(f"openclip:{TINY_VIT}:{path}")
    tokens = backbone.tokenize(TEXTS)
    emb = backbone.token_embedding(tokens)
    assert emb.shape == (len(TEXTS), 16, 64)
    emb = emb.detach().clone().requires_grad_(True)
    out = backbone.encode_text_embeddings(emb, tokens)
    torch.testing.assert_close(out, backbone.encode_text(TEXTS), atol=ATOL, rtol=0)
    out.square().sum().backward()
    eot = tokens.argmax(dim=1)
    for row, end in enumerate(eot.tolist()):  # causal: only tokens up to EOT matter
        assert emb.grad[row, : end + 1].abs().sum() > 0
        assert emb.grad[row, end + 1 :].abs().sum() == 0
    assert all(p.grad is None for p in backbone.model.parameters())
    with pytest.raises(CroftError, match="must match tokens"):
        backbone.encode_text_embeddings(emb[:, :5], tokens)


def test_half_precisions_and_to(tmp_path, tiny, images):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    full = load_backbone(f"openclip:{TINY_VIT}:{path}")
    ref = full.encode_image(images)
    for precision in ("bf16", "fp16"):
        half = load_backbone(f"openclip:{TINY_VIT}:{path}", precision=precision)
        out = half.encode_image(images)
        assert out.dtype == torch.float32 and half.dtype == getattr(
            torch, {"bf16": "bfloat16", "fp16": "float16"}[precision]
        )
        torch.testing.assert_close(out, ref, atol=0.1, rtol=0.05)
        assert half.fingerprint_hash() != full.fingerprint_hash()
    assert full.to("cpu") is full
    with pytest.raises(CroftError, match=r"expects images of shape \(B, 3, 32, 32\)"):
        full.encode_image(torch.zeros(1, 3, 64, 64))


# -- fingerprint and the sha256 cache ---------------------------------------------------------


def test_fingerprint_and_sha256_cache(tmp_path, tiny, monkeypatch):
    calls = []
    real = hashing._hash_file
    monkeypatch.setattr(hashing, "_hash_file", lambda p: calls.append(p) or real(p))
    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    backbone = load_backbone(f"openclip:{TINY_VIT}:{path}")
    fp = backbone.fingerprint()
    assert fp["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert set(fp) == {
        "source",
        "name",
        "architecture",
        "weights_sha256",
        "precision",
        "preprocess",
        "quick_gelu",
    }
    assert fp["architecture"]["vision_cfg"]["patch_size"] == 8 and fp["precision"] == "fp32"
    assert fp["preprocess"] == backbone.preprocess.to_dict()
    json.dumps(fp)

    again = load_backbone(f"openclip:{TINY_VIT}:{path}")
    assert again.fingerprint_hash() == backbone.fingerprint_hash()
    assert file_sha256(path) == fp["weights_sha256"]
    assert len(calls) == 1  # the cache answered the later calls
    cache = json.loads((tmp_path / "cache" / "sha256.json").read_text())
    assert cache[str(path.resolve())]["sha256"] == fp["weights_sha256"]

    moved = tmp_path / "elsewhere.pt"
    moved.write_bytes(path.read_bytes())  # same bytes elsewhere: same fingerprint
    assert (
        load_backbone(f"openclip:{TINY_VIT}:{moved}").fingerprint_hash()
        == backbone.fingerprint_hash()
    )

    sd = tiny.state_dict()
    sd["logit_scale"] = sd["logit_scale"] + 1
    torch.save(sd, path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = load_backbone(f"openclip:{TINY_VIT}:{path}")
    assert changed.fingerprint()["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert changed.fingerprint_hash() != backbone.fingerprint_hash()
    assert len(calls) == 3


# -- preprocessing ------------------------------------------------------------------------------


def _image(w: int = 50, h: int = 40, seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
    return Image.fromarray(pixels)


def test_eval_transform_shape_determinism_and_normalisation():
    pre = Preprocess(24, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    tf = pre.eval_transform()
    img = _image()
    out = tf(img)
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    assert torch.equal(out, tf(img))
    flat = tf(Image.new("RGB", (30, 20), (255, 0, 128)))
    expected = [
        (v / 255 - m) / s
        for v, m, s in zip((255, 0, 128), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, strict=True)
    ]
    for c in range(3):
        torch.testing.assert_close(flat[c], torch.full((24, 24), expected[c]), atol=1e-5, rtol=0)
    gray = tf(img.convert("L"))  # converted to RGB
    assert gray.shape == (3, 24, 24)


def test_eval_transform_modes_and_interpolation():
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    img = _image(60, 30)
    nearest = Preprocess(16, (0.0,) * 3, (1.0,) * 3, interpolation="nearest")
    manual = TF.to_tensor(TF.center_crop(TF.resize(img, 16, InterpolationMode.NEAREST), [16, 16]))
    assert torch.equal(nearest.eval_transform()(img), manual)
    bicubic = Preprocess(16, (0.0,) * 3, (1.0,) * 3)
    assert not torch.equal(bicubic.eval_transform()(img), manual)
    squash = Preprocess(16, (0.0,) * 3, (1.0,) * 3, resize_mode="squash").eval_transform()(img)
    assert squash.shape == (3, 16, 16) and not torch.equal(squash, bicubic.eval_transform()(img))
    longest = Preprocess(16, (0.0,) * 3, (1.0,) * 3, resize_mode="longest").eval_transform()(img)
    assert longest.shape == (3, 16, 16) and longest[:, 0].abs().sum() == 0  # padded rows
    with pytest.raises(CroftError, match="unknown interpolation"):
        Preprocess(16, (0.0,) * 3, (1.0,) * 3, interpolation="cubic")
    with pytest.raises(CroftError, match="unknown resize_mode"):
        Preprocess(16, (0.0,) * 3, (1.0,) * 3, resize_mode="crop")


def test_train_transform_is_seeded_locally():
    pre = Preprocess.openai(24)
    tf = pre.train_transform()
    img = _image(64, 48)
    state = torch.get_rng_state()
    a, b = tf(img, 7), tf(img, 7)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert a.shape == (3, 24, 24) and torch.equal(a, b)
    others = [tf(img, seed) for seed in range(1, 6)]
    assert all(not torch.equal(a, o) for o in others)
    assert not torch.equal(a, pre.eval_transform()(img))


def test_preprocess_dict_roundtrip():
    pre = Preprocess(224, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "bilinear", "squash")
    d = json.loads(json.dumps(pre.to_dict()))
    assert d == {
        "image_size": 224,
        "mean": list(OPENAI_CLIP_MEAN),
        "std": list(OPENAI_CLIP_STD),
        "interpolation": "bilinear",
        "resize_mode": "squash",
    }
    assert Preprocess.from_dict(d) == pre
    with pytest.raises(CroftError, match="unknown preprocess keys"):
        Preprocess.from_dict({**d, "crop": 1})


def test_import_is_light():
    import subprocess

    heavy = "('torch', 'open_clip', 'transformers', 'torchvision')"
    code = f"import sys, croft.backbones; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
