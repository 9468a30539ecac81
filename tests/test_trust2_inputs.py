"""Trust, round two (configs, heads, numbers): every case is exit code 2 with one stderr line
naming the file or key, no traceback, nothing written, in bounded time; the memory cases run
in a subprocess under ``resource.setrlimit`` so an unbounded allocation fails the test
instead of the machine.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from croft.cli.main import main
from croft.errors import CroftError
from croft.features import load_features
from test_bad_inputs import _features, _head_dir, _rewrite_meta, one_line

pytestmark = pytest.mark.usefixtures("isolated_cache")

SRC = Path(__file__).resolve().parents[1] / "src"
MEMORY = 4 << 30  # address space for a CLI subprocess: torch imports in ~3 GiB of it


def limited(argv: list[str], *, seconds: float = 60, env: dict[str, str] | None = None) -> str:
    """Run ``croft argv`` in a subprocess limited to ``MEMORY`` bytes of address space and
    ``seconds``; assert exit code 2, one stderr line and no traceback; return the line."""
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY}, {MEMORY}))\n"
        "from croft.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    import croft  # the subprocess runs the croft this test imported

    here = str(Path(croft.__file__).resolve().parents[1])
    full = {**os.environ, "PYTHONPATH": here, "OMP_NUM_THREADS": "1", **(env or {})}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=full,
        timeout=seconds,
    )  # fmt: skip
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("croft: error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < seconds
    return lines[0]


@pytest.fixture()
def setup(tmp_path, tiny_ckpts) -> Path:
    """The experiment folder of tests/test_bad_inputs_config.py (its fixture, re-made)."""
    from PIL import Image

    from croft.backbones import TINY_VIT
    from test_bad_inputs_config import BASE

    for dom in ("art", "photo"):
        for cls in ("cat", "dog"):
            for k in range(2):
                path = tmp_path / "data" / dom / cls / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((torch.rand(12, 12, 3) * 255).to(torch.uint8).numpy()).save(path)
    (tmp_path / "exp.yaml").write_text(BASE.format(arch=TINY_VIT, ckpt=tiny_ckpts[0]))
    return tmp_path


def _edit_head(folder: Path, **changes) -> None:
    meta = json.loads((folder / "head.json").read_text())
    for key, value in changes.items():
        if value is _DROP:
            meta.pop(key, None)
        else:
            meta[key] = value
    (folder / "head.json").write_text(json.dumps(meta))


_DROP = object()


# -- 1b: head.json sizes are checked before anything is allocated ------------------------------


@pytest.mark.parametrize(
    ("dim", "env", "match"),
    [
        (200000, {}, "CROFT_MAX_FEATURE_DIM"),
        # the dimension limit raised: the head's weight count still stops a 4.8 GB build
        (20000, {"CROFT_MAX_FEATURE_DIM": "300000"}, "CROFT_MAX_HEAD_ELEMENTS"),
    ],
)
def test_head_json_feature_dim_is_bounded_before_allocating(tmp_path, capsys, dim, env, match):
    head, feats = _head_dir(tmp_path, capsys)
    _edit_head(head, head="adapter", spec={}, feature_dim=dim)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    line = limited(["predict", str(head), str(image)], env=env)
    assert match in line and "head.json" in line


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"ratio": float("nan")}, "spec.ratio must be a finite number"),
        ({"ratio": 3.0}, "spec.ratio must lie in [0, 1]"),
        ({"dtype": "nn"}, "spec.dtype must be one of"),
        ({"n_ctx": 10**12, "width": 4}, "CROFT_MAX_HEAD_SIZE"),
        ({"mlp_depth": 100000}, "spec.mlp_depth 100000 is above 32 layers"),
        ({"cache_size": -3}, "spec.cache_size must be >= 0"),
    ],
)
def test_head_spec_fields_are_range_checked(tmp_path, capsys, spec, match):
    head, feats = _head_dir(tmp_path, capsys)
    _edit_head(head, spec=spec, head="dplclip" if "mlp_depth" in spec else "adapter")
    line = one_line(capsys, ["eval", str(head), "--id", str(feats)], sandbox=tmp_path)
    assert match in line and "head.json" in line


# -- 8 / 9: silent garbage and exit-1 cases in head.json ---------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"ood_threshold": {"score": "energy", "value": float("nan")}}, "finite number"),
        ({"ood_threshold": {"score": "energy", "value": float("inf")}}, "finite number"),
        ({"ood_threshold": {"score": "energy", "value": "abc"}}, "finite number"),
        ({"ood_threshold": {"score": "energy", "value": [1]}}, "finite number"),
        ({"ood_threshold": {"score": "energy", "value": True}}, "finite number"),
        ({"logit_scale": 1e308}, "CROFT_MAX_LOGIT_SCALE"),
        ({"logit_scale": 1e-300}, "'logit_scale' must be a positive number of at least"),
        ({"backbone": "evil"}, "'backbone' must be the backbone's fingerprint"),
        ({"backbone_spec": ["x"]}, "'backbone_spec' must be a backbone spec string"),
        ({"class_names": ["a", "a"]}, "class 'a' is listed twice"),
    ],
)
def test_head_json_garbage_is_one_line(tmp_path, capsys, changes, match):
    head, feats = _head_dir(tmp_path, capsys)
    _edit_head(head, **changes)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    line = one_line(capsys, ["predict", str(head), str(image)], sandbox=tmp_path)
    assert match in line and str(head) in line


# -- 7: templates are filled by plain substitution ----------------------------------------------


@pytest.mark.parametrize(
    "template", ["{}{}", "{", "{x}", "{0.__class__.__mro__[1].__subclasses__}", "a {} }", "none"]
)
def test_templates_from_a_feature_file_are_never_formatted(tmp_path, capsys, template):
    path = _features(tmp_path / "f.safetensors")
    _rewrite_meta(path, "templates", json.dumps([template]))
    out = tmp_path / "head"
    line = one_line(capsys, ["fit", "--method", "zeroshot", "--train", str(path), "--out",
                             str(out)])  # fmt: skip
    assert "prompt template" in line and "f.safetensors" in line and not out.exists()


def test_fill_template_is_plain_substitution():
    from croft.features.files import fill_template

    assert fill_template("a photo of a {}.", "{0.__class__}") == "a photo of a {0.__class__}."
    with pytest.raises(CroftError, match="exactly one"):
        fill_template("{0.__class__.__mro__}", "cat")


def test_no_format_call_on_templates_in_src():
    hits = [
        f"{p.relative_to(SRC)}:{i}"
        for p in SRC.rglob("*.py")
        for i, ln in enumerate(p.read_text().splitlines(), 1)
        if ("tpl.format(" in ln or "t.format(" in ln or "template.format(" in ln)
    ]
    assert not hits, hits


# -- 6b / 8 / 9: experiment configs and method options ------------------------------------------


def _bomb(levels: int = 9) -> str:
    """A YAML "billion laughs": 9 levels of 9 aliases expand to 9**9 strings."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def _config_error(setup: Path, capsys, text: str, match: str, *sets: str) -> None:
    """``text`` replaces the experiment YAML; a run, ``--check`` and ``--dry-run`` each give
    one line containing ``match`` within 20 s, writing nothing."""
    from test_bad_inputs_config import _argv, _one_line_error

    (setup / "exp.yaml").write_text(text)
    exp = str(setup / "exp.yaml")
    more = [x for s in sets for x in ("--set", s)]
    for argv in (_argv(setup, *sets), ["run", exp, "--check", *more], ["run", exp, "--dry-run"]):
        start = time.monotonic()
        _one_line_error(argv, setup, capsys, match)
        assert time.monotonic() - start < 20


def _base(setup: Path) -> str:
    return (setup / "exp.yaml").read_text()


def test_yaml_alias_bomb_in_data_options_is_refused_fast(setup, capsys):
    text = _bomb() + _base(setup).replace(
        "data: {root: data, layout: domainbed}",
        "data: {root: data, layout: domainbed, options: {x: *l9}}",
    )
    _config_error(setup, capsys, text, "CROFT_MAX_YAML_NODES")


@pytest.mark.parametrize("where", ["extra_targets", "held_out"])
def test_deeply_nested_yaml_is_one_line(setup, capsys, where):
    text = (
        _base(setup).replace("held_out: [art]\n", "") + f"{where}: {'[' * 100000}{']' * 100000}\n"
    )
    _config_error(setup, capsys, text, "CROFT_MAX_JSON_DEPTH")


def test_deeply_nested_set_value_is_one_line(setup, capsys):
    from test_bad_inputs_config import _argv, _one_line_error

    deep = "[" * 100000 + "]" * 100000
    _one_line_error(_argv(setup, f"held_out={deep}"), setup, capsys, "CROFT_MAX_JSON_DEPTH")


@pytest.mark.parametrize("keys", [6, 9])
def test_huge_grid_is_counted_before_it_is_expanded(setup, capsys, keys):
    """10**6 and 10**9 grid points: refused from the product of the list lengths."""
    names = ["lambda1", "lambda2", "lambda_c", "lr", "warmup_lr", "momentum", "weight_decay",
             "energy_temperature", "ratio"][:keys]  # fmt: skip
    values = "[" + ", ".join(str(0.1 + i / 100) for i in range(10)) + "]"
    grid = ", ".join(f"{k}: {values}" for k in names)
    text = _base(setup) + f"  - {{label: c, method: croft, grid: {{{grid}}}}}\n"
    _config_error(setup, capsys, text, "CROFT_MAX_GRID_POINTS")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ("{epochs: 1000000000}", "CROFT_MAX_EPOCHS"),
        ("{gen_step: 100000000}", "CROFT_MAX_TRAIN_STEPS"),
        ("{epochs: 1.5}", "option epochs must be a whole number, got 1.5"),
        ("{lr: -0.1}", "option lr must be >= 0"),
        ("{lr: .nan}", "option lr must be a finite number"),
        ("{logit_scale: 1.0e+308}", "CROFT_MAX_LOGIT_SCALE"),
        (
            "{seed: 100000000000000000000000}",
            "option seed 100000000000000000000000 is out of range",
        ),
        ("{wccf: 3}", "option wccf must be true or false"),
    ],
)
def test_method_options_are_range_checked(setup, capsys, options, match):
    text = _base(setup) + f"  - {{label: c, method: croft, options: {options}}}\n"
    _config_error(setup, capsys, text, match)


def test_seed_out_of_range_is_one_line(setup, capsys):
    text = _base(setup).replace("seeds: [1]", "seeds: [100000000000000000000000]")
    _config_error(setup, capsys, text, "seeds: 100000000000000000000000 is out of range")


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("epochs=[1,2]", "option epochs must be a whole number, got [1, 2]"),
        ("epochs=1.5", "option epochs='1.5' is not a valid int"),
        ("lr=[0.1]", "option lr must be a number, got [0.1]"),
        ("lr=-1", "option lr must be >= 0"),
        ("seed=100000000000000000000000", "out of range"),
        ("epochs=1000000000", "CROFT_MAX_EPOCHS"),
    ],
)
def test_fit_set_values_are_checked(tmp_path, capsys, item, match):
    feats = _features(tmp_path / "f.safetensors")
    argv = ["fit", "--method", "croft", "--train", str(feats), "--out", str(tmp_path / "h"),
            "--set", item]  # fmt: skip
    line = one_line(capsys, argv, sandbox=tmp_path)
    assert match in line


# -- 8 / 9: feature files -----------------------------------------------------------------------


def _raw_features(path: Path, meta: dict[str, str] | None = None, **tensors) -> Path:
    """A feature file written without croft's validation (what an attacker can hand in)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    base = {
        "features": torch.randn(6, 4, generator=g),
        "labels": torch.tensor([0, 1, 0, 1, 0, 1]),
        "text_features": torch.randn(2, 4, generator=g),
    }
    base.update(tensors)
    doc = {"croft_schema": "croft.features/1", "class_names": '["a", "b"]',
           "templates": '["a photo of a {}."]', "logit_scale": "100.0", **(meta or {})}  # fmt: skip
    save_file({k: v.contiguous() for k, v in base.items()}, str(path), metadata=doc)
    return path


@pytest.mark.parametrize(
    ("tensors", "meta", "match"),
    [
        (
            {"labels": torch.tensor([True, False, True, False, True, False])},
            {},
            "'labels' must be integers",
        ),
        ({"features": torch.zeros(6, 0, 4)}, {}, "'features' is empty (shape (6, 0, 4))"),
        (
            {"domains": torch.tensor([0, -3, 0, 0, 0, 0])},
            {"domain_names": '["p", "q"]'},
            "domain index -3 is negative",
        ),
        ({}, {"class_names": '["a", "a"]'}, "class 'a' is listed twice"),
        ({}, {"logit_scale": "1e-300"}, "'logit_scale' must be a positive number of at least"),
        ({}, {"logit_scale": "1e308"}, "CROFT_MAX_LOGIT_SCALE"),
        ({}, {"extra": "[" * 100000 + "]" * 100000}, "CROFT_MAX_JSON_DEPTH"),
        ({}, {"class_names": "[" * 100000 + "]" * 100000}, "CROFT_MAX_JSON_DEPTH"),
    ],
)
def test_bad_feature_files_are_one_line(tmp_path, capsys, tensors, meta, match):
    path = _raw_features(tmp_path / "f.safetensors", meta, **tensors)
    with pytest.raises(CroftError, match="f.safetensors"):
        load_features(path)
    out = tmp_path / "head"
    argv = ["fit", "--method", "croft", "--train", str(path), "--out", str(out),
            "--set", "lr_scaling=logit_scale", "--set", "epochs=1"]  # fmt: skip
    line = one_line(capsys, argv, sandbox=tmp_path)
    assert match in line and "f.safetensors" in line and not out.exists()


def test_deep_head_json_is_one_line(tmp_path, capsys):
    head, feats = _head_dir(tmp_path, capsys)
    (head / "head.json").write_text('{"a": ' * 100000 + "1" + "}" * 100000)
    line = one_line(capsys, ["eval", str(head), "--id", str(feats)], sandbox=tmp_path)
    assert "head.json" in line and "CROFT_MAX_JSON_DEPTH" in line


def test_bounded_reader_limits():
    from croft.fileio import parse_json, parse_yaml

    assert parse_json('{"a": [1, {"b": "[[[["}]}', "x") == {"a": [1, {"b": "[[[["}]}
    with pytest.raises(CroftError, match="x: nesting depth 65 is above the limit 64"):
        parse_json("[" * 65 + "]" * 65, "x")
    parse_json("[" * 64 + "]" * 64, "x")
    with pytest.raises(CroftError, match="CROFT_MAX_JSON_DEPTH"):
        parse_yaml("a: " + "[" * 100 + "]" * 100, "y")
    start = time.monotonic()
    with pytest.raises(CroftError, match="CROFT_MAX_YAML_NODES"):
        parse_yaml(_bomb(), "y")
    assert time.monotonic() - start < 5


def test_limits_can_be_raised_by_their_variable(monkeypatch):
    from croft.fileio import parse_json
    from croft.limits import check_limit, limit_value

    assert limit_value("json_depth") == 64
    monkeypatch.setenv("CROFT_MAX_JSON_DEPTH", "200")
    parse_json("[" * 100 + "]" * 100, "x")
    monkeypatch.setenv("CROFT_MAX_JSON_DEPTH", "inf")
    with pytest.raises(CroftError, match="CROFT_MAX_JSON_DEPTH='inf' is not a positive integer"):
        limit_value("json_depth")
    with pytest.raises(CroftError, match="above the limit"):
        check_limit("epochs", math.nan, "epochs")


# -- the limits table: croft list limits and the README ----------------------------------------


def _readme_limits() -> dict[str, tuple[int, str]]:
    text = (SRC.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("### Limits", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (int(cells[1]), cells[2].strip("`"))
    return rows


def test_readme_limits_table_matches_the_registry():
    from croft.limits import LIMITS

    expected = {lim.name: (lim.default, lim.env) for lim in LIMITS.values()}
    assert _readme_limits() == expected, "update the README's Limits table"


def test_list_limits_names_every_limit(capsys, monkeypatch):
    from croft.cli.main import main
    from croft.limits import LIMITS

    monkeypatch.setenv("CROFT_MAX_EPOCHS", "7")
    assert main(["list", "limits"]) == 0
    out = capsys.readouterr().out
    for lim in LIMITS.values():
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [lim.name])
        assert lim.env in line and lim.meaning in line
    assert "7 (default 100000)" in out


# -- 9: more inputs at fault that were exit 1 ---------------------------------------------------


@pytest.mark.parametrize(
    ("sidecar", "match"),
    [
        ("[" * 100000 + "]" * 100000, "CROFT_MAX_JSON_DEPTH"),
        ('{"preprocess_cfg": {"mean": "abc"}}', "preprocess mean must be 3 finite numbers"),
    ],
)
def test_bad_sidecar_beside_weights_is_one_line(tmp_path, capsys, tiny_ckpts, sidecar, match):
    import shutil

    from croft.backbones import TINY_VIT

    weights = tmp_path / "w" / "tiny.pt"
    weights.parent.mkdir()
    shutil.copy(tiny_ckpts[0], weights)
    (weights.parent / "open_clip_config.json").write_text(sidecar)
    root = tmp_path / "ds" / "cat"
    root.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(root / "0.png")
    argv = [
        "extract",
        "--backbone",
        f"openclip:{TINY_VIT}:{weights}",
        "--root",
        str(tmp_path / "ds"),
        "--layout",
        "folder",
        "--out",
        str(tmp_path / "o" / "f.safetensors"),
    ]
    line = one_line(capsys, argv)  # fmt: skip
    assert match in line


def test_deeply_nested_dataset_folders_are_one_line(tmp_path, capsys):
    from PIL import Image

    rel = tmp_path / "ds" / "cat"
    rel.mkdir(parents=True)
    path = str(rel)
    for _ in range(300):
        path += "/d"
        os.mkdir(path)
    Image.new("RGB", (8, 8)).save(path + "/0.png")
    line = one_line(capsys, ["data", "check", str(tmp_path / "ds"), "--layout", "folder"])
    assert "CROFT_MAX_FOLDER_DEPTH" in line


def test_infinite_pixel_limit_is_one_line(tmp_path, capsys, monkeypatch):
    from PIL import Image

    (tmp_path / "ds" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "ds" / "cat" / "0.png")
    monkeypatch.setenv("CROFT_MAX_IMAGE_PIXELS", "inf")
    argv = ["data", "check", str(tmp_path / "ds"), "--layout", "folder", "--verify-images"]
    assert "CROFT_MAX_IMAGE_PIXELS='inf'" in one_line(capsys, argv)


def test_run_record_without_seed_is_one_line(setup, capsys):
    from test_bad_inputs_config import _argv

    assert main(_argv(setup) + ["--no-report"]) == 0
    capsys.readouterr()
    metrics = setup / "out" / "runs" / "zeroshot" / "art_seed1" / "metrics.json"
    doc = json.loads(metrics.read_text())
    del doc["seed"]
    metrics.write_text(json.dumps(doc))
    line = one_line(capsys, ["report", str(setup / "out")])
    assert "metrics.json" in line and "'seed'" in line


def test_disk_full_while_saving_a_head_is_one_line(tmp_path, capsys, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    feats = _features(tmp_path / "f.safetensors")
    out = tmp_path / "head"
    line = one_line(capsys, ["fit", "--method", "zeroshot", "--train", str(feats), "--out",
                             str(out)])  # fmt: skip
    assert "head.safetensors" in line and "No space left" in line
