"""Feature files: round trip, schema, and one clear error per bad input."""

from __future__ import annotations

import pytest
import torch

from croft.errors import CroftError
from croft.features import FeatureSet, load_features, save_features


def _fs(**over) -> FeatureSet:
    kw = dict(
        features=torch.randn(6, 3, 4),
        labels=torch.tensor([0, 1, 2, 0, 1, 2]),
        class_names=["a", "b", "c"],
        domains=torch.tensor([0, 0, 1, 1, 0, 1]),
        domain_names=["photo", "sketch"],
        text_features=torch.randn(3, 2, 4),
        templates=["a photo of a {}.", "a sketch of a {}."],
        logit_scale=42.5,
        extra={"backbone": {"arch": "tiny"}},
    )
    kw.update(over)
    return FeatureSet(**kw)


def test_round_trip(tmp_path) -> None:
    fs = _fs()
    path = save_features(fs, tmp_path / "sub" / "train.safetensors")
    back = load_features(path)
    assert torch.equal(back.features, fs.features)
    assert torch.equal(back.labels, fs.labels)
    assert torch.equal(back.domains, fs.domains)
    assert torch.equal(back.text_features, fs.text_features)
    assert back.class_names == fs.class_names and back.domain_names == fs.domain_names
    assert back.templates == fs.templates and back.logit_scale == 42.5
    assert back.extra == {"backbone": {"arch": "tiny"}}
    assert back.num_views == 3 and back.dim == 4
    assert torch.equal(back.view(4), fs.features[:, 1])
    assert not list(tmp_path.glob("sub/.*tmp*")), "temporary file left behind"


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"features": torch.randn(6)}, r"shape \(N, D\) or \(N, V, D\)"),
        ({"features": torch.zeros(6, 3, 4, dtype=torch.int64)}, "floating point"),
        ({"labels": torch.tensor([0, 1, 2])}, r"'labels' must have shape \(6,\)"),
        ({"labels": torch.tensor([0, 1, 2, 0, 1, 7])}, r"labels out of range \[-1, 2\]"),
        ({"domains": torch.tensor([0, 0, 1, 1, 0, 5])}, "domain index 5 has no name"),
        ({"text_features": torch.randn(2, 4)}, "'text_features' must have shape"),
        ({"logit_scale": -1.0}, "logit_scale must be a positive"),
    ],
)
def test_bad_input_is_one_clear_line(over, match) -> None:
    with pytest.raises(CroftError, match=match) as info:
        _fs(**over)
    assert "\n" not in str(info.value)


def test_nan_features_name_the_row() -> None:
    f = torch.randn(6, 3, 4)
    f[4, 1, 2] = float("nan")
    with pytest.raises(CroftError, match="NaN or inf .first at row 4"):
        _fs(features=f)


def test_training_needs_every_class_and_no_unknown_labels() -> None:
    with pytest.raises(CroftError, match="class 'c' has no training example"):
        _fs(labels=torch.tensor([0, 1, 1, 0, 1, 0])).require_labels()
    with pytest.raises(CroftError, match="found -1"):
        _fs(labels=torch.tensor([0, 1, 2, -1, 1, 2])).require_labels()


def test_load_errors(tmp_path) -> None:
    with pytest.raises(CroftError, match="does not exist"):
        load_features(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(CroftError, match="not a safetensors feature file"):
        load_features(junk)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"features": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(CroftError, match="croft_schema"):
        load_features(foreign)


def test_equal_content_gives_equal_bytes(tmp_path) -> None:
    """safetensors orders its metadata arbitrarily; save_features makes the header canonical."""
    fs = _fs()
    a = save_features(fs, tmp_path / "a.safetensors").read_bytes()
    b = save_features(
        _fs(
            features=fs.features,
            labels=fs.labels,
            domains=fs.domains,
            text_features=fs.text_features,
        ),
        tmp_path / "b.safetensors",
    ).read_bytes()
    assert a == b
