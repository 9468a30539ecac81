"""croft.data: index, layouts, split generation, class filters, few-shot, image loading."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from croft.data import (
    CALTECH101_DROPPED_FOR_PACS,
    CALTECH101_DROPPED_FOR_VLCS,
    BadImageError,
    DatasetIndex,
    Record,
    check_layout,
    few_shot,
    few_shot_authors_balance,
    generate_lodo_splits,
    imagenet_class_split,
    inspect_layout,
    load_image,
    read_layout,
    restrict_to_classes,
)
from croft.errors import CroftError

# CoOp's 100 Caltech-101 class names (101_ObjectCategories minus BACKGROUND_Google and
# Faces_easy; airplanes/Faces/Leopards/Motorbikes renamed).
COOP_CALTECH = (  # noqa: SIM905
    "accordion airplane anchor ant barrel bass beaver binocular bonsai brain "
    "brontosaurus buddha butterfly camera cannon car_side ceiling_fan cellphone chair "
    "chandelier cougar_body cougar_face crab crayfish crocodile crocodile_head cup "
    "dalmatian dollar_bill dolphin dragonfly electric_guitar elephant emu euphonium ewer "
    "face ferry flamingo flamingo_head garfield gerenuk gramophone grand_piano hawksbill "
    "headphone hedgehog helicopter ibis inline_skate joshua_tree kangaroo ketch lamp "
    "laptop leopard llama lobster lotus mandolin mayfly menorah metronome minaret "
    "motorbike nautilus octopus okapi pagoda panda pigeon pizza platypus pyramid "
    "revolver rhino rooster saxophone schooner scissors scorpion sea_horse snoopy "
    "soccer_ball stapler starfish stegosaurus stop_sign strawberry sunflower tick "
    "trilobite umbrella watch water_lilly wheelchair wild_cat windsor_chair wrench "
    "yin_yang"
).split()
CALTECH_FOLDERS = {
    "airplane": "airplanes",
    "face": "Faces",
    "leopard": "Leopards",
    "motorbike": "Motorbikes",
}


# ----------------------------------------------------------------------------- helpers
def img(path: Path, size=(4, 4), color=(200, 10, 10), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def make_domainbed(root: Path, counts: dict[tuple[str, str], int]) -> Path:
    for (dom, cls), n in counts.items():
        for i in range(n):
            img(root / dom / cls / f"{i:03d}.png")
    return root


def make_pacs(root: Path) -> Path:
    """images/<domain>/<class>/ with unequal group sizes (3 domains x 2 classes)."""
    counts = {
        ("art_painting", "dog"): 10,
        ("art_painting", "horse"): 5,
        ("cartoon", "dog"): 7,
        ("cartoon", "horse"): 3,
        ("photo", "dog"): 4,
        ("photo", "horse"): 1,
    }
    make_domainbed(root / "images", counts)
    return root


def write_split(path: Path, train=(), val=(), test=()) -> None:
    path.write_text(json.dumps({"train": list(train), "val": list(val), "test": list(test)}))


def index_of(records, classes, domains, root=Path("/data/x")) -> DatasetIndex:
    return DatasetIndex(root, records, classes, domains)


# ----------------------------------------------------------------------------- index
def test_index_hash_is_root_independent_and_content_sensitive(tmp_path: Path) -> None:
    recs = [Record("a/x.png", 0, "cat", "d1", "train"), Record("b/y.png", 1, "dog", "d2", "test")]
    a = index_of(recs, ["cat", "dog"], ["d1", "d2"], root=tmp_path / "one")
    b = index_of(recs, ["cat", "dog"], ["d1", "d2"], root=tmp_path / "two")
    assert a.hash() == b.hash() and len(a.hash()) == 64
    c = index_of([recs[0], Record("b/y.png", 1, "dog", "d2", "val")], ["cat", "dog"], ["d1", "d2"])
    assert c.hash() != a.hash()
    assert a.labels() == [0, 1] and a.domain_ids() == [0, 1] and len(a) == 2


def test_index_validation_errors() -> None:
    with pytest.raises(CroftError, match="outside"):
        index_of([Record("a/x.png", 2, "cat", "d", "train")], ["cat"], ["d"])
    with pytest.raises(CroftError, match="names class"):
        index_of([Record("a/x.png", 0, "dog", "d", "train")], ["cat"], ["d"])
    with pytest.raises(CroftError, match="not in domain_names"):
        index_of([Record("a/x.png", 0, "cat", "e", "train")], ["cat"], ["d"])
    with pytest.raises(CroftError, match="relative"):
        index_of([Record("/abs/x.png", 0, "cat", "d", "train")], ["cat"], ["d"])
    with pytest.raises(CroftError, match=r"'\.\.'"):
        index_of([Record("a/../../x.png", 0, "cat", "d", "train")], ["cat"], ["d"])


def test_index_filter() -> None:
    recs = [
        Record("a/1.png", 0, "cat", "d1", "train"),
        Record("a/2.png", 1, "dog", "d1", "val"),
        Record("b/3.png", 1, "dog", "d2", "train"),
        Record("b/4.png", -1, "zebra", "d2", "test"),
    ]
    idx = index_of(recs, ["cat", "dog"], ["d1", "d2"])
    assert [r.path for r in idx.filter(split="train").records] == ["a/1.png", "b/3.png"]
    assert len(idx.filter(split=["train", "val"], domains="d1")) == 2
    assert [r.path for r in idx.filter(labels=[1]).records] == ["a/2.png", "b/3.png"]
    assert idx.filter(labels=-1).records[0].class_name == "zebra"
    assert idx.filter(domains="d2").class_names == ["cat", "dog"]  # lists are kept
    with pytest.raises(CroftError, match="unknown domain"):
        idx.filter(domains="d3")


def test_index_save_load_relative_and_atomic(tmp_path: Path) -> None:
    data = make_domainbed(tmp_path / "ds", {("d1", "cat"): 2, ("d2", "dog"): 1})
    idx = read_layout(data, "domainbed")
    out = tmp_path / "meta" / "index.json"
    idx.save(out)
    text = out.read_text()
    assert str(tmp_path) not in text  # relative paths only
    assert [p.name for p in out.parent.iterdir()] == ["index.json"]  # no temp file left
    back = DatasetIndex.load(out)
    assert back.records == idx.records and back.hash() == idx.hash()
    assert back.root.resolve() == data.resolve()
    # move the whole tree: the relative root still resolves
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "ds").rename(moved / "ds")
    (tmp_path / "meta").rename(moved / "meta")
    again = DatasetIndex.load(moved / "meta" / "index.json")
    assert (again.root / again.records[0].path).is_file()
    # hand-edited content is refused
    doc = json.loads((moved / "meta" / "index.json").read_text())
    doc["records"][0][1] = 1
    doc["records"][0][2] = "dog"
    (moved / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(CroftError, match="stored hash"):
        DatasetIndex.load(moved / "bad.json")
    (moved / "junk.json").write_text("{not json")
    with pytest.raises(CroftError, match="not valid JSON"):
        DatasetIndex.load(moved / "junk.json")


# ----------------------------------------------------------------------------- domainbed
def test_domainbed_reader(tmp_path: Path) -> None:
    root = make_domainbed(tmp_path, {("sketch", "zebra"): 2, ("photo", "ant"): 1})
    img(root / "photo" / "zebra" / "UP.JPG")  # upper-case extension counts
    img(root / "photo" / "zebra" / "sub" / "deep.webp")  # nested images count
    (root / "photo" / "zebra" / ".hidden.png").write_bytes(b"x")  # hidden: ignored
    (root / "photo" / "zebra" / "notes.txt").write_text("x")  # not an image: ignored
    (root / ".git").mkdir()  # hidden folder: not a domain
    idx = read_layout(root, "domainbed")
    assert idx.class_names == ["ant", "zebra"] and idx.domain_names == ["photo", "sketch"]
    assert [r.path for r in idx.records] == [
        "photo/ant/000.png",
        "photo/zebra/UP.JPG",
        "photo/zebra/sub/deep.webp",
        "sketch/zebra/000.png",
        "sketch/zebra/001.png",
    ]
    assert idx.labels() == [0, 1, 1, 1, 1] and idx.domain_ids() == [0, 0, 0, 1, 1]
    assert {r.split for r in idx.records} == {"all"}
    assert check_layout(root, "domainbed") == []


def test_domainbed_problems(tmp_path: Path) -> None:
    root = make_domainbed(tmp_path / "r", {("d1", "cat"): 1})
    (root / "d1" / "empty").mkdir()
    img(root / "d2" / "loose.png")
    problems = check_layout(root, "domainbed")
    assert len(problems) == 2
    assert any("has no images" in p and "empty" in p for p in problems)
    assert any("no class folders" in p and "loose image" in p for p in problems)
    with pytest.raises(CroftError, match="has no images"):
        read_layout(root, "domainbed")
    with pytest.raises(CroftError, match="does not exist"):
        read_layout(tmp_path / "nope", "domainbed")
    with pytest.raises(CroftError, match="unknown dataset layout 'voc'"):
        check_layout(root, "voc")
    with pytest.raises(CroftError, match="do not apply to layout 'domainbed'"):
        check_layout(root, "domainbed", dataset="dtd")


# ----------------------------------------------------------------------------- folder
def test_folder_layout(tmp_path: Path) -> None:
    root = tmp_path / "noise"
    img(root / "b" / "1.png")
    img(root / "b" / "2.png")
    img(root / "a" / "1.png")
    idx = read_layout(root, "folder")
    assert idx.class_names == ["a", "b"] and idx.labels() == [0, 1, 1]
    assert idx.domain_names == ["noise"]
    ood = read_layout(root, "folder", ood=True, domain="textures")
    assert ood.labels() == [-1, -1, -1] and ood.class_names == []
    assert ood.domain_names == ["textures"] and ood.records[0].class_name == "a"
    img(root / "loose.png")
    assert any("directly in" in p for p in check_layout(root, "folder"))
    assert "loose.png" in [r.path for r in read_layout(root, "folder", ood=True).records]
    flat = tmp_path / "flat"
    img(flat / "x.png")
    assert read_layout(flat, "folder", ood=True).records[0].path == "x.png"
    with pytest.raises(CroftError, match="directly in"):
        read_layout(flat, "folder")


# ----------------------------------------------------------------------------- oodbench
def test_generate_lodo_splits(tmp_path: Path) -> None:
    root = make_pacs(tmp_path / "PACS")
    written = generate_lodo_splits(root, val_fraction=0.2, seed=1)
    assert sorted(p.name for p in written) == [
        "test_on_art_painting.json",
        "test_on_cartoon.json",
        "test_on_photo.json",
    ]
    all_paths = {r.path for r in read_layout(root / "images", "domainbed").records}
    val_sets = []
    for path in written:
        text = path.read_text()
        assert str(tmp_path) not in text
        doc = json.loads(text)
        held = path.stem.removeprefix("test_on_")
        test = {e[0] for e in doc["test"]}
        train, val = {e[0] for e in doc["train"]}, {e[0] for e in doc["val"]}
        assert all(p.startswith(held + "/") for p in test)
        assert not any(p.startswith(held + "/") for p in train | val)
        assert train | val | test == all_paths and not (train & val)
        for e in doc["train"] + doc["val"] + doc["test"]:
            assert e[1] == ["dog", "horse"].index(e[2]) and e[0].split("/")[1] == e[2]
        # stratified: per (domain, class) val = round-half-up(0.2 n), at least 1 left in train
        groups = Counter(tuple(p.split("/")[:2]) for p in train | val)
        vgroups = Counter(tuple(p.split("/")[:2]) for p in val)
        for g, n in groups.items():
            assert vgroups[g] == min(int(n * 0.2 + 0.5), n - 1), g
        val_sets.append(val)
    # a source image is in val in every file or in none
    v_art = {p for p in val_sets[1] if p.startswith("art_painting/")}
    assert v_art == {p for p in val_sets[2] if p.startswith("art_painting/")}
    assert v_art  # 10 dogs -> 2 val, 5 horses -> 1 val
    before = {p.name: p.read_bytes() for p in written}
    assert generate_lodo_splits(root) == []  # existing files kept
    again = generate_lodo_splits(root, seed=1, overwrite=True)
    assert {p.name: p.read_bytes() for p in again} == before  # deterministic
    generate_lodo_splits(root, seed=2, overwrite=True)
    assert {p.name: p.read_bytes() for p in again} != before  # seed matters
    with pytest.raises(CroftError, match="val_fraction"):
        generate_lodo_splits(root, val_fraction=1.0)


def test_oodbench_reader(tmp_path: Path) -> None:
    root = make_pacs(tmp_path / "PACS")
    generate_lodo_splits(root)
    idx = read_layout(root, "oodbench", test_domain="PHOTO")  # case-insensitive
    assert idx.root == root / "images"
    assert idx.class_names == ["dog", "horse"]
    assert idx.domain_names == ["art_painting", "cartoon", "photo"]
    assert {r.domain for r in idx.filter(split="test").records} == {"photo"}
    assert len(idx.filter(split="test")) == 5 and len(idx) == 30
    assert all((idx.root / r.path).is_file() for r in idx.records)
    assert check_layout(root, "oodbench") == []
    assert check_layout(root, "oodbench", test_domain="cartoon") == []
    with pytest.raises(CroftError, match="needs test_domain"):
        read_layout(root, "oodbench")
    with pytest.raises(CroftError, match="test domain 'sun' not found"):
        read_layout(root, "oodbench", test_domain="sun")


def test_oodbench_upper_case_domains_b12(tmp_path: Path) -> None:
    root = tmp_path / "VLCS"
    make_domainbed(root / "images", {("CALTECH", "bird"): 2, ("SUN", "bird"): 2})
    write_split(
        root / "test_on_caltech.json",
        train=[["SUN/bird/000.png", 0, "bird"]],
        val=[["SUN/bird/001.png", 0, "bird"]],
        test=[["CALTECH/bird/000.png", 0, "bird"], ["CALTECH/bird/001.png", 0, "bird"]],
    )
    idx = read_layout(root, "oodbench", test_domain="caltech")
    assert [r.domain for r in idx.records] == ["SUN", "SUN", "CALTECH", "CALTECH"]
    assert idx.domain_ids() == [1, 1, 0, 0]


def test_oodbench_problems(tmp_path: Path) -> None:
    root = make_pacs(tmp_path / "PACS")
    generate_lodo_splits(root)
    (root / "test_on_cartoon.json").unlink()
    problems = check_layout(root, "oodbench")
    assert len(problems) == 1 and "croft data splits" in problems[0]
    with pytest.raises(CroftError, match="test_on_cartoon.json not found"):
        read_layout(root, "oodbench", test_domain="cartoon")

    ok = ["art_painting/dog/000.png", 0, "dog"]
    write_split(
        root / "test_on_photo.json",
        train=[
            ok,
            ["art_painting/dog/999.png", 0, "dog"],
            ["art_painting/horse/000.png", 1, "human"],
        ],
        val=[["cartoon/dog/000.png", 3, "dog"], "garbage"],
        test=[["photo/dog/000.png", 0, "dog"], ["cartoon/dog/001.png", 0, "dog"]],
    )
    problems = check_layout(root, "oodbench", test_domain="photo")
    text = "\n".join(problems)
    assert "malformed entry" in text
    assert "class 'dog' has several labels [0, 3]" in text
    assert "no entry has label(s) [2]" in text
    assert "'human' in folder 'horse'" in text
    assert "1 relpath in split file" in text and "999.png" in text
    assert "wrong side" in text
    assert all("\n" not in p for p in problems)
    with pytest.raises(CroftError, match="malformed"):
        read_layout(root, "oodbench", test_domain="photo")
    (root / "test_on_photo.json").write_text('{"train": []}')
    with pytest.raises(CroftError, match="missing val, test"):
        read_layout(root, "oodbench", test_domain="photo")
    write_split(root / "test_on_photo.json", test=[["nowhere/dog/0.png", 0, "dog"]])
    with pytest.raises(CroftError, match="unknown domain folder"):
        read_layout(root, "oodbench", test_domain="photo")
    with pytest.raises(CroftError, match=r"test domain 'photo' not found .*\['PACS'\]"):
        read_layout(tmp_path, "oodbench", test_domain="photo")  # one folder too high


# ----------------------------------------------------------------------------- coop
def make_coop(data: Path, folder: str, images: str, split_file: str, classes, per_class=1):
    base = data / folder
    entries = []
    for label, cls in enumerate(classes):
        sub = CALTECH_FOLDERS.get(cls, cls)
        for i in range(per_class):
            img(base / images / sub / f"image_{i:04d}.jpg")
            entries.append([f"{sub}/image_{i:04d}.jpg", label, cls])
    split = {"train": entries[0::3], "val": entries[1::3], "test": entries[2::3]}
    (base / split_file).write_text(json.dumps(split))
    return base


def test_coop_dtd_reader(tmp_path: Path) -> None:
    base = make_coop(
        tmp_path, "dtd", "images", "split_zhou_DescribableTextures.json", ["banded", "woven"], 5
    )
    for root in (tmp_path, base):  # $DATA or $DATA/dtd
        idx = read_layout(root, "coop", dataset="dtd")
        assert idx.root == base / "images" and idx.class_names == ["banded", "woven"]
        assert len(idx) == 10 and idx.domain_names == ["dtd"]
        assert Counter(r.split for r in idx.records) == {"train": 4, "val": 3, "test": 3}
    a = read_layout(tmp_path, "coop", dataset="dtd", max_per_class=3, seed=1)
    b = read_layout(tmp_path, "coop", dataset="dtd", max_per_class=3, seed=1)
    c = read_layout(tmp_path, "coop", dataset="dtd", max_per_class=3, seed=7)
    assert Counter(a.labels()) == {0: 3, 1: 3} and a.records == b.records
    assert a.records != c.records
    ood = read_layout(tmp_path, "coop", dataset="DTD", ood=True)
    assert set(ood.labels()) == {-1} and ood.class_names == []
    with pytest.raises(CroftError, match="caltech101 only"):
        read_layout(tmp_path, "coop", dataset="dtd", exclude_overlap_with="pacs")
    with pytest.raises(CroftError, match="needs dataset="):
        check_layout(tmp_path, "coop")
    with pytest.raises(CroftError, match="unknown CoOp dataset"):
        check_layout(tmp_path, "coop", dataset="cifar")
    with pytest.raises(CroftError, match="split_zhou_Food101.json|food101 image folder"):
        read_layout(tmp_path, "coop", dataset="food101")


def test_coop_problems(tmp_path: Path) -> None:
    base = make_coop(tmp_path, "food-101", "images", "split_zhou_Food101.json", ["pho", "ramen"], 3)
    assert check_layout(tmp_path, "coop", dataset="food101") == []
    (base / "images" / "ramen" / "image_0000.jpg").unlink()
    doc = json.loads((base / "split_zhou_Food101.json").read_text())
    doc["test"].append(["pho/image_0001.jpg", 0, "ramen"])  # label 0 under two names
    (base / "split_zhou_Food101.json").write_text(json.dumps(doc))
    problems = check_layout(tmp_path, "coop", dataset="food-101")
    assert any("does not exist" in p and "ramen/image_0000.jpg" in p for p in problems)
    assert any("label 0 names several classes" in p for p in problems)
    (base / "split_zhou_Food101.json").unlink()
    with pytest.raises(CroftError, match="split_zhou_Food101.json not found"):
        read_layout(tmp_path, "coop", dataset="food101")


@pytest.mark.parametrize(
    ("overlap", "dropped", "kept"),
    [("pacs", CALTECH101_DROPPED_FOR_PACS, 92), ("vlcs", CALTECH101_DROPPED_FOR_VLCS, 84)],
)
def test_caltech_filters(tmp_path: Path, overlap: str, dropped, kept: int) -> None:
    assert len(COOP_CALTECH) == 100 and set(dropped) <= set(COOP_CALTECH)
    make_coop(
        tmp_path, "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", COOP_CALTECH
    )
    full = read_layout(tmp_path, "coop", dataset="caltech101")
    assert len(full.class_names) == 100
    assert {r.path.split("/")[0] for r in full.records if r.class_name == "airplane"} == {
        "airplanes"
    }
    idx = read_layout(tmp_path, "coop", dataset="caltech101", exclude_overlap_with=overlap)
    assert len(idx.class_names) == kept
    assert set(COOP_CALTECH) - set(idx.class_names) == set(dropped)
    assert idx.class_names == [c for c in COOP_CALTECH if c not in dropped]  # order kept
    assert sorted(set(idx.labels())) == list(range(kept))
    assert all(idx.class_names[r.label] == r.class_name for r in idx.records)
    # a split file without some of the dropped names is flagged (filter would not match)
    doc = json.loads((tmp_path / "caltech-101" / "split_zhou_Caltech101.json").read_text())
    for part in doc.values():
        for e in part:
            if e[2] == "snoopy":
                e[2] = "snoopy_dog"
                e[0] = "snoopy_dog/" + e[0].split("/")[1]
    (tmp_path / "caltech-101" / "101_ObjectCategories" / "snoopy").rename(
        tmp_path / "caltech-101" / "101_ObjectCategories" / "snoopy_dog"
    )
    (tmp_path / "caltech-101" / "split_zhou_Caltech101.json").write_text(json.dumps(doc))
    problems = check_layout(tmp_path, "coop", dataset="caltech101", exclude_overlap_with=overlap)
    assert len(problems) == 1 and "'snoopy'" in problems[0]


# ----------------------------------------------------------------------------- imagenet
WNIDS = ["n01", "n02", "n03", "n04", "n05"]
NAMES = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead"]


def make_imagenet(root: Path) -> Path:
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classnames.txt").write_text(
        "".join(f"{w} {n}\n" for w, n in zip(WNIDS, NAMES, strict=True))
    )
    for w in WNIDS:
        img(root / "train" / w / "a.JPEG")
        img(root / "train" / w / "b.JPEG")
        img(root / "val" / w / "c.JPEG")
    return root


def test_imagenet_reader_and_variants(tmp_path: Path) -> None:
    data = tmp_path / "data"
    root = make_imagenet(data / "imagenet")
    idx = read_layout(root, "imagenet")
    assert idx.class_names == NAMES and len(idx) == 15
    assert idx.records[0] == Record("train/n01/a.JPEG", 0, "tench", "imagenet", "train")
    assert Counter(r.split for r in idx.records) == {"train": 10, "val": 5}
    val_only = read_layout(root, "imagenet", splits=("val",))
    assert len(val_only) == 5

    for i in (0, 3):
        img(data / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / str(i) / "x.jpeg")
    img(data / "imagenet-sketch" / "images" / "n02" / "s.JPEG")
    img(data / "imagenet-adversarial" / "imagenet-a" / "n05" / "a.jpg")
    (data / "imagenet-adversarial" / "imagenet-a" / "README.txt").write_text("x")
    img(data / "imagenet-r" / "n04" / "r.jpg")
    v2 = read_layout(data, "imagenet", variant="imagenet_v2")
    assert [(r.path, r.label, r.class_name) for r in v2.records] == [
        ("0/x.jpeg", 0, "tench"),
        ("3/x.jpeg", 3, "tiger shark"),
    ]
    assert v2.domain_names == ["imagenet_v2"] and {r.split for r in v2.records} == {"test"}
    assert read_layout(data, "imagenet", variant="sketch").labels() == [1]
    a = read_layout(data, "imagenet", variant="imagenet-a")
    assert a.labels() == [4] and a.class_names == NAMES  # all classes kept, 1000-way
    assert read_layout(data, "imagenet", variant="r").records[0].path == "n04/r.jpg"
    # the variant folder itself as root, classnames given explicitly
    r_dir = data / "imagenet-r"
    assert len(read_layout(r_dir, "imagenet", variant="r", classnames=root / "classnames.txt")) == 1


def test_imagenet_problems(tmp_path: Path) -> None:
    root = make_imagenet(tmp_path / "imagenet")
    img(root / "val" / "n99" / "x.JPEG")
    img(tmp_path / "elsewhere" / "imagenet-r" / "n04" / "r.jpg")
    assert any("match no wnid" in p and "n99" in p for p in check_layout(root, "imagenet"))
    with pytest.raises(CroftError, match="match no wnid"):
        read_layout(root, "imagenet")
    with pytest.raises(CroftError, match="--classnames"):
        read_layout(tmp_path / "elsewhere" / "imagenet-r", "imagenet", variant="r")
    with pytest.raises(CroftError, match="unknown ImageNet variant"):
        read_layout(root, "imagenet", variant="c")
    (root / "classnames.txt").write_text("n01 tench\nn02 tench\nn03\n")
    problems = check_layout(root, "imagenet", splits=("train",))
    assert any("duplicate class name" in p for p in problems)
    assert any("without a class name" in p for p in problems)


def test_imagenet_class_split_matches_numpy_global_draw() -> None:
    names = [f"class {i:04d}" for i in range(1000)]
    for seed in (1, 2, 3):
        saved = np.random.get_state()
        try:
            np.random.seed(seed)
            expected = [str(c) for c in np.random.choice(names, int(1000 * 0.4), replace=False)]
        finally:
            np.random.set_state(saved)
        before = np.random.get_state()[1].copy()
        ids, rest = imagenet_class_split(names, seed)
        assert np.array_equal(np.random.get_state()[1], before)  # global RNG untouched
        assert ids == expected and len(ids) == 400  # draw order
        assert rest == [c for c in names if c not in set(expected)] and len(rest) == 600
    assert imagenet_class_split(names, 1)[0] != imagenet_class_split(names, 2)[0]
    with pytest.raises(CroftError, match="unique"):
        imagenet_class_split(["a", "a", "b"], 1)


def test_restrict_to_classes(tmp_path: Path) -> None:
    idx = read_layout(make_imagenet(tmp_path / "imagenet"), "imagenet", splits=("val",))
    sub = restrict_to_classes(idx, ["hammerhead", "tench"])
    assert sub.class_names == ["hammerhead", "tench"]
    assert [(r.class_name, r.label) for r in sub.records] == [("tench", 1), ("hammerhead", 0)]
    ood = restrict_to_classes(idx, ["tench"], others="ood")
    assert ood.labels() == [0, -1, -1, -1, -1]
    with pytest.raises(CroftError, match="not in dataset"):
        restrict_to_classes(idx, ["unicorn"])


# ----------------------------------------------------------------------------- few-shot
def synthetic_index(counts: dict[tuple[str, str], int]) -> DatasetIndex:
    classes = sorted({c for _, c in counts})
    domains = sorted({d for d, _ in counts})
    recs = [
        Record(f"{d}/{c}/{i}.png", classes.index(c), c, d, "train")
        for (d, c), n in counts.items()
        for i in range(n)
    ]
    return DatasetIndex(Path("/data"), recs, classes, domains, name="toy")


def test_few_shot_counts_and_seeds(tmp_path: Path) -> None:
    idx = synthetic_index({("a", "x"): 20, ("b", "x"): 10, ("a", "y"): 3})
    sel = few_shot(idx, 4, seed=1)
    assert Counter(sel.labels()) == {0: 4, 1: 3}  # small class kept whole
    assert sel.records == few_shot(idx, 4, seed=1).records
    assert sel.records != few_shot(idx, 4, seed=2).records
    assert len(set(sel.records)) == len(sel)  # no duplicates
    info = sel.meta["few_shot"]
    assert info["shots"] == 4 and info["seed"] == 1 and info["source_hash"] == idx.hash()
    state = random.getstate()
    few_shot(idx, 4, seed=3)
    assert random.getstate() == state  # local RNG only
    out = tmp_path / "fewshot.json"
    sel.save(out)
    back = DatasetIndex.load(out)
    assert back.records == sel.records and back.meta == sel.meta
    with pytest.raises(CroftError, match="shots"):
        few_shot(idx, 0, seed=1)


def test_few_shot_balance_domains() -> None:
    idx = synthetic_index(
        {("a", "x"): 20, ("b", "x"): 20, ("c", "x"): 20, ("a", "y"): 20, ("b", "y"): 1}
    )
    for seed in range(5):
        sel = few_shot(idx, 16, seed=seed, balance_domains=True)
        per = Counter((r.class_name, r.domain) for r in sel.records)
        xs = sorted(per[("x", d)] for d in "abc")
        assert sum(xs) == 16 and xs[-1] - xs[0] <= 1  # 5/5/6
        assert per[("y", "b")] == 1 and per[("y", "a")] == 15  # short domain gives its share
    plain = few_shot(idx, 16, seed=0)
    assert Counter(plain.labels()) == {0: 16, 1: 16}


def test_few_shot_authors_balance_is_class_agnostic_b8() -> None:
    # domain a holds only class x, domains b and c only class y
    idx = synthetic_index({("a", "x"): 12, ("b", "y"): 5, ("c", "y"): 12})
    sel = few_shot_authors_balance(idx, 16, seed=1)
    per_domain = int(16 / 3)
    assert len(sel) == 2 * 3 * per_domain  # labels x domains x 5
    assert Counter(r.domain for r in sel.records) == {"a": 10, "b": 10, "c": 10}
    assert Counter(sel.labels()) == {0: 10, 1: 20}  # not 16 per class: class is ignored
    assert len(set(sel.records)) < len(sel)  # domain b (5 images) drawn twice: duplicates
    assert sel.records == few_shot_authors_balance(idx, 16, seed=1).records
    assert sel.meta["few_shot"]["method"] == "authors_balance"


# ----------------------------------------------------------------------------- images
def noise(size=(64, 64)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_load_image_modes(tmp_path: Path) -> None:
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(cmyk)  # red in CMYK
    im = load_image(cmyk)
    assert im.mode == "RGB" and im.getpixel((4, 4))[0] > 200 and im.getpixel((4, 4))[1] < 60

    for value, expected in ((65535, 255), (32896, 128), (0, 0)):
        p = tmp_path / f"i16_{value}.png"
        Image.fromarray(np.full((4, 4), value, dtype=np.uint16)).save(p)
        assert Image.open(p).mode.startswith("I")
        assert load_image(p).getpixel((0, 0)) == (expected,) * 3  # rescaled, not clipped

    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    im = load_image(tmp_path / "pal.png")
    assert im.getpixel((0, 0)) == (255, 255, 255) and im.getpixel((1, 0)) == (0, 255, 0)

    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (255, 0, 0, 255))
    rgba.save(tmp_path / "rgba.png")
    im = load_image(tmp_path / "rgba.png")
    assert im.getpixel((0, 0)) == (255, 255, 255) and im.getpixel((1, 0)) == (255, 0, 0)
    Image.new("LA", (3, 3), (10, 255)).save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png").getpixel((1, 1)) == (10, 10, 10)

    Image.new("F", (2, 2), 0.5).save(tmp_path / "float.tif")
    assert load_image(tmp_path / "float.tif").getpixel((0, 0)) == (128, 128, 128)
    Image.new("1", (2, 2), 1).save(tmp_path / "bw.bmp")
    assert load_image(tmp_path / "bw.bmp").getpixel((0, 0)) == (255, 255, 255)
    frames = [Image.new("P", (2, 2), i) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert load_image(tmp_path / "anim.gif").mode == "RGB"

    img(tmp_path / "tiny.png", size=(1, 1), color=(1, 2, 3))
    assert load_image(tmp_path / "tiny.png").getpixel((0, 0)) == (1, 2, 3)
    Image.new("L", (4000, 4000), 7).save(tmp_path / "huge.png")
    assert load_image(tmp_path / "huge.png").size == (4000, 4000)


def test_load_image_truncated(tmp_path: Path) -> None:
    buf = tmp_path / "full.jpg"
    noise().save(buf, quality=95)
    data = buf.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(OSError):
        Image.open(cut).load()  # PIL alone refuses it
    im = load_image(cut)
    assert im.size == (64, 64) and im.mode == "RGB"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # global restored
    with pytest.raises(BadImageError, match="truncated"):
        load_image(cut, allow_truncated=False)


def test_load_image_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadImageError, match=r"empty \(0 bytes\)"):
        load_image(tmp_path / "empty.jpg")
    (tmp_path / "text.png").write_text("hello, not an image")
    with pytest.raises(BadImageError, match="not an image PIL can identify"):
        load_image(tmp_path / "text.png")
    with pytest.raises(BadImageError, match="file not found"):
        load_image(tmp_path / "missing.png")
    assert issubclass(BadImageError, CroftError)
    img(tmp_path / "big.png", size=(100, 100))
    with pytest.raises(BadImageError, match="max_pixels=1000"):
        load_image(tmp_path / "big.png", max_pixels=1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImageError, match="MAX_IMAGE_PIXELS"):
        load_image(tmp_path / "big.png")  # > 2x the limit: decompression bomb
    img(tmp_path / "mid.png", size=(40, 40))
    with pytest.raises(BadImageError, match="CROFT_MAX_IMAGE_PIXELS"):  # PIL's warning zone
        load_image(tmp_path / "mid.png")  # is refused too: a bomb must not be decoded
    monkeypatch.setenv("CROFT_MAX_IMAGE_PIXELS", "2000")  # the documented way to raise it
    assert load_image(tmp_path / "mid.png").size == (40, 40)


def test_check_layout_verify_images(tmp_path: Path) -> None:
    root = make_domainbed(tmp_path / "ds", {("d", "c"): 2})
    (root / "d" / "c" / "broken.png").write_bytes(b"")
    quick = check_layout(root, "domainbed")  # without decoding: a zero-byte file is flagged
    assert len(quick) == 1 and "broken.png" in quick[0] and "empty" in quick[0]
    problems = check_layout(root, "domainbed", verify_images=True)
    assert len(problems) == 1 and "broken.png" in problems[0] and "empty" in problems[0]
    index, problems = inspect_layout(root, "domainbed")
    assert index is not None and len(index) == 3 and problems == quick
