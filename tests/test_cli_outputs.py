"""``croft eval`` without OOD sets, ``croft list -v`` and ``croft fit --help-options``,
and the options listing generated from the config dataclasses."""

from __future__ import annotations

import pytest

from croft.cli.main import main
from croft.features import save_features
from croft.options_doc import config_options, method_options


def test_eval_reports_accuracy_without_an_ood_set(small_task, tmp_path, capsys) -> None:
    train = save_features(small_task.train, tmp_path / "train.safetensors")
    test = save_features(small_task.test, tmp_path / "test.safetensors")
    head = tmp_path / "head"
    assert main(["fit", "--train", str(train), "--method", "zeroshot", "--out", str(head)]) == 0
    capsys.readouterr()
    out_json = tmp_path / "m.json"
    assert main(["eval", str(head), "--id", str(test), "--out", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy on test.safetensors:" in printed and "accuracy only" in printed
    import json

    doc = json.loads(out_json.read_text())
    assert doc["detection"] == {} and 0.0 <= doc["accuracy"] <= 1.0


def test_options_from_dataclass_comments_metadata_and_glossary() -> None:
    from dataclasses import dataclass, field

    @dataclass
    class Base:
        lr: float = 0.1
        # how many
        # things to do
        count: int = 3

    @dataclass
    class Cfg(Base):
        mode: str = "a"  # a or b
        tagged: float = field(default=2.0, metadata={"help": "from metadata"})
        bare: bool = False

    docs = {o.name: o for o in config_options(Cfg)}
    assert list(docs) == ["lr", "count", "mode", "tagged", "bare"]
    assert docs["lr"].help.startswith("learning rate") and docs["lr"].default == "0.1"
    assert docs["count"].help == "how many things to do" and docs["count"].type == "int"
    assert docs["mode"].help == "a or b" and docs["mode"].default == "'a'"
    assert docs["tagged"].help == "from metadata" and docs["bare"].help == ""


def test_every_method_option_is_listed(capsys) -> None:
    import dataclasses

    import croft.methods as M

    for entry in M.METHODS:
        names = [o.name for o in method_options(entry.name)]
        assert names == [f.name for f in dataclasses.fields(M.METHODS.get(entry.name).config_cls)]
    assert main(["list", "methods", "-v"]) == 0
    out = capsys.readouterr().out
    assert "croft: CRoFT" in out and "lambda2" in out and "1000.0" in out
    assert "weight of the energy-gradient (EDR) penalty" in out


def test_fit_help_options_prints_and_exits(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--method", "coop", "--help-options"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("coop: CoOp") and "n_ctx" in out and "number of learned" in out
    with pytest.raises(SystemExit):
        main(["fit", "--help-options", "ce_adapter"])
    assert capsys.readouterr().out.startswith("ce_adapter:")
