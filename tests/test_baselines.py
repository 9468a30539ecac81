"""Baselines on a small simulated world: fit, beat chance, save/load, known answers."""

from __future__ import annotations

import pytest
import torch

import croft.methods as M
from baseline_world import TinyTextTower, World, make_world
from croft.errors import CroftError
from croft.methods import load_head, save_head
from croft.methods.base import FittedHead
from croft.methods.prompts.dplclip import domain_contexts
from croft.methods.prompts.prompting import ClassPrompts, TowerHead, frozen, init_context
from croft.methods.wise import wise_path, wise_report, zero_point
from croft.methods.zeroshot import ZeroShotHead, zeroshot_head

FAST = {"epochs": 4, "lr": 0.02, "warmup_epochs": 0}
PROMPT = {"epochs": 3, "n_ctx": 4}


@pytest.fixture(scope="module")
def tower() -> TinyTextTower:
    return TinyTextTower()


@pytest.fixture(scope="module")
def world(tower: TinyTextTower) -> World:
    return make_world(tower)


def logits(head: FittedHead, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return head.logits(head.check_features(x))


def acc(head: FittedHead, fs) -> float:  # noqa: ANN001
    return float((logits(head, fs.eval_features()).argmax(1) == fs.labels).float().mean())


def zs_head(world: World, ensemble: bool = True) -> ZeroShotHead:
    return zeroshot_head(world.train.class_names, world.train.text_features, 100.0, ensemble)


CASES = {
    "linear_probe": {"c_grid": "0.01,1,100"},
    "clip_adapter": FAST,
    "tip_adapter": {},
    "tip_adapter_f": {**FAST, "batch_size": 32},
    "coop": PROMPT,
    "cocoop": PROMPT,
    "dplclip": {**PROMPT, "mlp_width": 32},
    "dplclip_train_mean": {**PROMPT, "mlp_width": 32, "test_prompt": "train_mean"},
    "wise": {"base": "clip_adapter", "base_options": {"epochs": 4, "lr": 0.02, "warmup_epochs": 0}},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fit_beats_chance_and_roundtrips(case: str, world: World, tower, tmp_path) -> None:  # noqa: ANN001
    name = case.replace("_train_mean", "")
    opts = dict(CASES[case])
    if name in ("coop", "cocoop", "dplclip"):
        opts["text_tower"] = tower
    result = M.fit(name, world.train, world.val, **opts)
    head = result.head
    assert M.METHODS.get(name).summary
    assert acc(head, world.test) > 0.5  # chance is 0.2 (5 classes), held-out domain
    assert head.meta["method"] == name
    before = logits(head, world.test.eval_features())
    loaded = load_head(save_head(head, tmp_path / case), expect_dim=world.train.dim)
    assert type(loaded) is type(head)
    if isinstance(loaded, TowerHead):
        loaded.attach_text_tower(tower)
    assert torch.equal(logits(loaded, world.test.eval_features()), before)
    emb = loaded.embed(world.test.eval_features())
    assert torch.allclose(emb.norm(dim=-1), torch.ones(emb.shape[0]), atol=1e-5)


def test_tip_adapter_alpha_zero_is_zeroshot(world: World) -> None:
    zs = logits(zs_head(world), world.test.eval_features())
    for name, extra in (("tip_adapter", {}), ("tip_adapter_f", {**FAST, "batch_size": 32})):
        r = M.fit(name, world.train, world.val, alpha=0.0, search=False, **extra)
        assert float(r.head.alpha) == 0.0
        assert torch.allclose(logits(r.head, world.test.eval_features()), zs, atol=1e-4)


def test_tip_adapter_cache_is_view_mean_and_search_uses_validation(world: World) -> None:
    r = M.fit("tip_adapter", world.train, world.val)
    keys = torch.nn.functional.normalize(world.train.features.double().mean(1), dim=-1)
    assert torch.allclose(r.head.keys.double(), keys, atol=1e-6)
    assert torch.equal(r.head.values.argmax(1), world.train.labels)
    sel = r.head.meta["selected"]
    assert sel["alpha_beta_from"] == "validation"
    assert sel["val_acc"] == pytest.approx(acc(r.head, world.val))
    fixed = M.fit("tip_adapter", world.train, None, alpha=0.7, beta=3.0)
    assert float(fixed.head.alpha) == pytest.approx(0.7)
    assert fixed.head.meta["selected"]["alpha_beta_from"] == "config"


def test_clip_adapter_ratio_zero_is_zeroshot(world: World) -> None:
    r = M.fit("clip_adapter", world.train, world.val, ratio=0.0, **FAST)
    zs = logits(zs_head(world, ensemble=False), world.test.eval_features())
    assert torch.allclose(logits(r.head, world.test.eval_features()), zs, atol=1e-4)


def test_linear_probe_selects_c_on_validation(world: World) -> None:
    r = M.fit("linear_probe", world.train, world.val, c_grid="0.01,1,100")
    assert r.head.meta["selected"]["c_from"] == "validation"
    best = max(r.history, key=lambda h: h["val_acc"])
    assert r.head.meta["selected"]["c"] == min(
        h["c"] for h in r.history if h["val_acc"] == best["val_acc"]
    )
    r2 = M.fit("linear_probe", world.train, None, c=0.5)
    assert r2.head.meta["selected"] == {"c": 0.5, "c_from": "config"}


WISE_CASES = {
    "ce_adapter": (FAST, True),
    "clip_adapter": (FAST, False),
    "tip_adapter_f": ({**FAST, "batch_size": 32}, True),
    "linear_probe": ({"c_grid": "1"}, True),
    "coop": (PROMPT, True),
}


@pytest.mark.parametrize("base", sorted(WISE_CASES))
def test_wise_ends_equal_zeroshot_and_fitted(base: str, world: World, tower) -> None:  # noqa: ANN001
    opts, ensemble = WISE_CASES[base]
    if base == "coop":
        opts = {**opts, "text_tower": tower}
    fitted = M.fit(base, world.train, world.val, **opts).head
    zs = zs_head(world, ensemble)
    x = world.test.eval_features()
    h0, hm, h1 = wise_path(zs, fitted, [0.0, 0.5, 1.0])
    assert type(h0) is type(fitted) and h1.meta["wise_alpha"] == 1.0
    assert torch.allclose(logits(h0, x), logits(zs, x), atol=1e-3)
    assert torch.equal(logits(h1, x), logits(fitted, x))
    assert torch.isfinite(logits(hm, x)).all()


def test_wise_report_and_method(world: World, tmp_path) -> None:  # noqa: ANN001
    fitted = M.fit("clip_adapter", world.train, world.val, **FAST).head
    zs = zs_head(world, ensemble=False)
    rows = wise_report(zs, fitted, [0.0, 0.5, 1.0], world.test, world.ood)
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert rows[0]["acc"] == pytest.approx(acc(zs, world.test))
    assert rows[-1]["acc"] == pytest.approx(acc(fitted, world.test))
    assert all(0.5 < r["auroc"] <= 1.0 for r in rows)
    with pytest.raises(CroftError, match="same ensemble"):
        zero_point(fitted, zs_head(world, ensemble=True))


def test_wise_refuses_tower_heads(world: World, tower) -> None:  # noqa: ANN001
    head = M.fit("cocoop", world.train, None, epochs=1, n_ctx=2, text_tower=tower).head
    with pytest.raises(CroftError, match="cannot be interpolated"):
        zero_point(head, zs_head(world))


def test_coop_gradient_reaches_only_the_context(world: World, tower) -> None:  # noqa: ANN001
    weights = {k: v.clone() for k, v in tower.state_dict().items()}
    r = M.fit("coop", world.train, world.val, text_tower=tower, **PROMPT)
    assert all(torch.equal(weights[k], v) for k, v in tower.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in tower.parameters())
    with frozen(tower):
        ctx = torch.nn.Parameter(init_context(tower, 4, "", 0.02, torch.device("cpu")))
        prompts = ClassPrompts(tower, world.train.class_names, 4, "cpu")
        text = torch.nn.functional.normalize(prompts.encode(ctx), dim=-1)
        x = torch.nn.functional.normalize(world.train.eval_features(), dim=-1)
        torch.nn.functional.cross_entropy(100 * x @ text.T, world.train.labels).backward()
    assert ctx.grad is not None and float(ctx.grad.abs().sum()) > 0
    assert all(p.grad is None for p in tower.parameters())
    assert r.head.ctx.shape == (4, 32) and not torch.equal(r.head.ctx, torch.zeros(4, 32))


def test_prompt_learners_need_a_backbone(world: World, tower, monkeypatch) -> None:  # noqa: ANN001
    with pytest.raises(CroftError, match="backbone"):
        M.fit("coop", world.train, None, epochs=1)
    import croft.methods.prompts.prompting as prompting

    calls: list[str] = []

    def fake_load(spec: str, device) -> TinyTextTower:  # noqa: ANN001
        calls.append(spec)
        return tower

    monkeypatch.setattr(prompting, "load_tower", fake_load)
    train = world.train.subset(torch.ones(len(world.train), dtype=torch.bool))
    train.extra["backbone_spec"] = "tiny:test"
    head = M.fit("cocoop", train, None, epochs=1, n_ctx=2).head
    assert calls == ["tiny:test"] and head.backbone == "tiny:test"
    fresh = type(head).from_spec(head.spec(), head.class_names, head.feature_dim, 100.0)
    fresh.load_state_dict(head.state_dict())
    x = world.test.eval_features()[:5]
    assert torch.equal(logits(fresh, x), logits(head, x))  # lazy load on first use
    assert calls == ["tiny:test", "tiny:test"]
    fresh.backbone = ""
    fresh._tower = type(fresh._tower)()
    with pytest.raises(CroftError, match="attach_text_tower"):
        logits(fresh, x)


def test_dplclip_domain_contexts() -> None:
    ctx = torch.arange(12.0).reshape(4, 1, 3)
    dctx, row = domain_contexts(ctx, torch.tensor([2, 0, 2, 0]))
    assert torch.equal(row, torch.tensor([1, 0, 1, 0]))
    assert torch.equal(dctx[0], (ctx[1] + ctx[3]) / 2)
    assert torch.equal(dctx[1], (ctx[0] + ctx[2]) / 2)
    one, row1 = domain_contexts(ctx, None)
    assert torch.equal(one[0], ctx.mean(0)) and row1.tolist() == [0, 0, 0, 0]
