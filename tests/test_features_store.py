"""The feature store: extraction from image folders with a random-init tiny backbone.

Views, determinism, cache hits and key changes, resume after a kill, undecodable images,
the CLI and a 2-process torchrun run (gloo on CPU).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from croft.backbones import TINY_VIT, load_backbone
from croft.cli.main import main
from croft.data import load_image, read_layout
from croft.errors import CroftError
from croft.features import (
    ExtractionInterrupted,
    ViewSpec,
    extract_features,
    extract_text_features,
    kept_indices,
    load_features,
    store_manifest,
    view_seed,
)
from croft.features import store as store_mod

DOMAINS, CLASSES, PER_CLASS = ("art", "photo"), ("cat", "dog", "fish"), 5
BAD = {"art/cat/empty.png", "photo/dog/text.png"}
TEMPLATES = ["a photo of a {}.", "a sketch of a {}."]


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def ckpts(tiny_ckpts) -> tuple[Path, Path]:
    """Two random-init tiny checkpoints (seeds 0 and 1), shared via conftest."""
    return tiny_ckpts


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """DomainBed folder: 2 domains x 3 classes x 5 PNGs + a zero-byte and a text '.png'."""
    root = tmp_path_factory.mktemp("pacs")
    g = torch.Generator().manual_seed(0)
    for d in DOMAINS:
        for c in CLASSES:
            (root / d / c).mkdir(parents=True)
            for k in range(PER_CLASS):
                hw = (36 + 3 * k, 48 - 2 * k, 3)
                arr = (torch.rand(hw, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(root / d / c / f"{k}.png")
    (root / "art/cat/empty.png").write_bytes(b"")
    (root / "photo/dog/text.png").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def index(root):
    return read_layout(root, "domainbed")


def _backbone(path: Path):
    return load_backbone(f"openclip:{TINY_VIT}:{path}")


def _count_encodes(monkeypatch, backbone) -> list[int]:
    """Wrap ``backbone.encode_image``; the list collects the batch sizes it sees."""
    calls: list[int] = []
    original = backbone.encode_image

    def wrapped(images):
        calls.append(int(images.shape[0]))
        return original(images)

    monkeypatch.setattr(backbone, "encode_image", wrapped)
    return calls


def _run(backbone, index, tmp, name="out", **kw):
    kw.setdefault("shard_size", 8)
    kw.setdefault("batch_size", 6)
    kw.setdefault("progress", False)
    kw.setdefault("cache_dir", tmp / "cache")
    out = tmp / f"{name}.safetensors"
    fs = extract_features(backbone, index, out=out, **kw)
    return fs, out


def test_views_shapes_and_values_match_the_encoder(ckpts, index, tmp_path):
    bb = _backbone(ckpts[0])
    n_ok = len(index) - len(BAD)
    ev, out = _run(bb, index, tmp_path, "eval", templates=TEMPLATES)
    assert ev.features.shape == (n_ok, bb.dim)
    keep = kept_indices(ev)
    kept_paths = [index.records[i].path for i in keep.tolist()]
    assert len(kept_paths) == n_ok and not BAD & set(kept_paths)
    assert ev.labels.tolist() == [index.records[i].label for i in keep.tolist()]
    assert ev.domains.tolist() == [index.domain_ids()[i] for i in keep.tolist()]
    assert ev.class_names == list(CLASSES) and ev.domain_names == list(DOMAINS)
    row = 7
    img = load_image(index.root / kept_paths[row])
    ref = bb.encode_image(bb.preprocess.eval_transform()(img)[None])[0]
    torch.testing.assert_close(ev.features[row], ref, atol=1e-5, rtol=1e-4)
    assert ev.text_features.shape == (len(CLASSES), len(TEMPLATES), bb.dim)
    torch.testing.assert_close(
        ev.text_features, extract_text_features(bb, ev.class_names, TEMPLATES)
    )
    assert ev.templates == TEMPLATES and ev.logit_scale == pytest.approx(bb.logit_scale)
    x = ev.extra
    assert x["backbone"] == bb.fingerprint() and x["backbone_spec"] == bb.spec
    assert x["index_hash"] == index.hash() and x["view"] == {"kind": "eval"}
    assert sorted(d["path"] for d in x["skipped"]) == sorted(BAD)
    back = load_features(out)
    assert torch.equal(back.features, ev.features) and back.extra == ev.extra

    tr, _ = _run(bb, index, tmp_path, "train", view=ViewSpec.train_views(3, seed=5))
    assert tr.features.shape == (n_ok, 3, bb.dim)
    assert tr.extra["view"] == {"kind": "train", "views": 3, "seed": 5}
    f = tr.features[row]
    assert not torch.allclose(f[0], f[1]) and not torch.allclose(f[1], f[2])
    assert not torch.allclose(f[0], ev.features[row])
    i = int(keep[row])
    crop = bb.preprocess.train_transform()(img, view_seed(5, i, 2))
    torch.testing.assert_close(f[2], bb.encode_image(crop[None])[0], atol=1e-5, rtol=1e-4)


def test_deterministic_and_cached_and_batch_independent(ckpts, index, tmp_path, monkeypatch):
    bb = _backbone(ckpts[0])
    view = ViewSpec.train_views(2, seed=1)
    calls = _count_encodes(monkeypatch, bb)
    a, out_a = _run(bb, index, tmp_path, "a", view=view)
    assert sum(calls) == 2 * (len(index) - len(BAD))
    b, out_b = _run(bb, index, tmp_path, "b", view=view, cache_dir=tmp_path / "cache2")
    assert out_a.read_bytes() == out_b.read_bytes()
    calls.clear()
    c, out_c = _run(bb, index, tmp_path, "c", view=view)  # cache hit: no image encoded
    assert calls == [] and out_c.read_bytes() == out_a.read_bytes()
    d, _ = _run(
        bb, index, tmp_path, "d", view=view, batch_size=4, workers=2, cache_dir=tmp_path / "c3"
    )
    torch.testing.assert_close(d.features, a.features, atol=1e-5, rtol=1e-4)
    assert max(calls) <= 4


def test_key_change_extracts_again(ckpts, index, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    bb = _backbone(ckpts[0])
    calls = _count_encodes(monkeypatch, bb)
    _run(bb, index, tmp_path, view=ViewSpec.train_views(2, seed=1))
    for view in (ViewSpec.train_views(2, seed=2), ViewSpec.train_views(3, seed=1)):
        calls.clear()
        _run(bb, index, tmp_path, view=view)
        assert sum(calls) == view.views * (len(index) - len(BAD))
    other = _backbone(ckpts[1])
    other_calls = _count_encodes(monkeypatch, other)
    o, _ = _run(other, index, tmp_path, view=ViewSpec.train_views(2, seed=1))
    assert sum(other_calls) == 2 * (len(index) - len(BAD))
    assert o.extra["backbone"]["weights_sha256"] != bb.weights_sha256()
    dirs = sorted(p for p in cache.iterdir() if p.is_dir())
    assert len(dirs) == 4 and len({p.name.rsplit("-", 1)[1] for p in dirs}) == 4
    # a manifest whose key is not the one asked for is refused, never reused
    target = next(p for p in dirs if "train-v2-s2" in p.name)
    doc = store_manifest(target)
    doc["key"]["index_hash"] = "0" * 64
    (target / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(CroftError, match="written for another key"):
        _run(bb, index, tmp_path, view=ViewSpec.train_views(2, seed=2))


def test_resume_after_kill_is_byte_identical(ckpts, index, tmp_path, monkeypatch):
    bb = _backbone(ckpts[0])
    view = ViewSpec.train_views(2, seed=3)
    _, ref = _run(bb, index, tmp_path, "ref", view=view, cache_dir=tmp_path / "ref-cache")

    real_write = store_mod._write_shard
    written: list[str] = []

    def write_then_die(path, *args):
        real_write(path, *args)
        written.append(path.name)
        path.with_name(f".{path.name}.999.tmp").write_bytes(b"half")  # a killed write's leftover
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod, "_write_shard", write_then_die)
    with pytest.raises(ExtractionInterrupted) as err:
        _run(bb, index, tmp_path, "resumed", view=view)
    assert written == ["shard-00000.safetensors"] and (err.value.done, err.value.total) == (1, 4)
    assert not (tmp_path / "resumed.safetensors").exists()
    monkeypatch.setattr(store_mod, "_write_shard", real_write)
    calls = _count_encodes(monkeypatch, bb)
    _, out = _run(bb, index, tmp_path, "resumed", view=view)
    bad_in_shard0 = sum(r.path in BAD for r in index.records[:8])
    assert sum(calls) == 2 * (len(index) - 8 - (len(BAD) - bad_in_shard0))
    assert out.read_bytes() == ref.read_bytes()
    assert not list(err.value.directory.glob(".*.tmp"))
    manifest = store_manifest(err.value.directory)
    assert manifest["complete"] and manifest["num_shards"] == 4


def test_bad_images_skipped_listed_or_strict(ckpts, index, tmp_path, caplog):
    bb = _backbone(ckpts[0])
    fs, _ = _run(bb, index, tmp_path)
    # the library logs its warning (the CLI shows it as one "croft: warning:" line)
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 1 and "skipped 2 undecodable images" in lines[0]
    doc = store_manifest(Path(lines[0].split("listed in ")[1].rstrip(")")).parent)
    assert doc["num_skipped"] == 2 and doc["num_kept"] == len(fs) == len(index) - 2
    assert {d["path"] for d in doc["skipped"]} == BAD
    assert all("cannot read image" in d["error"] for d in doc["skipped"])
    for cache in ("strict-cache", "cache"):  # fresh extraction, then from finished shards
        with pytest.raises(CroftError, match="empty.png") as exc:
            _run(bb, index, tmp_path, strict=True, cache_dir=tmp_path / cache)
        assert "--strict" in str(exc.value)


def _extract_argv(ckpt: Path, root: Path, out: Path, cache: Path) -> list[str]:
    return [
        "extract", "--backbone", f"openclip:{TINY_VIT}:{ckpt}", "--root", str(root),
        "--layout", "domainbed", "--views", "2", "--seed", "4", "--templates", *TEMPLATES,
        "--out", str(out), "--cache", str(cache), "--batch-size", "4", "--shard-size", "6",
        "--workers", "0", "--quiet",
    ]  # fmt: skip


def test_cli_extract(ckpts, root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "f.safetensors"
    argv = _extract_argv(ckpts[0], root, out, tmp_path / "c")
    assert main([*argv, "--domains", "photo", "--option", "split=all"]) == 0
    printed = capsys.readouterr()
    assert f"to {out}" in printed.out and "skipped 1 undecodable image " in printed.err
    fs = load_features(out)
    assert fs.features.shape == (PER_CLASS * len(CLASSES), 2, 32)
    assert fs.text_features.shape == (3, 2, 32) and set(fs.domains.tolist()) == {1}
    assert fs.extra["domains"] == ["photo"] and fs.extra["layout"] == "domainbed"

    def err_line(args: list[str], match: str) -> None:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("croft: error: ") and "\n" not in err and match in err, err

    err_line([*argv, "--split", "train"], "splits present: all")
    err_line([*argv, "--strict"], "empty.png")
    err_line([a for a in argv if a != "--views" and a != "2"], "--seed sets the seed")
    err_line([*argv, "--templates", "no braces"], "must hold exactly one")

    def die(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod, "_write_shard", die)
    assert main([*argv, "--cache", str(tmp_path / "c2")]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ranks_share_shards_in_process(ckpts, index, tmp_path, monkeypatch):
    """Shard s belongs to rank s % world; rank 0 assembles after the barrier (simulated)."""
    import contextlib

    from croft.features.extract import DistContext

    bb = _backbone(ckpts[0])
    view = ViewSpec.train_views(2, seed=3)
    _, ref = _run(bb, index, tmp_path, "ref", view=view, cache_dir=tmp_path / "ref-cache")
    written: list[str] = []
    real_write = store_mod._write_shard

    def record(path, *args):
        written.append(path.name)
        real_write(path, *args)

    monkeypatch.setattr(store_mod, "_write_shard", record)
    for rank in (1, 0):
        ctx = DistContext(rank=rank, world_size=2)
        monkeypatch.setattr(store_mod, "dist_context", lambda _d, c=ctx: contextlib.nullcontext(c))
        fs, out = _run(bb, index, tmp_path, "two", view=view)
        assert (fs is None) == (rank == 1) and out.exists() == (rank == 0)
    assert written == [f"shard-0000{s}.safetensors" for s in (1, 3, 0, 2)]
    assert out.read_bytes() == ref.read_bytes()


# ~35 s on 2 shared cores (each rank imports open_clip): kept in CI on purpose
def test_torchrun_two_ranks_match_one_process(ckpts, root, tmp_path):
    single = tmp_path / "single.safetensors"
    assert main(_extract_argv(ckpts[0], root, single, tmp_path / "c1")) == 0
    dist_out = tmp_path / "dist.safetensors"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "croft",
        *_extract_argv(ckpts[0], root, dist_out, tmp_path / "c2"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert dist_out.read_bytes() == single.read_bytes()
    assert proc.stdout.count("wrote features") == 1  # rank 0 only
    (store,) = (tmp_path / "c2").iterdir()
    assert store_manifest(store)["world_size"] == 2
    assert len(list(store.glob("shard-*.safetensors"))) == 6
