"""Bad experiment configs and overrides: one line, exit 2, no traceback, nothing written.

Each case runs ``croft run`` in-process (``croft.cli.main.main``) and checks that stderr
holds exactly one ``croft: error:`` line and that no file appeared anywhere under the
test's folder (the output folder included) — or, for ``--check``, that the problem is
reported without running anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from croft.cli.main import main
from croft.experiments import MAX_SHOTS, MAX_VIEWS

pytestmark = pytest.mark.usefixtures("isolated_cache")

BASE = """
name: bad
backbone: openclip:{arch}:{ckpt}
data: {{root: data, layout: domainbed}}
held_out: [art]
shots: 1
views: 1
seeds: [1]
progress: false
scores: [energy]
methods:
  - {{label: zeroshot, method: zeroshot}}
"""


@pytest.fixture()
def setup(tmp_path, tiny_ckpts) -> Path:
    from croft.backbones import TINY_VIT

    for dom in ("art", "photo"):
        for cls in ("cat", "dog"):
            for k in range(2):
                path = tmp_path / "data" / dom / cls / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((torch.rand(12, 12, 3) * 255).to(torch.uint8).numpy()).save(path)
    (tmp_path / "exp.yaml").write_text(BASE.format(arch=TINY_VIT, ckpt=tiny_ckpts[0]))
    return tmp_path


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _one_line_error(argv: list[str], root: Path, capsys, match: str) -> str:
    before = _files(root)
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2, (code, captured)
    assert len(err) == 1 and err[0].startswith("croft: error:"), err
    assert "Traceback" not in captured.err + captured.out
    assert match in err[0], err[0]
    assert _files(root) == before, sorted(_files(root) - before)
    return err[0]


def _write(setup: Path, extra: str) -> Path:
    path = setup / "exp.yaml"
    path.write_text(path.read_text() + extra)
    return path


def _argv(setup: Path, *sets: str) -> list[str]:
    argv = ["run", str(setup / "exp.yaml"), "--out", str(setup / "out"), "--quiet"]
    return argv + [x for s in sets for x in ("--set", s)]


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ('shots: "four"', "shots must be an integer, got 'four'"),
        ("shots: 2.5", "shots must be an integer, got 2.5"),
        ("seeds: 1", "seeds must be a list of integers, got 1"),
        ('seeds: ["a"]', "seeds[0] must be an integer, got 'a'"),
        ("device: tpu", "device 'tpu'"),
        ("views: 1e20", "views must be an integer"),
        (f"views: {MAX_VIEWS + 1}", f"views: {MAX_VIEWS + 1} is out of range"),
        ("views: 100000000000000000000", "views: 100000000000000000000 is out of range"),
        (f"shots: {MAX_SHOTS + 1}", "shots"),
        ("val_per_class: -1", "val_per_class"),
        ("templates: ['a photo of a cat']", "has no '{}'"),
        ("scores: [energy, magic]", "unknown score 'magic'"),
        ("name: ../../X", "experiment name '../../X'"),
        ("sampling: 3", "sampling '3'"),
        ("shifted: []", "shifted applies to protocol imagenet only"),
        ("protocol: setup3", "protocol 'setup3'"),
    ],
)
def test_bad_values_in_yaml(setup, capsys, setting, match) -> None:
    _write(setup, setting + "\n")
    _one_line_error(_argv(setup), setup, capsys, match)
    _one_line_error(["run", str(setup / "exp.yaml"), "--check"], setup, capsys, match)


@pytest.mark.parametrize(
    ("method", "match"),
    [
        ("{label: ../../../X, method: zeroshot}", "method label '../../../X'"),
        ("{label: /tmp/X, method: zeroshot}", "method label '/tmp/X'"),
        ("{label: a/b, method: zeroshot}", "method label 'a/b'"),
        ("{label: c, method: croft, options: {lambda2: -5}}", "lambda2 must be >= 0"),
        ("{label: c, method: croft, grid: {lambda2: [1, -5]}}", "lambda2 must be >= 0"),
        ("{label: c, method: croft, grid: {lambda2: 5}}", "grid lambda2 must be a non-empty list"),
        ("{label: c, method: croft, grid: {lr: ['../x']}}", "path separator"),
        ("{label: c, method: croft, options: {epochs: many}}", "epochs"),
        ("{label: c, method: nosuch}", "unknown method 'nosuch'"),
    ],
)
def test_bad_methods(setup, capsys, method, match) -> None:
    _write(setup, f"  - {method}\n")
    _one_line_error(_argv(setup), setup, capsys, match)


def test_name_outside_the_working_directory_without_out(setup, capsys, monkeypatch) -> None:
    work = setup / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    _write(setup, "name: ../../X\n")
    _one_line_error(["run", str(setup / "exp.yaml"), "--quiet"], setup, capsys, "'../../X'")
    _one_line_error(["run", str(setup / "exp.yaml"), "--dry-run"], setup, capsys, "'../../X'")


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("methods.9.label=x", "methods has 1 item(s); index 9 is out of range"),
        ("shots=[1,", "is not a valid YAML value"),
        ("shots", "expected KEY=VALUE"),
        ("a..b=1", "bad key 'a..b'"),
        ("shots.x=1", "shots is not a mapping"),
        ("methods.x=1", "methods is not a mapping"),
        ("seeds=[1, 1]", "each seed once"),
        ("=4", "expected KEY=VALUE"),
    ],
)
def test_malformed_set(setup, capsys, item, match) -> None:
    _one_line_error(_argv(setup, item), setup, capsys, match)


def test_check_reports_what_only_the_data_and_machine_can_tell(setup, capsys) -> None:
    """Unknown held-out domain, missing weight file, CUDA without CUDA: --check lists each
    (exit 1, nothing written); a real run refuses with one line before writing anything."""
    cases = [
        ("held_out=[nosuch]", "held-out domain(s) ['nosuch'] not found"),
        (f"backbone=openclip:x:{setup / 'missing.pt'}", "weight file not found"),
    ]
    if not torch.cuda.is_available():
        cases.append(("device=cuda", "CUDA is not available"))
    for item, match in cases:
        before = _files(setup)
        assert main(["run", str(setup / "exp.yaml"), "--check", "--set", item]) == 1
        out = capsys.readouterr().out
        assert match in out and "1 problem(s)" in out, out
        assert _files(setup) == before
        _one_line_error(_argv(setup, item), setup, capsys, match)


def test_refusals_leave_the_output_folder_as_it_was(setup, capsys) -> None:
    """A run refused for changed settings writes nothing new into --out."""
    assert main(_argv(setup) + ["--no-report"]) == 0
    capsys.readouterr()
    _one_line_error(_argv(setup, "shots=2") + ["--no-report"], setup, capsys, "another shots")
    assert os.listdir(setup / "out" / "runs") == ["zeroshot"]


def test_damaged_run_files_on_resume(setup, capsys) -> None:
    """A truncated metrics.json is one line naming the file; a damaged run_key.json is a
    refusal (never a silent reuse)."""
    assert main(_argv(setup) + ["--no-report"]) == 0
    rdir = setup / "out" / "runs" / "zeroshot" / "art_seed1"
    text = (rdir / "metrics.json").read_text()
    (rdir / "metrics.json").write_text(text[: len(text) // 2])
    capsys.readouterr()
    _one_line_error(_argv(setup) + ["--no-report"], setup, capsys, "metrics.json: not valid JSON")
    (rdir / "metrics.json").write_text(text)
    (rdir / "run_key.json").write_text("{")
    _one_line_error(_argv(setup) + ["--no-report"], setup, capsys, "--fresh")
