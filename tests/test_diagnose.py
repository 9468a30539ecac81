"""croft diagnose: Hessian estimators and energy-gradient norms on known answers; the CLI."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from croft.cli.main import main
from croft.diagnose import (
    DiagnoseOptions,
    classification_loss,
    diagnose_head,
    energy_grad_norms,
    hutchinson_trace,
    loss_hvp,
    official_penalty,
    shared_probe_stats,
    top_eigenvalue,
)
from croft.features import FeatureSet, save_features
from croft.methods import fit, save_head
from croft.methods.croft.core import adapt_image, adapt_text
from croft.methods.croft.head import AdapterHead
from croft.methods.text import eps_normalize

F64 = torch.float64


def _spd(d: int, eigs: list[float], seed: int = 0) -> torch.Tensor:
    """``Q diag(eigs) Qᵀ`` with a seeded random orthogonal ``Q``."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    return q @ torch.diag(torch.tensor(eigs, dtype=F64)) @ q.T


def _quadratic_hvp(a: torch.Tensor):  # noqa: ANN202
    """HVP of ``f(w) = ½ wᵀAw + bᵀw`` by double backward: its Hessian is exactly ``A``."""
    w = torch.randn(a.shape[0], dtype=F64, requires_grad=True)
    b = torch.ones(a.shape[0], dtype=F64)
    (g,) = torch.autograd.grad(0.5 * w @ a @ w + b @ w, w, create_graph=True)
    return lambda v: torch.autograd.grad(g @ v, w, retain_graph=True)[0]


def test_estimators_on_a_quadratic() -> None:
    eigs = [5.0, 2.0, 1.5, -1.0, 0.5, 0.25]
    a = _spd(6, eigs)
    hvp = _quadratic_hvp(a)
    v = torch.randn(6, dtype=F64)
    assert torch.allclose(hvp(v), a @ v, atol=1e-12)
    lam, iters = top_eigenvalue(hvp, 6, iters=500, tol=1e-13)
    assert lam == pytest.approx(5.0, rel=1e-8) and iters < 500
    # a dominant NEGATIVE eigenvalue comes back signed
    lam_neg, _ = top_eigenvalue(
        _quadratic_hvp(_spd(5, [-4.0, 1.0, 0.5, 0.2, 0.1], 1)), 5, 500, 1e-13
    )
    assert lam_neg == pytest.approx(-4.0, rel=1e-8)
    # Rademacher Hutchinson is exact for a diagonal Hessian (v_i² = 1): zero standard error
    diag = torch.diag(torch.tensor(eigs, dtype=F64))
    tr, se = hutchinson_trace(_quadratic_hvp(diag), 6, probes=8)
    assert tr == pytest.approx(sum(eigs), abs=1e-12) and se == pytest.approx(0.0, abs=1e-12)
    # dense: unbiased, and the reported SE matches the estimator's true spread
    k = 3000
    tr, se = hutchinson_trace(hvp, 6, probes=k, seed=3)
    off = float((a**2).sum() - (torch.diagonal(a) ** 2).sum())
    assert se == pytest.approx(math.sqrt(2 * off / k), rel=0.1)
    assert abs(tr - sum(eigs)) < 4 * se


def _adapter_head(d: int = 5, c: int = 3, seed: int = 0, **kw) -> AdapterHead:  # noqa: ANN003
    g = torch.Generator().manual_seed(seed)
    head = AdapterHead([f"c{i}" for i in range(c)], d, 10.0, dtype="float64", **kw)
    head.text.copy_(torch.randn(c, d, generator=g, dtype=F64))
    head.fc_i.copy_(torch.eye(d, dtype=F64) + 0.3 * torch.randn(d, d, generator=g, dtype=F64))
    head.fc_t.copy_(torch.eye(d, dtype=F64) + 0.3 * torch.randn(d, d, generator=g, dtype=F64))
    return head


def _data(n: int, d: int, c: int, seed: int, shift: torch.Tensor | None = None):  # noqa: ANN202
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64) + (0.0 if shift is None else shift)
    return x, torch.randint(0, c, (n,), generator=g)


def _exact_hessian(head: AdapterHead, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = head.feature_dim

    def f(flat: torch.Tensor) -> torch.Tensor:
        wi, wt = flat[: d * d].reshape(d, d), flat[d * d :].reshape(d, d)
        return classification_loss(head, x, y, wi, wt)

    flat = torch.cat([head.fc_i.reshape(-1), head.fc_t.reshape(-1)])
    return torch.autograd.functional.hessian(f, flat)


def test_hvp_trace_and_eigenvalue_match_the_exact_adapter_hessian() -> None:
    head = _adapter_head(d=4, c=3)
    x, y = _data(12, 4, 3, seed=1)
    h = _exact_hessian(head, x, y)  # (32, 32)
    hvp, dim = loss_hvp(head, x, y)
    assert dim == 32
    for s in range(3):
        v = torch.randn(dim, generator=torch.Generator().manual_seed(s), dtype=F64)
        assert torch.allclose(hvp(v), h @ v, atol=1e-10)
    hvp_i, dim_i = loss_hvp(head, x, y, params=("fc_i",))  # the fc_i block alone
    v = torch.randn(dim_i, dtype=F64)
    assert dim_i == 16 and torch.allclose(hvp_i(v), h[:16, :16] @ v, atol=1e-10)
    ev = torch.linalg.eigvalsh(h)
    top = float(ev[ev.abs().argmax()])
    lam, _ = top_eigenvalue(hvp, dim, iters=3000, tol=1e-12)
    assert lam == pytest.approx(top, rel=1e-4)
    k = 1000
    tr, se = hutchinson_trace(hvp, dim, probes=k, seed=5)
    off = float((h**2).sum() - (torch.diagonal(h) ** 2).sum())
    assert abs(tr - float(torch.trace(h))) < 4 * se
    assert se == pytest.approx(math.sqrt(2 * off / k), rel=0.15)


@pytest.mark.parametrize("tau", [1.0, 0.07])
def test_energy_grad_norms_match_autograd_per_sample(tau: float) -> None:
    head = _adapter_head(d=6, c=4, seed=2, ratio=0.3, ratio_text=0.6)
    x, _ = _data(7, 6, 4, seed=3)
    got = energy_grad_norms(head, x, tau)
    want = []
    for row in x:
        wi = head.fc_i.clone().requires_grad_(True)
        wt = head.fc_t.clone().requires_grad_(True)
        z_i = adapt_image(eps_normalize(row[None]), wi, head.ratio)
        z_t = adapt_text(head.text, wt, head.ratio_text)
        energy = -tau * torch.logsumexp(z_i @ z_t.T / tau, dim=1).sum()
        gi, gt = torch.autograd.grad(energy, (wi, wt))
        want.append(float((gi.square().sum() + gt.square().sum()).sqrt()))
    assert torch.allclose(got, torch.tensor(want, dtype=F64), rtol=1e-8, atol=1e-12)


def test_official_penalty_is_the_squared_norm_of_a_mean_gradient() -> None:
    head = _adapter_head(d=5, c=3, seed=11)
    x, _ = _data(6, 5, 3, seed=12)
    one = official_penalty(head, x)
    # setup2 is ‖mean_i ∇S_i‖²: duplicating every row leaves it unchanged, while
    # scaling rows does nothing either (rows are normalised first)
    assert official_penalty(head, torch.cat([x, x])) == pytest.approx(one, rel=1e-10)
    assert official_penalty(head, 3.0 * x) == pytest.approx(one, rel=1e-10)
    # and it is below the mean of the per-row penalties (Jensen), strictly for distinct rows
    per_row = [official_penalty(head, r[None]) for r in x]
    assert one < sum(per_row) / len(per_row)


def test_alignment_is_one_for_identical_domains_and_lower_for_shifted_ones() -> None:
    head = _adapter_head(d=5, c=3, seed=4)
    x, y = _data(40, 5, 3, seed=6)
    shift = torch.tensor([4.0, -4.0, 0.0, 0.0, 0.0], dtype=F64)
    x2, y2 = _data(40, 5, 3, seed=7, shift=shift)
    hvps = {
        "a": loss_hvp(head, x, y)[0],
        "a_copy": loss_hvp(head, x.clone(), y.clone())[0],
        "shifted": loss_hvp(head, x2, y2)[0],
    }
    st = shared_probe_stats(hvps, 50, probes=24, seed=1)
    cos_same, sd_same = st.cosine[("a", "a_copy")]
    assert cos_same == pytest.approx(1.0, abs=1e-12) and sd_same == pytest.approx(0.0, abs=1e-10)
    assert st.distance[("a", "a_copy")] == pytest.approx(0.0, abs=1e-10)
    assert st.cosine[("a", "shifted")][0] < 0.9 * cos_same
    assert st.distance[("a", "shifted")] > 0.2


def _feature_set(x, y, names, domains=None, dnames=(), text=None) -> FeatureSet:  # noqa: ANN001
    return FeatureSet(
        features=x.float(),
        labels=y,
        class_names=list(names),
        domains=domains,
        domain_names=list(dnames),
        text_features=text,
        logit_scale=10.0,
    )


def test_diagnose_head_rows_on_duplicated_domains() -> None:
    head = _adapter_head(d=5, c=3, seed=8)
    x, y = _data(30, 5, 3, seed=9)
    names = head.class_names
    train = _feature_set(
        torch.cat([x, x]), torch.cat([y, y]), names, torch.tensor([0] * 30 + [1] * 30), ["p", "q"]
    )
    ood = _feature_set(x[:10] * -1.0, torch.full((10,), -1), names)
    small = _feature_set(*_data(12, 5, 3, seed=10), names)
    opts = DiagnoseOptions(probes=4, power_iters=5, equal_rows=True)
    rows = diagnose_head(head, train, {"ood": ood, "small": small}, opts)
    get = {(r["group"], r["other"], r["quantity"]): r for r in rows}
    # equal_rows: every Hessian on 12 rows; accuracy still on the whole group
    assert {r["n"] for r in rows if r["quantity"] == "hessian_trace"} == {12}
    assert get[("train:p", "", "accuracy")]["n"] == 30
    split = {r["group"] for r in rows if r["quantity"] == "hessian_cosine_split_half"}
    assert split == {"train:p", "train:q", "small"}
    assert get[("train:p", "train:q", "hessian_cosine")]["value"] == pytest.approx(1.0, abs=1e-5)
    assert ("ood", "", "energy_grad_norm_mean") in get and ("ood", "", "hessian_trace") not in get
    assert ("train", "", "energy_grad_norm_median") in get and (
        "train",
        "",
        "hessian_trace",
    ) not in get
    assert get[("fc_i", "", "w_minus_i")]["value"] == pytest.approx(
        float((head.fc_i - torch.eye(5, dtype=F64)).norm() / math.sqrt(5))
    )


# ------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def sweep(small_task, tmp_path_factory):
    folder = tmp_path_factory.mktemp("diag")
    heads = []
    for l2 in (0.0, 100.0):
        res = fit("croft", small_task.train, None, variant="paper", lambda2=l2, epochs=1)
        heads.append(save_head(res.head, folder / f"l2_{int(l2)}"))
    files = {
        n: save_features(getattr(small_task, n), folder / f"{n}.safetensors")
        for n in ("train", "test", "ood")
    }
    return folder, heads, files


def test_cli_diagnose_end_to_end(sweep, tmp_path, capsys) -> None:
    _, heads, files = sweep
    out = tmp_path / "out"
    argv = ["diagnose", *map(str, heads), "--train", str(files["train"])]
    argv += ["--set", f"heldout={files['test']}", "--set", f"unseen={files['ood']}"]
    argv += ["--out", str(out), "--probes", "4", "--power-iters", "5", "--dtype", "float32"]
    assert main(argv) == 0
    assert "hessian_trace" in capsys.readouterr().out
    for name in ("diagnostics.csv", "diagnostics.json", "diagnostics.png", "diagnostics.pdf"):
        assert (out / name).stat().st_size > 0, name
    doc = json.loads((out / "diagnostics.json").read_text())
    assert doc["x"] == "lambda2" and doc["options"]["probes"] == 4
    assert doc["options"]["params"] == ["fc_i", "fc_t"] and set(doc["sets"]) == {
        "heldout",
        "unseen",
    }
    with open(out / "diagnostics.csv") as fh:
        table = list(csv.DictReader(fh))
    assert {float(r["x"]) for r in table} == {0.0, 100.0}
    groups = {r["group"] for r in table if r["quantity"] == "hessian_trace"}
    assert "heldout" in groups and "unseen" not in groups and len(groups) >= 3
    assert {r["group"] for r in table if r["quantity"] == "energy_grad_norm_mean"} >= {"unseen"}


def _one_line_error(argv, capsys, match: str) -> None:  # noqa: ANN001
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("croft: error: ") and "\n" not in err, err
    assert match in err, err


def test_cli_diagnose_errors_and_run_dirs(sweep, small_task, tmp_path, capsys) -> None:
    folder, heads, files = sweep
    base = ["diagnose", str(heads[0]), "--out", str(tmp_path / "o"), "--probes", "2"]
    _one_line_error(base, capsys, "give --train FILE")
    _one_line_error(base + ["--train", str(tmp_path / "nope.st")], capsys, "does not exist")
    _one_line_error(base + ["--train", str(files["train"]), "--set", "x"], capsys, "NAME=FILE")
    zs = save_head(fit("zeroshot", small_task.train).head, tmp_path / "zs")
    _one_line_error(
        ["diagnose", str(zs), "--train", str(files["train"]), "--out", str(tmp_path / "o")],
        capsys,
        "supports adapter heads",
    )
    wide = small_task.test
    wide = _feature_set(torch.randn(len(wide), 7), wide.labels, wide.class_names)
    bad = save_features(wide, tmp_path / "wide.safetensors")
    _one_line_error(
        base + ["--train", str(files["train"]), "--set", f"w={bad}"], capsys, "expects 32-d"
    )
    _one_line_error(
        ["diagnose", str(tmp_path), "--out", str(tmp_path / "o")],
        capsys,
        "neither a head directory",
    )
    # a run directory: head/ plus features.json naming its feature files
    run = tmp_path / "run"
    save_head(fit("ce_adapter", small_task.train, epochs=1).head, run / "head")
    spec = {"train": str(files["train"]), "sets": {"heldout": str(files["test"])}}
    (run / "features.json").write_text(json.dumps(spec))
    out = tmp_path / "r"
    assert main(["diagnose", str(run), "--out", str(out), "--probes", "2", "--no-plots"]) == 0
    doc = json.loads((out / "diagnostics.json").read_text())
    assert doc["x"] == "head index" and set(doc["sets"]) == {"heldout"}
    assert not (out / "diagnostics.png").exists()
