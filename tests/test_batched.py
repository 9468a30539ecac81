"""The batched engine: every member equals its own single fit (a batch of one on the same
engine: no other member leaks into it); golden cases in batched form.

Tolerances. float64: 1e-10, max abs difference on every head tensor, history value and
selection number (observed ~1e-13: batched and single matmuls round alike, SGD is the
optimiser's own fused kernel per member). float32: training amplifies rounding
differently per conditioning, so a member's batched head may differ from its single float32
head by at most ``max(FLOAT32_ATOL, e32)`` where ``e32`` is that single float32 fit's own
distance to its float64 fit: batching never costs more than float32 itself does (observed:
1e-7 on ordinary members, 4e-3 against e32 = 5e-2 on an ill-conditioned lr = 0.01 member).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import croft.methods as M
from croft.errors import CroftError
from croft.methods.croft.chunk import Chunk, hyper
from croft.methods.croft.core import adapter_forward
from croft.methods.croft.engine import chunk_size, fit_many, member_bytes
from croft.methods.croft.steps import BatchedParams, Structure, official_step
from croft.simulate import random_features as make_set
from test_official_parity import GOLDEN_DIR, _cases, config_from_case

ATOL64 = 1e-10
FLOAT32_ATOL = 1e-5
HEAD_TENSORS = ("fc_i", "fc_t", "generator", "text")


TRAIN_A, TRAIN_B = make_set(5, 8, 12, 3, 0), make_set(5, 8, 12, 3, 1)
VAL_A, VAL_B = make_set(5, 4, 12, 1, 2), make_set(5, 7, 12, 1, 3)
BASE = {"dtype": "float64", "epochs": 4, "batch_size": 8}
# members differ in data, seed, lr, warm-up, momentum, weight decay, ratios, policy
MEMBERS = [
    (TRAIN_A, VAL_A, {"seed": 1}),
    (TRAIN_B, VAL_B, {"seed": 2, "lr": 0.01, "warmup_epochs": 0}),
    (TRAIN_A, VAL_B, {"seed": 3, "ratio": 0.3, "weight_decay": 0.01, "momentum": 0.5}),
    (TRAIN_B, VAL_A, {"seed": 4, "ratio_text": 0.2, "eval_ratio": 0.5, "select_epoch": "last"}),
]
CROFT_EXTRA = [
    {"lambda2": 1000.0},
    {"lambda2": 10.0, "lambda1": 5.0},
    {"lambda2": 100.0, "logit_scale": 50.0},
    {"lambda2": 0.0, "lambda1": 20.0},
]
STRUCTURES = {
    "official": {},
    "official_gen0": {"gen_step": 0},
    "official_gen3_setup1": {"gen_step": 3, "energy_reduction": "setup1"},
    "official_no_branch": {"worst_case_branch": False},
    "official_wccf_off": {"wccf": False},
    "paper": {"variant": "paper", "lambda_c": 0.5, "energy_temperature": 0.5},
    "paper_gen2_wccf_off": {"variant": "paper", "gen_step": 2, "wccf": False},
    "paper_no_align": {"variant": "paper", "align_term": False, "det_ratio": 0.5},
}


def assert_same(single: M.FitResult, batched: M.FitResult, atol: float, history: bool = True):
    for k in HEAD_TENSORS:
        diff = (getattr(single.head, k) - getattr(batched.head, k)).abs().max()
        assert float(diff) <= atol, f"{k}: {float(diff)}"
    assert single.head.spec() == batched.head.spec()
    meta_s, meta_b = dict(single.head.meta), dict(batched.head.meta)
    assert meta_s.keys() == meta_b.keys()
    meta_s.pop("history"), meta_b.pop("history")  # compared below (seconds differ)
    meta_s.pop("selection"), meta_b.pop("selection")
    if "ood_threshold" in meta_s:
        a, b = meta_s.pop("ood_threshold"), meta_b.pop("ood_threshold")
        assert abs(a["value"] - b["value"]) <= max(atol, 1e-4 if atol > ATOL64 else 0.0)
    assert meta_s == meta_b
    if not history:
        return
    assert single.selected_epoch == batched.selected_epoch
    assert len(single.history) == len(batched.history)
    for a, b in zip(single.history, batched.history, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key != "seconds":
                assert abs(a[key] - b[key]) <= atol, (key, a[key], b[key])
    assert single.selection.keys() == batched.selection.keys()
    for key, value in single.selection.items():
        other = batched.selection[key]
        if isinstance(value, float):
            assert abs(value - other) <= atol, (key, value, other)
        else:
            assert value == other, (key, value, other)


def run_both(method: str, members, **kw):  # noqa: ANN001, ANN201
    batched = fit_many(method, members, **kw)
    singles = [M.fit(method, tr, va, **opts) for tr, va, opts in members]
    return singles, batched


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_croft_members_equal_single_fits_float64(name: str) -> None:
    members = [
        (tr, va, {**BASE, **opts, **extra, **STRUCTURES[name]})
        for (tr, va, opts), extra in zip(MEMBERS, CROFT_EXTRA, strict=True)
    ]
    singles, batched = run_both("croft", members)
    for s, b in zip(singles, batched, strict=True):
        assert_same(s, b, ATOL64)


def test_ce_adapter_members_equal_single_fits_float64() -> None:
    members = [(tr, va, {**BASE, **opts}) for tr, va, opts in MEMBERS]
    singles, batched = run_both("ce_adapter", members)
    for s, b in zip(singles, batched, strict=True):
        assert_same(s, b, ATOL64)


def test_float32_members_match_to_documented_tolerance() -> None:
    members = [
        (tr, va, {**BASE, **opts, **extra, "dtype": "float32", "select_epoch": "last"})
        for (tr, va, opts), extra in zip(MEMBERS, CROFT_EXTRA, strict=True)
    ]
    singles, batched = run_both("croft", members)
    for (tr, va, opts), s, b in zip(members, singles, batched, strict=True):
        s64 = M.fit("croft", tr, va, **{**opts, "dtype": "float64"})
        for k in HEAD_TENSORS:
            single = getattr(s.head, k)
            e32 = float((single - getattr(s64.head, k).float()).abs().max())
            diff = float((single - getattr(b.head, k)).abs().max())
            assert diff <= max(FLOAT32_ATOL, e32), (k, diff, e32)
        assert s.head.meta["config"] == b.head.meta["config"]
        assert s.selected_epoch == b.selected_epoch


def test_shapes_group_automatically_and_results_keep_member_order(caplog) -> None:  # noqa: ANN001
    other = make_set(3, 10, 8, 1, 7)  # another class count, dimension, row count, views
    val_other = make_set(3, 3, 8, 1, 8)
    members = [
        (TRAIN_A, VAL_A, {**BASE, "seed": 1}),
        (other, val_other, {**BASE, "seed": 2}),
        (TRAIN_B, None, {**BASE, "seed": 3}),  # no validation: its own group
        (TRAIN_B, VAL_B, {**BASE, "seed": 4, "gen_step": 2}),  # another step structure
        (other, None, {**BASE, "seed": 5, "epochs": 2}),
    ]
    with caplog.at_level("INFO", logger="croft.progress"):
        singles, batched = run_both("croft", members, chunk_budget_bytes=10**9, progress=True)
    for s, b in zip(singles, batched, strict=True):
        assert_same(s, b, ATOL64)
    done = [r.getMessage() for r in caplog.records if r.name == "croft.progress"][-1]
    assert done.startswith("fit croft: 18/18 (100%)") and "member-epoch/s" in done


def test_small_budget_chunks_give_the_same_results_and_one_member_too_big_is_refused() -> None:
    members = [(tr, va, {**BASE, **opts}) for tr, va, opts in MEMBERS]
    one = member_bytes(12, 5, 8, 40, 3, 35, 8)  # VAL_B: 35 rows
    whole = fit_many("croft", members)
    chunked = fit_many("croft", members, chunk_budget_bytes=one)  # one member per chunk
    for a, b in zip(whole, chunked, strict=True):
        assert_same(a, b, 0.0)
    with pytest.raises(CroftError, match="one member needs about .* raise chunk_budget_bytes"):
        fit_many("croft", members, chunk_budget_bytes=one - 1)
    assert chunk_size(100, 1000, "x") == 10


def test_member_bytes_bounds_a_1000_member_grid_at_d768() -> None:
    per = member_bytes(768, 7, 32, 336, 8, 500, 4)
    assert 30 * 2**20 < per < 200 * 2**20  # ~ 100 MiB: 2 GiB holds ~20 members per chunk
    assert chunk_size(per, 2 * 2**30, "grid") * per <= 2 * 2**30


def test_a_diverging_member_is_handled_alone() -> None:
    bad = {**BASE, "seed": 9, "lr": 1e300, "warmup_epochs": 1}
    members = [(TRAIN_A, VAL_A, {**BASE, "seed": 1}), (TRAIN_B, VAL_B, bad)]
    singles, batched = run_both("croft", members)
    assert batched[1].selection["diverged"] and batched[1].selection["diverged_epoch"] == 1
    for s, b in zip(singles, batched, strict=True):
        assert_same(s, b, ATOL64)
    worse = {**bad, "warmup_epochs": 0}  # diverges in epoch 0: no head at all
    with pytest.raises(CroftError, match="diverged at epoch 0"):
        M.fit("croft", TRAIN_B, VAL_B, **worse)
    out = fit_many("croft", [members[0], (TRAIN_B, VAL_B, worse)], errors="return")
    assert isinstance(out[1], CroftError) and "diverged at epoch 0" in str(out[1])
    assert_same(singles[0], out[0], ATOL64)
    with pytest.raises(CroftError, match="diverged at epoch 0"):
        fit_many("croft", [members[0], (TRAIN_B, VAL_B, worse)])


def test_methods_without_batched_step_fall_back_and_threads_are_restored() -> None:
    threads = torch.get_num_threads()
    members = [(TRAIN_A, VAL_A, {"epochs": 2, "seed": s, "dtype": "float64"}) for s in (1, 2)]
    singles, batched = run_both("clip_adapter", members, threads=1)
    assert torch.get_num_threads() == threads
    for s, b in zip(singles, batched, strict=True):
        for k, v in s.head.state_dict().items():
            assert torch.equal(v, b.head.state_dict()[k])


# ------------------------------------------------------------------ golden, batched form
@pytest.mark.parametrize("name", _cases())
def test_golden_case_as_member_of_a_batch(name: str) -> None:
    """The golden case is member 1 of 3; members 0 and 2 have other data and settings."""
    case = json.loads((GOLDEN_DIR / "cases.json").read_text())[name]
    data = np.load(GOLDEN_DIR / f"{name}.npz")
    cfg = config_from_case(case)
    others = [
        M.make_config(type(cfg), {**cfg.__dict__, "lambda1": 3.0, "lambda2": 7.0, "lr": 0.01}),
        M.make_config(type(cfg), {**cfg.__dict__, "ratio": 0.4, "weight_decay": 0.01}),
    ]
    cfgs = [others[0], cfg, others[1]]
    dtype = torch.float64
    t0 = torch.from_numpy(data["text_features"]).to(dtype)
    c, d = t0.shape
    g = torch.Generator().manual_seed(0)
    t = torch.stack([torch.randn(c, d, generator=g, dtype=dtype), t0, t0.flip(0)])
    hp = hyper(cfgs, [100.0] * 3, dtype, torch.device("cpu"))
    hp.values["lr"] = torch.tensor([x.lr for x in cfgs], dtype=dtype)
    params = BatchedParams.create(3, d, dtype, torch.device("cpu"), residual=False)
    struct = Structure("official", cfg.wccf, cfg.gen_step, cfg.covariate_rows, cfg.energy_reduction)
    outs = []
    for step in range(case["steps"]):
        x1 = torch.from_numpy(data["train_features"][step]).to(dtype)
        y1 = torch.from_numpy(data["train_labels"][step]).long()
        x = torch.stack([torch.randn(x1.shape, generator=g, dtype=dtype), x1, x1.flip(0)])
        y = torch.stack([torch.randint(0, c, y1.shape, generator=g), y1, y1.flip(0)])
        outs.append(official_step(params, x, y, t, hp, struct))

    def close(actual, expected, what):  # noqa: ANN001, ANN202
        np.testing.assert_allclose(
            np.asarray(actual),
            np.asarray(expected),
            rtol=1e-6,
            atol=1e-9,
            err_msg=f"{name}: {what}",
        )

    close([[float(v[1]) for v in o.gen_losses] for o in outs], case["gen_losses"], "gen_losses")
    for key in ("loss", "loss_ce", "loss1", "loss2"):
        close([float(getattr(o, key)[1]) for o in outs], data[key], key)
    for key in ("fc_i", "fc_t", "generator"):
        close(params.mats[key][1].detach(), data[key], key)
    probe = torch.from_numpy(data["probe_features"]).to(dtype)
    with torch.no_grad():
        fwd = adapter_forward(
            probe, t0, params.mats["fc_i"][1], params.mats["fc_t"][1], cfg.ratio, cfg.ratio_text
        )
        logits = 100.0 * fwd.z_img @ fwd.z_txt.T
    close(logits, data["probe_logits"], "probe_logits")
    assert all(math.isfinite(float(o.loss[0])) for o in outs)


def test_a_shared_training_set_is_stored_once() -> None:
    members = [(TRAIN_A, VAL_A, M.make_config(M.METHODS.get("croft").config_cls, BASE))] * 2
    chunk = Chunk("croft", members, torch.device("cpu"))
    assert chunk.feats.shape[0] == 1  # one training set stored once for both members


def autograd_penalty(rows, t_zs, w_img, w_txt, ratio, ratio_text, reduction):  # noqa: ANN001, ANN201
    """The official penalty as the authors' code computes it (double backward): the
    reference of the closed form, kept here only."""
    from croft.methods.text import eps_normalize as n

    delta = torch.full_like(w_img, 1e-4).requires_grad_(True)
    a = n(ratio * (rows @ (w_img + delta)) + (1.0 - ratio) * rows)
    b = n(ratio_text * (t_zs @ (w_txt + delta)) + (1.0 - ratio_text) * t_zs)
    s = torch.exp(a @ b.T)
    total = s.sum() if reduction == "setup1" else s.mean()
    (g,) = torch.autograd.grad(total, delta, create_graph=True)
    return (g**2).mean() if reduction == "setup1" else (g**2).sum()


@pytest.mark.parametrize(("rows", "classes"), [(8, 3), (40, 30)])  # Gram form, formed g
@pytest.mark.parametrize("reduction", ["setup1", "setup2"])
def test_closed_form_penalty_equals_double_backward(rows: int, classes: int, reduction: str):
    """Batched closed form (per member) and single closed form against the autograd
    ``create_graph`` reference: value and gradients in rows, Wi, Wt to 1e-13 relative."""
    from croft.methods.croft.core import official_energy_gradient_penalty
    from croft.methods.croft.steps import energy_penalty
    from croft.methods.text import eps_normalize as n

    g = torch.Generator().manual_seed(5)
    d, dt = 64, torch.float64
    cfgs = [M.make_config(M.METHODS.get("croft").config_cls, {"ratio": r}) for r in (0.2, 0.6)]
    hp = hyper(cfgs, [100.0, 100.0], dt, torch.device("cpu"))
    r = n(torch.randn(2, rows, d, generator=g, dtype=dt)).requires_grad_(True)
    t = n(torch.randn(2, classes, d, generator=g, dtype=dt))
    eye = torch.eye(d, dtype=dt)
    wi = (eye + 0.1 * torch.randn(2, d, d, generator=g, dtype=dt)).requires_grad_(True)
    wt = (eye + 0.1 * torch.randn(2, d, d, generator=g, dtype=dt)).requires_grad_(True)
    got = energy_penalty(r, t, wi, wt, hp, reduction)
    grads = torch.autograd.grad(got.sum(), (r, wi, wt))
    for m, cfg in enumerate(cfgs):
        args = (r[m], t[m], wi[m], wt[m], cfg.ratio, cfg.ratio_text, reduction)
        want = autograd_penalty(*args)
        single = official_energy_gradient_penalty(*args)
        w = float(want.detach())
        for v in (float(got[m].detach()), float(single.detach())):
            assert abs(w - v) <= 1e-13 * max(1.0, abs(w)), (w, v)
        ref = torch.autograd.grad(want, (r, wi, wt))
        for a, b, c in zip(ref, grads, torch.autograd.grad(single, (r, wi, wt)), strict=True):
            scale = max(1.0, float(a[m].abs().max()))
            assert float((a[m] - b[m]).abs().max()) <= 1e-13 * scale
            assert float((a[m] - c[m]).abs().max()) <= 1e-13 * scale
