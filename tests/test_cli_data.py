"""``croft data check`` / ``croft data splits``: output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from croft.cli.main import main


def make_pacs(root: Path) -> Path:
    for dom in ("art_painting", "photo", "sketch"):
        for cls, n in (("dog", 3), ("horse", 2)):
            for i in range(n):
                path = root / "images" / dom / cls / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(path)
    return root


def test_check_ok_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_pacs(tmp_path / "PACS")
    assert main(["data", "check", str(root / "images"), "--layout", "domainbed"]) == 0
    out = capsys.readouterr().out
    assert "classes: 2 (dog, horse)" in out
    assert "domains: 3 (art_painting, photo, sketch)" in out
    assert "images: 15" in out and "domain photo: 5" in out and "split all: 15" in out
    assert "ok: no problems found" in out and "problem:" not in out


def test_splits_then_check_oodbench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_pacs(tmp_path / "PACS")
    assert main(["data", "check", str(root), "--layout", "oodbench"]) == 1
    out = capsys.readouterr().out
    assert out.count("problem: split file") == 3 and "croft data splits" in out
    assert main(["data", "splits", str(root), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("wrote ") == 3 and (root / "test_on_sketch.json").is_file()
    assert main(["data", "splits", str(root)]) == 0
    assert "--overwrite" in capsys.readouterr().out
    argv = ["data", "check", str(root), "--layout", "oodbench", "--test-domain", "sketch"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "split test: 5" in out and "split train:" in out and "split val:" in out


def test_splits_on_a_tree_without_images_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DomainBed-shaped tree (ROOT/DOMAIN/CLASS/, no images/): splits are written beside
    the domain folders, relative to ROOT, and the oodbench layout reads them (guessed too)."""
    from croft.data import read_layout

    root = make_pacs(tmp_path / "PACS") / "images"
    assert main(["data", "splits", str(root), "--seed", "3"]) == 0
    assert capsys.readouterr().out.count("wrote ") == 3
    doc = json.loads((root / "test_on_sketch.json").read_text())
    assert {row[0].split("/")[0] for row in doc["test"]} == {"sketch"}
    assert all((root / row[0]).is_file() for rows in doc.values() for row in rows)
    index = read_layout(root, "oodbench", test_domain="photo")
    assert len(index) == 15 and index.counts("split")["test"] == 5
    assert main(["data", "check", str(root)]) == 0  # layout guessed: oodbench
    out = capsys.readouterr().out
    assert f"layout oodbench: {root}" in out and "ok: no problems found" in out
    # with images/ present its splits are relative to images/, as before
    other = make_pacs(tmp_path / "VLCS")
    assert main(["data", "splits", str(other)]) == 0
    capsys.readouterr()
    rows = json.loads((other / "test_on_photo.json").read_text())["test"]
    assert rows[0][0].startswith("photo/") and (other / "images" / rows[0][0]).is_file()


def test_check_reports_each_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_pacs(tmp_path / "PACS")
    (root / "images" / "photo" / "cat").mkdir()
    (root / "images" / "sketch" / "dog" / "0.png").write_bytes(b"")
    argv = ["data", "check", str(root / "images"), "--layout", "domainbed", "--verify-images"]
    assert main(argv) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("problem: ")]
    assert len(lines) == 2
    assert "cat has no images" in lines[0] and "0.png" in lines[1]


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_pacs(tmp_path / "PACS")
    assert main(["data", "check", str(root), "--layout", "voc"]) == 2
    assert "croft: error: unknown dataset layout 'voc'" in capsys.readouterr().err
    assert main(["data", "check", str(root), "--layout", "domainbed", "--dataset", "dtd"]) == 2
    assert "do not apply to layout 'domainbed'" in capsys.readouterr().err
    assert main(["data", "check", str(root), "--layout", "coop"]) == 2
    assert "needs dataset=" in capsys.readouterr().err
    assert main(["data"]) == 2
    assert "check or splits" in capsys.readouterr().err
    assert main(["data", "splits", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_check_coop_and_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "dtd"
    entries = []
    for label, cls in enumerate(("banded", "woven")):
        path = base / "images" / cls / "a.jpg"
        path.parent.mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(path)
        entries.append([f"{cls}/a.jpg", label, cls])
    split = {"train": entries, "val": [], "test": []}
    (base / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    assert main(["data", "check", str(tmp_path), "--layout", "coop", "--dataset", "dtd"]) == 0
    assert "classes: 2 (banded, woven)" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "nope"), "--layout", "folder"]) == 1
    assert "does not exist" in capsys.readouterr().out


def test_command_module_imports_light() -> None:
    code = (
        "import argparse, sys; import croft.cli.cmd_data as m; "
        "m.register(argparse.ArgumentParser().add_subparsers()); "
        "print('croft.data' in sys.modules, 'PIL' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
