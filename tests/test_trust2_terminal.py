"""Trust, round two (the terminal and the loaders): text from file names or files never reaches
the terminal raw, ``--quiet`` silences transformers' "Loading weights" bar, and a deeply
nested ``config.json`` / ``open_clip_config.json`` is one line naming the file.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from croft.cli.main import main, os_error_line
from croft.errors import CroftError, printable
from test_bad_inputs import one_line
from test_trust2_inputs import limited

pytestmark = pytest.mark.usefixtures("isolated_cache")

DEEP = "[" * 100000 + "]" * 100000


def _tree(root: Path) -> Path:
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (12, 12), (60 * k, 90, 30)).save(root / cls / f"{k}.png")
    return root


def _hf_tiny(directory: Path) -> Path:
    """A random-init tiny transformers CLIPModel saved with save_pretrained (no tokenizer)."""
    transformers = pytest.importorskip("transformers")
    text = {"vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16,
            "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": 32, "patch_size": 8}  # fmt: skip
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    torch.manual_seed(0)
    transformers.CLIPModel(config).eval().save_pretrained(str(directory))
    return directory


# -- control characters --------------------------------------------------------------------------


def test_printable_escapes_every_control_character():
    name = "a\x1b[31mb\nc\rd\te\x07\x7f\x9b\u2028" + os.fsdecode(b"\xff") + "é ü ok"
    out = printable(name)
    assert out == "a\\x1b[31mb\\nc\\rd\\te\\x07\\x7f\\x9b\\u2028\\xffé ü ok"
    assert all(c.isprintable() for c in out)
    assert printable("plain/path name.png") == "plain/path name.png"


def test_error_lines_escape_control_characters(tmp_path, capsys):
    evil = tmp_path / "x\x1b]0;pwned\x07\nname"
    line = os_error_line(FileNotFoundError(errno.ENOENT, "No such file", str(evil)))
    assert "\x1b" not in line and "\n" not in line and "x\\x1b]0;pwned\\x07\\nname" in line
    # a CroftError naming the path: one stderr line, the ESC escaped
    Image.new("RGB", (8, 8)).save(tmp_path / "0.png")
    line = one_line(capsys, ["predict", str(evil), str(tmp_path / "0.png")])
    assert "\x1b" not in line and "\x07" not in line and "x\\x1b]0;pwned\\x07" in line


def test_data_check_escapes_class_names(tmp_path, capsys):
    root = tmp_path / "ds"
    (root / "bad\x1b[2Jcls").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "bad\x1b[2Jcls" / "0.png")
    main(["data", "check", str(root), "--layout", "folder"])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "bad\\x1b[2Jcls" in out


# -- transformers' bar follows --quiet -----------------------------------------------------------


def test_hf_loading_bar_follows_quiet(tmp_path, capfd, monkeypatch):
    model = _hf_tiny(tmp_path / "hf")
    root = _tree(tmp_path / "ds")
    capfd.readouterr()
    monkeypatch.setattr("croft.progress._is_tty", lambda: True)  # as on a terminal

    def extract(*extra: str) -> str:
        out = tmp_path / f"f{len(extra)}.safetensors"
        argv = ["extract", "--backbone", f"hf:{model}", "--root", str(root), "--layout",
                "folder", "--out", str(out), "--workers", "0",
                "--cache", str(tmp_path / "c")]  # fmt: skip
        assert main([*argv, *extra]) == 0
        shutil.rmtree(tmp_path / "c")
        return capfd.readouterr().err

    assert "Loading weights" in extract()  # a terminal and not quiet: transformers' bar shows
    err = extract("--quiet")
    assert "Loading weights" not in err and "%|" not in err and "\r" not in err, err
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()  # the setting is restored after loading
    monkeypatch.setattr("croft.progress._is_tty", lambda: False)
    assert "Loading weights" not in extract()  # a log file gets no carriage-return bar


# -- deep architecture configs -------------------------------------------------------------------


def test_deep_hf_config_json_is_one_line(tmp_path):
    model = _hf_tiny(tmp_path / "hf")
    (model / "config.json").write_text(DEEP)
    root = _tree(tmp_path / "ds")
    line = limited(["extract", "--backbone", f"hf:{model}", "--root", str(root), "--layout",
                    "folder", "--out", str(tmp_path / "o.safetensors")])  # fmt: skip
    assert str(model / "config.json") in line and "CROFT_MAX_JSON_DEPTH" in line
    assert not (tmp_path / "o.safetensors").exists()


def test_deep_open_clip_config_json_is_one_line(tmp_path, tiny_ckpts):
    from croft.backbones import TINY_VIT

    weights = tmp_path / "w" / "tiny.pt"
    weights.parent.mkdir()
    shutil.copy(tiny_ckpts[0], weights)
    (weights.parent / "open_clip_config.json").write_text('{"a": ' * 100000 + "1" + "}" * 100000)
    root = _tree(tmp_path / "ds")
    line = limited(["extract", "--backbone", f"openclip:{TINY_VIT}:{weights}", "--root",
                    str(root), "--layout", "folder",
                    "--out", str(tmp_path / "o.safetensors")])  # fmt: skip
    assert str(weights.parent / "open_clip_config.json") in line
    assert "CROFT_MAX_JSON_DEPTH" in line and not (tmp_path / "o.safetensors").exists()
    with pytest.raises(CroftError, match="open_clip_config.json"):
        from croft.backbones import load_backbone

        load_backbone(f"openclip:{TINY_VIT}:{weights}")
