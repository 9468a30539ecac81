"""The shipped experiment presets load, and --check validates their data layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from croft.cli.main import main
from croft.data import generate_lodo_splits
from croft.experiments import check_experiment, expand_methods, load_experiment

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_presets_exist() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"setup2_pacs", "setup2_vlcs"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_preset_loads_and_its_methods_are_valid(path: Path) -> None:
    cfg = load_experiment(path)
    assert cfg.methods and expand_methods(cfg.methods)
    problems = check_experiment(cfg)
    assert not [p for p in problems if p.startswith("method ")], problems
    # the placeholder paths do not exist: every dataset is reported, one line each (the
    # world study's world is generated next to configs/ by its README command, or not)
    if not Path(cfg.data.root).exists():
        assert any("does not exist" in p for p in problems)


def test_setup2_pacs_check_passes_on_a_pacs_shaped_tree(tmp_path: Path, capsys) -> None:
    root = tmp_path / "PACS"
    for dom in ("art_painting", "cartoon", "photo", "sketch"):
        for cls in ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"):
            for k in range(3):
                path = root / "images" / dom / cls / f"{k}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (k * 40, 0, 0)).save(path)
    generate_lodo_splits(root, val_fraction=0.34, seed=1)
    argv = ["run", str(CONFIGS[[p.stem for p in CONFIGS].index("setup2_pacs")]), "--check"]
    argv += ["--set", f"data.root={root}"]
    assert main(argv) == 1  # the OOD datasets are still missing
    out = capsys.readouterr().out
    assert "data (" not in out, out  # but PACS itself passes
    assert out.count("ood ") == 3
