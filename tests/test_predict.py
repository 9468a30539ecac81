"""Prediction on raw images: ``croft.load(dir).predict`` and ``croft predict``.

A random-init tiny open_clip backbone, a few PNGs, features through the store, a zero-shot
head fitted with ``croft fit`` (which stores backbone_spec, fingerprint and threshold).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import croft
from croft.backbones import TINY_VIT, load_backbone
from croft.cli.main import main
from croft.data import read_layout
from croft.errors import CroftError
from croft.features import extract_features, kept_indices
from croft.predict import Prediction, Predictor, load_predictor

CLASSES, PER_CLASS = ("cat", "dog", "fish"), 3
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CROFT_CACHE_DIR", str(tmp_path_factory.mktemp("croft-cache")))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ckpts(tiny_ckpts) -> tuple[Path, Path]:
    """Two random-init tiny checkpoints (seeds 0 and 1), shared via conftest."""
    return tiny_ckpts


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Class folders: 3 classes x 3 small PNGs (one RGBA) of varying size."""
    root = tmp_path_factory.mktemp("imgs")
    g = torch.Generator().manual_seed(0)
    for c in CLASSES:
        (root / c).mkdir()
        for k in range(PER_CLASS):
            arr = (torch.rand(30 + 4 * k, 40 - 3 * k, 3, generator=g) * 255).to(torch.uint8)
            im = Image.fromarray(arr.numpy())
            (im.convert("RGBA") if k == 2 else im).save(root / c / f"{k}.png")
    return root


@pytest.fixture(scope="module")
def fitted(ckpts, root, tmp_path_factory):
    """(head dir, eval FeatureSet, image paths in feature order)."""
    tmp = tmp_path_factory.mktemp("fit")
    bb = load_backbone(f"openclip:{TINY_VIT}:{ckpts[0]}")
    index = read_layout(root, "folder")
    feats = tmp / "train.safetensors"
    fs = extract_features(
        bb, index, templates=TEMPLATES, out=feats, cache_dir=tmp / "cache", progress=False
    )
    head_dir = tmp / "head"
    args = ["fit", "--train", str(feats), "--val", str(feats), "--method", "zeroshot"]
    assert main([*args, "--out", str(head_dir), "--quiet"]) == 0
    paths = [str(root / index.records[i].path) for i in kept_indices(fs).tolist()]
    return head_dir, fs, paths


def _edit_head(src: Path, dst: Path, **changes) -> Path:
    """A copy of head dir ``src`` with head.json keys changed (value None: removed)."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "head.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    (dst / "head.json").write_text(json.dumps(meta))
    return dst


def test_fit_stores_backbone_spec(fitted, ckpts):
    head_dir, fs, _ = fitted
    meta = json.loads((head_dir / "head.json").read_text())
    assert meta["backbone_spec"] == f"openclip:{TINY_VIT}:{ckpts[0]}" == fs.extra["backbone_spec"]
    assert meta["backbone"] == fs.extra["backbone"]
    assert meta["ood_threshold"]["score"] == "energy"


def test_load_predicts_paths_and_pil_like_the_head(fitted):
    head_dir, fs, paths = fitted
    pred = croft.load(head_dir)
    assert isinstance(pred, Predictor) and pred.class_names == list(CLASSES)
    head = pred.head
    with torch.no_grad():
        logits = head.logits(head.check_features(fs.features))
    want_idx = head.predict(fs.features).tolist()
    want_energy = torch.logsumexp(logits, dim=1)
    want_conf = torch.softmax(logits, dim=1).amax(dim=1)
    theta = pred.threshold
    assert theta == pytest.approx(head.meta["ood_threshold"]["value"])

    by_path = pred.predict(paths, batch_size=4)  # batches of 4, 4, 1
    pil = [Image.open(p) for p in paths]
    by_pil = pred.predict(pil)
    for preds in (by_path, by_pil):
        assert [p.class_index for p in preds] == want_idx
        assert [p.class_name for p in preds] == [CLASSES[i] for i in want_idx]
        got_e = torch.tensor([p.energy for p in preds])
        torch.testing.assert_close(got_e, want_energy, atol=1e-4, rtol=1e-4)
        got_c = torch.tensor([p.confidence for p in preds])
        torch.testing.assert_close(got_c, want_conf, atol=1e-5, rtol=1e-4)
        assert all(p.threshold == theta for p in preds)
        assert [p.is_ood for p in preds] == [p.energy < theta for p in preds]
    assert [p.source for p in by_path] == paths
    assert [p.source for p in by_pil] == paths  # PIL keeps the file name
    assert sum(p.is_ood for p in by_path) <= 2  # the threshold keeps 95% of this ID set
    # a single item, an in-memory image without a name, and precomputed features
    one = pred.predict(Image.fromarray(torch.zeros(20, 20, 3, dtype=torch.uint8).numpy()))
    assert len(one) == 1 and one[0].source == "<image 0>"
    feats = pred.predict_features(fs.features[:2], sources=["a", "b"])
    assert [(p.source, p.class_index) for p in feats] == [("a", want_idx[0]), ("b", want_idx[1])]
    assert isinstance(feats[0], Prediction) and set(feats[0].to_dict()) >= {"energy", "is_ood"}


def test_ood_flag_follows_the_stored_threshold(fitted, tmp_path):
    head_dir, fs, paths = fitted
    thr = {"score": "energy", "tpr": 0.95}
    high = _edit_head(head_dir, tmp_path / "high", ood_threshold={**thr, "value": 1e9})
    low = _edit_head(head_dir, tmp_path / "low", ood_threshold={**thr, "value": -1e9})
    none = _edit_head(head_dir, tmp_path / "none", ood_threshold=None)
    bb = croft.load(head_dir).backbone
    assert all(p.is_ood for p in load_predictor(high, backbone=bb).predict(paths[:3]))
    assert not any(p.is_ood for p in load_predictor(low, backbone=bb).predict(paths[:3]))
    res = load_predictor(none, backbone=bb).predict(paths[:3])
    assert all(p.is_ood is None and p.threshold is None for p in res)
    knn = _edit_head(head_dir, tmp_path / "knn", ood_threshold={"score": "knn", "value": 0})
    with pytest.raises(CroftError, match="energy"):
        croft.load(knn)


def test_cli_table_and_jsonl(fitted, root, capsys):
    head_dir, _, paths = fitted
    want = [p.class_name for p in croft.load(head_dir).predict(paths)]

    assert main(["predict", str(head_dir), str(root), "--batch-size", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["image", "class", "confidence", "energy", "ood"]
    rows = [line.split() for line in out[2:]]
    assert [r[0] for r in rows] == paths  # directory expanded, sorted like the index
    assert [r[1] for r in rows] == want and {r[4] for r in rows} <= {"ID", "OOD"}

    assert main(["predict", str(head_dir), paths[0], paths[4], "--format", "jsonl"]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["source"] for d in docs] == [paths[0], paths[4]]
    assert [d["class_name"] for d in docs] == [want[0], want[4]]
    assert set(docs[0]) == {
        "source",
        "class_name",
        "class_index",
        "confidence",
        "energy",
        "is_ood",
        "threshold",
    }


def test_cli_bad_file_and_skip_bad(fitted, tmp_path, capsys):
    head_dir, _, paths = fitted
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert main(["predict", str(head_dir), paths[0], str(bad)]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("croft: error: cannot read image")
    assert str(bad) in err[0] and "--skip-bad" in err[0]

    assert main(["predict", str(head_dir), str(bad), paths[0], "--skip-bad", "--format=jsonl"]) == 0
    cap = capsys.readouterr()
    assert [json.loads(line)["source"] for line in cap.out.splitlines()] == [paths[0]]
    assert str(bad) in cap.err and "skipped" in cap.err

    assert main(["predict", str(head_dir), str(bad), "--skip-bad"]) == 2
    assert "none of the 1 files" in capsys.readouterr().err
    with pytest.raises(CroftError, match="cannot read image"):
        croft.load(head_dir).predict([str(bad)])


def test_backbone_mismatch_and_missing_spec(fitted, ckpts, tmp_path, capsys):
    head_dir, _, paths = fitted
    other = f"openclip:{TINY_VIT}:{ckpts[1]}"
    assert main(["predict", str(head_dir), paths[0], "--backbone", other]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights_sha256" in err[0] and "--backbone" in err[0]
    with pytest.raises(CroftError, match="differs from the one this head was fitted on"):
        load_predictor(head_dir, backbone=other, lazy=False)
    lazy = croft.load(head_dir, backbone=other)  # lazy: checked on first image prediction
    with pytest.raises(CroftError, match="weights_sha256"):
        lazy.predict(paths[:1])

    nospec = _edit_head(head_dir, tmp_path / "nospec", backbone_spec=None)
    assert main(["predict", str(nospec), paths[0]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names no backbone" in err[0] and "--backbone SPEC" in err[0]
    # --backbone with the right weights works for such a head
    right = f"openclip:{TINY_VIT}:{ckpts[0]}"
    assert main(["predict", str(nospec), paths[0], "--backbone", right]) == 0
    capsys.readouterr()


def test_fit_and_save_from_python_matches_croft_fit(fitted, ckpts, tmp_path):
    """A head fitted and saved from Python carries what ``croft fit`` records and predicts
    images with an OOD flag through ``croft.load``."""
    from croft.methods import fit, fit_and_save, save_head

    head_dir, fs, paths = fitted
    cli = json.loads((head_dir / "head.json").read_text())
    result, out = fit_and_save("zeroshot", fs, tmp_path / "py", fs)
    meta = json.loads((out / "head.json").read_text())
    for key in ("backbone_spec", "backbone", "prompts", "ood_threshold", "config", "method"):
        assert meta[key] == cli[key], key
    assert (out / "config.json").is_file()

    # a trained method through fit + save_head: selection record and threshold included
    trained = fit("ce_adapter", fs, fs, epochs=2, batch_size=4)
    save_head(trained.head, tmp_path / "ce")
    meta = json.loads((tmp_path / "ce" / "head.json").read_text())
    assert meta["backbone_spec"] == f"openclip:{TINY_VIT}:{ckpts[0]}"
    assert meta["selection"] == trained.selection and meta["selection"]["select_epoch"] == "best"
    assert len(meta["history"]) == 2 and meta["ood_threshold"]["score"] == "energy"
    pred = croft.load(tmp_path / "ce")
    assert pred.threshold == pytest.approx(meta["ood_threshold"]["value"])
    by_feats = pred.predict_features(fs.features[:3])
    by_images = pred.predict(paths[:3])
    assert all(isinstance(p.is_ood, bool) for p in by_feats + by_images)
    assert [p.class_index for p in by_images] == trained.head.predict(fs.features[:3]).tolist()


def test_cli_out_csv_and_jsonl_files(fitted, root, tmp_path, capsys):
    """``--out preds.csv|jsonl`` keeps what the table shows; a wrong suffix is one line."""
    import csv

    head_dir, _, paths = fitted
    want = croft.load(head_dir).predict(paths)
    out_csv, out_jsonl = tmp_path / "p" / "preds.csv", tmp_path / "preds.jsonl"
    assert main(["predict", str(head_dir), str(root), "--out", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["source"] for r in rows] == paths
    assert [r["class_name"] for r in rows] == [p.class_name for p in want]
    assert float(rows[0]["energy"]) == pytest.approx(want[0].energy, rel=1e-6)
    assert {r["is_ood"] for r in rows} <= {"True", "False"}
    assert main(["predict", str(head_dir), paths[1], "--out", str(out_jsonl)]) == 0
    (doc,) = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert doc["source"] == paths[1] and doc["class_name"] == want[1].class_name
    capsys.readouterr()
    assert main(["predict", str(head_dir), paths[1], "--out", str(tmp_path / "p.txt")]) == 2
    assert "name the file .csv or .jsonl" in capsys.readouterr().err
    assert not (tmp_path / "p.txt").exists()


def test_cli_escapes_control_characters_in_file_names(fitted, tmp_path, capsys):
    """A file named with an ESC sequence and a newline reaches the terminal escaped (table,
    jsonl, the skipped line and the one-line error), never as the raw bytes."""
    head_dir, _, paths = fitted
    evil = tmp_path / "red\x1b[31mname\nfake line\x9b.png"
    shutil.copyfile(paths[0], evil)
    bad = tmp_path / "bad\x1b[2Jname\n.png"
    bad.write_text("not an image")

    assert main(["predict", str(head_dir), str(evil)]) == 0
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert len(lines) == 3 and "\x1b" not in cap.out and "\x9b" not in cap.out
    assert lines[2].split()[0] == str(tmp_path) + "/red\\x1b[31mname\\nfake"
    assert "line\\x9b.png" in lines[2]

    assert main(["predict", str(head_dir), str(evil), "--format", "jsonl"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and "\x1b" not in out and "\x9b" not in out
    assert json.loads(out)["source"] == str(evil)  # still valid JSON, the name intact

    assert main(["predict", str(head_dir), str(evil), str(bad), "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "bad\\x1b[2Jname" in err

    assert main(["predict", str(head_dir), str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "\x1b" not in err
    assert "bad\\x1b[2Jname" in err
