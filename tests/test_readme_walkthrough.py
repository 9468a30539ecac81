"""The README's offline walkthrough: every command in its fenced block.

Fast: each ``croft`` line parses with the real CLI parser. Slow: the whole block runs in
bash in a temp folder (``croft`` and ``python`` on PATH point at this interpreter).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## Walkthrough: one held-out style, offline"


def walkthrough_block() -> str:
    text = README.read_text()
    assert HEADING in text, "the README lost its walkthrough section"
    section = text.split(HEADING, 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match
    return match.group(1)


def _commands(block: str) -> list[list[str]]:
    """Each ``croft`` command of the block as argv (continuations joined, loop variable and
    $SPEC substituted)."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.strip().replace("$split", "train").replace('"$SPEC"', "openclip:a:b.pt")
        if line.startswith("croft "):
            out.append(shlex.split(line.split("|", 1)[0])[1:])
    return out


def test_walkthrough_commands_parse() -> None:
    from croft.cli.main import build_parser

    cmds = _commands(walkthrough_block())
    names = [c[0] for c in cmds]
    for want in ("world", "extract", "fit", "eval", "predict"):
        assert want in names
    parser = build_parser()
    for argv in cmds:
        if "--help-options" in argv:
            continue  # prints and exits: run in the slow test
        args = parser.parse_args(argv)
        assert getattr(args, "func", None) is not None, argv
    assert "croft.load(" in walkthrough_block()


@pytest.mark.slow
def test_walkthrough_runs(tmp_path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, target in (
        ("croft", f'"{sys.executable}" -m croft'),
        ("python", f'"{sys.executable}"'),
    ):
        path = bindir / name
        path.write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "CROFT_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    work = tmp_path / "work"
    work.mkdir()
    script = "set -euo pipefail\n" + walkthrough_block()
    res = subprocess.run(
        ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (work / "head" / "head.json").is_file()
    lines = (work / "preds.csv").read_text().splitlines()
    assert lines[0].startswith("source,class_name") and len(lines) > 4
    assert "accuracy only" in res.stdout and "fpr95_id_pos" in res.stdout
    assert "Prediction(source='world/images/sketch/cup/sketch_cup_0000.png'" in res.stdout
    # the first hour's promise (#25): the fit trains, and its head does not call the
    # never-seen style's boats unknown
    head = json.loads((work / "head" / "head.json").read_text())
    assert head["selected_epoch"] > 0 and not head["selection"]["kept_init"], head["selection"]
    assert "the selected model is its initialisation" not in res.stderr
    with (work / "preds.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if "/sketch/boat/" in r["source"]]
    assert len(rows) >= 4
    flagged = [r["source"] for r in rows if r["is_ood"] == "True"]
    assert len(flagged) <= 1, flagged
