"""Planned runs (issue 21): a grid point on a task is resolved once, and run keys are the
ones croft wrote before planned runs existed (so existing run folders stay valid)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import croft.methods.base as base
from croft.experiments.grid import expand_methods
from croft.experiments.loading import build_config
from croft.experiments.plan import plan_run, plan_runs
from croft.experiments.protocols import PROTOCOLS, experiment_plan, run_experiment
from croft.experiments.records import read_run_key
from croft.protocols import demo, world_demo
from croft.simulate import SimConfig

SMALL = SimConfig(dim=16, classes=3, unseen_classes=2, domains=2, shots=4, test_per_class=10)

# config keys computed by croft before PlannedRun (runner.config_key), for
# (label, held-out domain, seed): the world demo's packaged config, seeds [1, 2], on a
# world at /croft-world and a fixed weight path (the real one depends on the checkout) ...
WORLD_KEYS = {
    ("croft[lambda1=15.0,lambda2=10.0,lr=0.0617678]", "photo", 1):
        "21504bfe6497b58f999771d522649d6d8ffaa14284fc96958437caa341682cd0",
    ("ce_adapter[lr=0.2470714]", "painting", 2):
        "24a189ca39f1425ca41d394c839315f8445de615bc8b9be507f7d1c5084f0fd1",
    ("zeroshot", "photo", 2): "461cef4d10fbdf25cf0a2f64aaaac27d6a2a88cc9d1ff14a0e8ced4244348028",
    ("coop[lr=0.0617678]", "photo", 1):
        "0b4a294fa4479faaafc81e1ea4cf7bacc2d90780cb702cce6cac7bd88ed66726",
}  # fmt: skip
# ... the synthetic demo's settings (simulator defaults, energy + knn) ...
SYNTHETIC_KEYS = {
    (
        "croft_paper",
        "domain3",
        2,
    ): "e3ef7ba9744b9ce1f2a080b11f3e7ad2586cbcfe8eb4e8ba9d35b33a6d98c00c",
    (
        "ce_adapter",
        "domain0",
        1,
    ): "9d30b23e629e5168b89d6e6556b58eb7d7da44b3cafabb8efd6333783176ce40",
}
# ... and whole run keys (config and data) of `croft demo --synthetic` on SMALL, seed 1
RUN_KEYS = {
    "croft_official/domain_1_seed1":
        "e32d1ac9e1d860d17e40fd6009383d943f9086e42a75bcb1f6ae5a270e876585",
    "zeroshot/domain_0_seed1": "9f69f33fc8ad1e7cdfd397dfe7f5c1684990dc307757e12f780b4eae9b5bc140",
}  # fmt: skip


def test_config_keys_are_the_ones_written_before(tmp_path) -> None:
    cfg = world_demo.demo_config(Path("/croft-world"), [1, 2], full=True, prompt_learners=True)
    cfg.backbone = "openclip:croft-world-rn-tiny:/weights/world.safetensors"
    runs = {m.label: m for m in expand_methods(cfg.methods)}
    for (label, dom, seed), key in WORLD_KEYS.items():
        assert plan_run(runs[label], dom, seed, cfg.run_settings(), tmp_path).config_key == key
    syn = demo.demo_config()
    runs = {m.label: m for m in demo.demo_methods()}
    for (label, dom, seed), key in SYNTHETIC_KEYS.items():
        assert plan_run(runs[label], dom, seed, syn.run_settings(), tmp_path).config_key == key


def test_synthetic_run_keys_are_the_ones_written_before(tmp_path) -> None:
    out = tmp_path / "demo"
    demo.run_synthetic_demo(out, seeds=(1,), sim=SMALL, progress=False)
    for folder, key in RUN_KEYS.items():
        assert read_run_key(out / "runs" / folder)["run_key"] == key


def _count_make_config(monkeypatch) -> list:  # noqa: ANN001
    """Every make_config call, wherever it was imported (the builds are counted)."""
    import sys

    calls: list = []
    original = base.make_config

    def counting(config_cls, overrides=None):  # noqa: ANN001, ANN202
        calls.append(config_cls.__name__)
        return original(config_cls, overrides)

    for mod in list(sys.modules.values()):
        ours = mod is not None and getattr(mod, "__name__", "").startswith("croft")
        if ours and getattr(mod, "make_config", None) is original:
            monkeypatch.setattr(mod, "make_config", counting)
    return calls


def _grid_config(engine: str):  # noqa: ANN202
    doc = {
        "name": "grid", "protocol": "synthetic", "simulator": dataclasses.asdict(SMALL),
        "seeds": [1, 2], "fit_engine": engine, "scores": ["energy"],
        "methods": [
            {"label": "zs", "method": "zeroshot"},
            {"label": "ce", "method": "ce_adapter", "options": {"epochs": 2}},
            {"label": "croft", "method": "croft", "options": {"epochs": 2},
             "grid": {"lambda2": [0.0, 10.0], "lr": [0.01, 0.02]}},
        ],
    }  # fmt: skip
    cfg = build_config(doc, "grid")
    cfg.check()
    return cfg


@pytest.mark.parametrize("engine", ["batched", "sequential"])
def test_each_method_config_is_built_once_per_run(tmp_path, monkeypatch, engine) -> None:
    """Walking a grid (2 tasks x 2 seeds x 6 grid points) from its config to the fits and
    the run folders builds each run's method config exactly once, with either engine; a
    rerun that reuses every run builds each once again (planning) and fits none."""
    cfg = _grid_config(engine)
    proto = PROTOCOLS.get(cfg.protocol)
    n_runs = len(proto.pairs(proto.records(cfg))) * 6
    calls = _count_make_config(monkeypatch)
    out = tmp_path / "out"
    result = run_experiment(cfg, out, progress=False, workers=1)
    assert len(result["records"]) == n_runs == 24
    assert len(calls) == n_runs, calls
    calls.clear()
    again = run_experiment(cfg, out, progress=False, workers=1)
    assert len(calls) == n_runs
    assert [r["run_key"] for r in again["records"]] == [r["run_key"] for r in result["records"]]


def test_a_plan_holds_typed_configs_and_folders(tmp_path) -> None:
    cfg = _grid_config("auto")
    plan = experiment_plan(cfg, [("domain_1", 2)], tmp_path)
    assert [p.label for p in plan][:3] == ["zs", "ce", "croft[lambda2=0.0,lr=0.01]"]
    croft = plan[2]
    assert (croft.config.lambda2, croft.config.lr, croft.config.seed) == (0.0, 0.01, 2)
    assert croft.folder == tmp_path / "runs" / croft.label / "domain_1_seed2"
    assert croft.key(None)["config_key"] == croft.config_key
    same = plan_runs([croft.run], [("domain_1", 2)], cfg.run_settings(), Path(tmp_path))
    assert same[0].config_key == croft.config_key and same[0].config == croft.config
