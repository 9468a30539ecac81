"""A newcomer's first hour (issue 25): progress that reaches a log file, a ``croft fit`` that
says when it did not train, defaults that scale the learning rate, quiet pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from croft.cli.main import main
from croft.features.files import save_features
from croft.simulate import random_features

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
        "CROFT_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }


def _croft_to_file(args: list[str], tmp_path: Path, log: Path) -> int:
    """``croft ARGS > log 2>&1`` (stderr is a file, not a terminal)."""
    with log.open("w") as fh:
        res = subprocess.run(
            [sys.executable, "-m", "croft", *args],
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    return res.returncode


# ------------------------------------------------------------------ 1. progress in a log
PROGRESS_SCRIPT = """
from croft.cli.main import _install_log_handler
from croft.progress import progress
_install_log_handler()
with progress(40, "extract photo", "img", every=0.0) as bar:
    for _ in range(40):
        bar.update(1)
with progress(5, "epochs", "ep", every=1e9, leave=False) as bar:  # inner bar: no line
    for _ in range(5):
        bar.update(1)
with progress(5, "silent", "ep", enabled=False) as bar:
    bar.update(5)
"""


def test_progress_lines_reach_a_log_file(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with log.open("w") as fh:
        res = subprocess.run(
            [sys.executable, "-c", PROGRESS_SCRIPT],
            env=_env(tmp_path),
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    assert res.returncode == 0, log.read_text()
    lines = log.read_text().splitlines()
    assert lines and all(line.startswith("croft: progress: extract photo: ") for line in lines)
    assert lines[-1].startswith("croft: progress: extract photo: 40/40 (100%), ETA 0s")
    assert "img/s" in lines[-1] and len(lines) >= 2  # periodic, not only the final line


@pytest.mark.slow
def test_demo_to_a_log_file_has_progress_and_quiet_has_none(tmp_path: Path) -> None:
    log = tmp_path / "log"
    assert _croft_to_file(["demo", "--synthetic", "--out", "d"], tmp_path, log) == 0
    text = log.read_text()
    runs = [line for line in text.splitlines() if line.startswith("croft: progress: demo runs:")]
    assert runs and runs[-1].startswith("croft: progress: demo runs: 48/48 (100%)"), text[:2000]
    assert "ETA" in runs[-1] and "run/s" in runs[-1]
    quiet = tmp_path / "quiet"
    assert _croft_to_file(["demo", "--synthetic", "--out", "q", "--quiet"], tmp_path, quiet) == 0
    assert "croft: progress:" not in quiet.read_text()


# ------------------------------------------------------------------ 2. defaults that train
@pytest.fixture()
def small_files(tmp_path: Path) -> tuple[Path, Path]:
    train = save_features(random_features(4, 6, 10, 2, seed=0, scale=25.0), tmp_path / "tr.st")
    val = save_features(random_features(4, 3, 10, 1, seed=1, scale=25.0), tmp_path / "va.st")
    return train, val


def test_croft_fit_scales_the_learning_rate_by_default(small_files, tmp_path, capsys) -> None:  # noqa: ANN001
    train, val = small_files
    argv = ["fit", "--train", str(train), "--val", str(val), "--method", "ce_adapter", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "a"), "--set", "epochs=3"]) == 0
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    hist = json.loads((tmp_path / "a" / "head.json").read_text())["history"]
    assert cfg["lr_scaling"] == "logit_scale"
    peak = max(h["lr"] for h in hist)  # lr 0.002 x (100/25)^2, the cosine's first epoch
    assert peak == pytest.approx(0.002 * 16.0 * 0.5 * (1 + __import__("math").cos(0.0)), rel=1e-6)
    assert main([*argv, "--out", str(tmp_path / "b"), "--set", "lr_scaling=none"]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["lr_scaling"] == "none"
    capsys.readouterr()


def test_croft_fit_warns_when_it_keeps_the_initialisation(small_files, tmp_path, capsys) -> None:  # noqa: ANN001
    train, val = small_files
    # lr 0: nothing moves, so the selected model is the initialisation
    argv = ["fit", "--train", str(train), "--val", str(val), "--method", "croft", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "h"), "--set", "lr=0", "--set", "epochs=2"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "initialisation" in line]
    assert len(err) == 1 and err[0].startswith("croft: warning: croft: the selected model is")
    assert "select_epoch=best_after_warmup" in err[0] and "--set lr" in err[0]


def test_croft_fit_without_val_warns_there_is_no_threshold(small_files, tmp_path, capsys) -> None:  # noqa: ANN001
    train, _ = small_files
    argv = ["fit", "--train", str(train), "--method", "ce_adapter", "--quiet", "--set", "epochs=1"]
    assert main([*argv, "--out", str(tmp_path / "h")]) == 0
    err = capsys.readouterr().err
    assert "fitted without --val: the head has no OOD threshold" in err
    assert "ood_threshold" not in json.loads((tmp_path / "h" / "head.json").read_text())
