"""The one override grammar (``key.path=value``, YAML values) and explicit grids."""

from __future__ import annotations

import pytest

from croft.cli.common import parse_sets
from croft.errors import CroftError
from croft.experiments import MethodGrid, expand_methods
from croft.overrides import apply_overrides, parse_assignment, parse_options


def test_paths_and_yaml_values() -> None:
    assert parse_assignment("methods.2.options.lr=0.01") == (["methods", 2, "options", "lr"], 0.01)
    assert parse_assignment("seeds=[1, 2]") == (["seeds"], [1, 2])
    assert parse_assignment("name=") == (["name"], "")
    assert parse_assignment("flag=yes") == (["flag"], True)
    doc = {"methods": [{"label": "a"}], "data": {"root": "x"}}
    apply_overrides(doc, ["data.options.variant=v2", "methods.0.grid={lambda2: [1, 10]}"])
    assert doc["data"] == {"root": "x", "options": {"variant": "v2"}}
    assert doc["methods"][0]["grid"] == {"lambda2": [1, 10]}


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("methods.9.label=x", "index 9 is out of range"),
        ("shots=[1,", "not a valid YAML value"),
        ("shots", "expected KEY=VALUE"),
        ("a..b=1", "bad key"),
        ("a.-1=1", "bad key"),
        ("shots.x=1", "shots is not a mapping"),
        ("data.0=1", "data is not a list"),
    ],
)
def test_malformed_items_are_one_line(item: str, match: str) -> None:
    doc = {"methods": [{}], "shots": 4, "data": {}}
    with pytest.raises(CroftError, match=match) as info:
        apply_overrides(doc, [item])
    assert "\n" not in str(info.value)


def test_method_options_one_name_each() -> None:
    assert parse_options(["lr=0.01", "variant=paper", "betas=[0.9, 0.99]"]) == {
        "lr": 0.01,
        "variant": "paper",
        "betas": [0.9, 0.99],
    }
    with pytest.raises(CroftError, match="one name"):
        parse_options(["a.b=1"])
    # croft fit --set: scalars stay text for the method config's own conversion
    assert parse_sets(["lr=0.01", "variant=paper"]) == {"lr": "0.01", "variant": "paper"}
    with pytest.raises(CroftError, match="expected KEY=VALUE"):
        parse_sets(["lr"])


def test_explicit_grid_and_the_deprecated_list_form() -> None:
    new = MethodGrid("croft", "croft", {"lambda1": 5.0}, {"lambda2": [10.0, 1.0]})
    assert [(r.label, dict(r.options)) for r in expand_methods([new])] == [
        ("croft[lambda2=10.0]", {"lambda1": 5.0, "lambda2": 10.0}),
        ("croft[lambda2=1.0]", {"lambda1": 5.0, "lambda2": 1.0}),
    ]
    with pytest.warns(DeprecationWarning, match="grid: {lambda2: \\[10.0, 1.0\\]}"):
        old = MethodGrid("croft", "croft", {"lambda1": 5.0, "lambda2": [10.0, 1.0]})
    assert expand_methods([old]) == expand_methods([new])
    with pytest.raises(CroftError, match="both an option and a grid"):
        MethodGrid("c", "croft", {"lambda2": 1.0}, {"lambda2": [1.0]})


def test_one_selection_path_is_deterministic_and_strict() -> None:
    """The union index holds one record per image in path order whatever the set order
    (the feature-store key depends on it), and an image of an unknown domain is an error
    (it used to become domain 0)."""
    import random

    import torch

    from croft.data.index import Record
    from croft.experiments.task import Pool, by_path, pick
    from croft.features.files import FeatureSet

    recs = [
        Record(f"{d}/{k}.png", k % 2, "ab"[k % 2], d, s)
        for d in "xy"
        for k in range(3)
        for s in ("train", "test")
    ]
    orders = []
    for seed in range(5):
        shuffled = list(recs)
        random.Random(seed).shuffle(shuffled)
        orders.append(by_path(set(shuffled)))
    assert all(o == orders[0] for o in orders) and len(orders[0]) == 6
    like = FeatureSet(
        features=torch.zeros(6, 4), labels=torch.zeros(6, dtype=torch.long), class_names=["a", "b"]
    )
    src = Pool(torch.arange(24.0).view(6, 4), {r.path: i for i, r in enumerate(orders[0])}, like)
    fs = pick(src, recs[:2], class_names=["a", "b"], text=None, name="t", domain_names=["x"])
    assert fs.domains.tolist() == [0, 0] and fs.features[0].tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(CroftError, match="domain.*'y'.*not among"):
        pick(src, recs[6:8], class_names=["a", "b"], text=None, name="t", domain_names=["x"])
