"""The one override grammar where the mini-languages used to be: ``croft extract --option``,
WiSE's ``base_options`` and the list options ``c_grid`` / ``alpha_grid``."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import croft.methods as M
from croft.cli.cmd_extract import parse_options as extract_options
from croft.cli.common import parse_sets
from croft.errors import CroftError
from croft.experiments import MethodGrid, expand_methods
from croft.features.files import FeatureSet
from croft.methods.linear_probe import LinearProbeConfig
from croft.methods.training import config_dict, parse_floats
from croft.methods.wise import WiseConfig
from croft.methods.wise import parse_options as base_options

C, D = 3, 8


def _set(n: int, seed: int) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(C, D, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % C
    return FeatureSet(
        features=text[y] + 0.9 * torch.randn(n, D, generator=g),
        labels=y,
        class_names=["a", "b", "c"],
        text_features=text,
        templates=["a photo of a {}."],
    )


def _one_line(fn, *args, match: str) -> None:  # noqa: ANN001
    with pytest.raises(CroftError, match=match) as info:
        fn(*args)
    assert "\n" not in str(info.value)


# -- croft extract --option -------------------------------------------------------------------


def test_extract_options_are_yaml_values() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these is deprecated
        got = extract_options(
            ["test_domain=photo", "ood=true", "max_per_class=100", "splits=[train, val]"]
        )
    assert got == {
        "test_domain": "photo",
        "ood": True,
        "max_per_class": 100,
        "splits": ["train", "val"],
    }
    assert extract_options(None) == {}


def test_extract_comma_list_still_reads_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match=r"splits=\[train, val\]"):
        assert extract_options(["splits=train,val"]) == {"splits": ("train", "val")}


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("test_domain", "expected KEY=VALUE"),
        ("splits=[train", "not a valid YAML value"),
        ("a.b=1", "one name"),
    ],
)
def test_extract_malformed_options_are_one_line(item: str, match: str) -> None:
    _one_line(extract_options, [item], match=f"--option.*{match}")


# -- list options: c_grid, alpha_grid -------------------------------------------------------


def test_float_lists_from_yaml_lists_text_and_numbers() -> None:
    want = [0.01, 1.0, 100.0]
    assert parse_floats([0.01, 1, 100], "c_grid") == want
    assert parse_floats((0.01, 1, 100), "c_grid") == want
    assert parse_floats("0.01,1,100", "c_grid") == want
    assert parse_floats("0.01; 1; 100", "c_grid") == want
    assert parse_floats(2, "c_grid") == [2.0]
    for bad, match in (("a,1", "give a list of numbers"), ([0.1, True], "give a list")):
        _one_line(parse_floats, bad, "c_grid", match=f"c_grid.*{match}")
    for empty in ("", [], " , "):
        _one_line(parse_floats, empty, "c_grid", match="c_grid is empty")


def test_list_options_round_trip_through_set_and_the_head_record() -> None:
    cfg = M.make_config(LinearProbeConfig, parse_sets(["c_grid=[0.1, 1]", "c=2"]))
    assert cfg.c_grid == [0.1, 1] and cfg.c == 2.0
    assert json.loads(json.dumps(config_dict(cfg)))["c_grid"] == [0.1, 1]
    text = M.make_config(LinearProbeConfig, parse_sets(["c_grid=0.1,1"]))
    assert text.c_grid == "0.1,1"  # the older text stays text (and parses the same)
    assert parse_floats(text.c_grid, "c_grid") == parse_floats(cfg.c_grid, "c_grid")
    _one_line(M.make_config, LinearProbeConfig, {"c_grid": [0.1, -1]}, match="> 0")
    wise = M.make_config(WiseConfig, parse_sets(["alpha_grid=[0, 0.5, 1]"]))
    assert parse_floats(wise.alpha_grid, "alpha_grid") == [0.0, 0.5, 1.0]


def test_list_and_text_c_grid_fit_the_same_probe() -> None:
    train, val = _set(30, 1), _set(21, 2)
    a = M.fit("linear_probe", train, val, c_grid=[0.01, 1, 100])
    b = M.fit("linear_probe", train, val, c_grid="0.01,1,100")
    assert a.history == b.history and a.head.meta["selected"] == b.head.meta["selected"]
    assert torch.equal(a.head.weight, b.head.weight)


def test_a_yaml_list_for_a_list_option_is_its_value_not_a_grid() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = MethodGrid("lp", "linear_probe", {"c_grid": [0.1, 1]}, {"c": [1.0, 2.0]})
    assert m.options == {"c_grid": [0.1, 1]}
    runs = expand_methods([m])
    assert [dict(r.options) for r in runs] == [
        {"c_grid": [0.1, 1], "c": 1.0},
        {"c_grid": [0.1, 1], "c": 2.0},
    ]
    with pytest.warns(DeprecationWarning, match="read as a grid"):  # other options: unchanged
        assert MethodGrid("w", "wise", {"alpha": [0.1, 0.2]}).grid == {"alpha": [0.1, 0.2]}


# -- WiSE base_options --------------------------------------------------------------------


def test_base_options_mapping_text_and_the_deprecated_form() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert base_options({"epochs": 2, "lr": 0.01}) == {"epochs": 2, "lr": 0.01}
        assert base_options("{epochs: 2, lr: 0.01}") == {"epochs": 2, "lr": 0.01}
        assert base_options("") == {}
        cfg = M.make_config(WiseConfig, parse_sets(["base_options={epochs: 2}"]))
    assert cfg.base_options == {"epochs": 2}
    with pytest.warns(DeprecationWarning, match=r"base_options=\{epochs: 2, lr: 0.01\}"):
        assert base_options("epochs=2;lr=0.01") == {"epochs": "2", "lr": "0.01"}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([1, 2], "give a mapping"),
        ("{1: 2}", "not a name"),
        ("{epochs: [1", "not a valid YAML value"),
        ("epochs", "give a mapping"),
    ],
)
def test_malformed_base_options_are_one_line(value: object, match: str) -> None:
    _one_line(base_options, value, match=match)
    _one_line(M.make_config, WiseConfig, {"base_options": value}, match=match)


def test_wise_base_options_mapping_and_text_fit_the_same_head() -> None:
    train, val = _set(30, 5), _set(21, 6)
    a = M.fit("wise", train, val, base="ce_adapter", base_options={"epochs": 2})
    with pytest.warns(DeprecationWarning):
        b = M.fit("wise", train, val, base="ce_adapter", base_options="epochs=2")
    assert a.selection["wise"] == b.selection["wise"]
    for name, value in a.head.state_dict().items():
        assert torch.equal(value, b.head.state_dict()[name]), name
    assert a.head.meta["config"]["base_options"] == {"epochs": 2}


def test_cli_shows_croft_deprecations_as_one_warning_line(tmp_path, capsys):
    from croft.cli.main import main

    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    rc = main(
        [
            "extract",
            "--root",
            str(root),
            "--layout",
            "folder",
            "--option",
            "splits=a,b",
            "--out",
            str(tmp_path / "f.safetensors"),
            "--backbone",
            "openclip:X:/nope.pt",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert any(line.startswith("croft: warning:") and "splits" in line for line in err), err
