"""Evaluation conventions (croft | authors), detection ratios, grid-point selection, and the
baselines' protocol switch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import croft.methods as M
from croft.conventions import AUTHORS_KNN_KS, Conventions, cap_per_class, resolve
from croft.errors import CroftError
from croft.evaluation import detection_head, evaluate
from croft.features.files import FeatureSet
from croft.methods.croft.head import AdapterHead
from croft.methods.io import load_head, save_head
from croft.metrics import detection_metrics
from croft.selection import select_grid_point, validation_nll

C, D = 3, 8


def _set(n: int, seed: int, ood: bool = False, shift: float = 0.0) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(C, D, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % C
    x = text[y] * (0.3 if ood else 1.0) + (0.9 + shift) * torch.randn(n, D, generator=g)
    return FeatureSet(
        features=x,
        labels=torch.full((n,), -1) if ood else y,
        class_names=["a", "b", "c"],
        text_features=text,
        templates=["a photo of a {}."],
    )


def _head() -> AdapterHead:
    head = AdapterHead(["a", "b", "c"], D, 10.0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        head.text.copy_(torch.randn(C, D, generator=torch.Generator().manual_seed(0)))
        head.fc_i.add_(0.4 * torch.randn(D, D, generator=g))
        head.fc_t.add_(0.4 * torch.randn(D, D, generator=g))
    return head


def test_presets_and_overrides() -> None:
    assert resolve("croft") == Conventions()
    a = resolve("authors")
    assert (a.id_positives, a.knn_id_positives, a.fpr95) == ("correct", "all", "fpr95_paper")
    assert (a.detection_ratio, a.detection_ratio_text) == (0.5, 0.0)
    assert (a.knn_bank, a.knn_k_sweep, a.id_cap_per_class) == ("source", AUTHORS_KNN_KS, 500)
    s1 = resolve("authors", setup="setup1")
    assert s1.detection_ratio is None and s1.knn_k_sweep == () and s1.id_positives == "correct"
    c = resolve({"name": "croft", "id_positives": "correct"})
    assert c.id_positives == "correct" and c.name == "croft"
    assert resolve(c.to_dict()) == c  # a run record's dict reads back
    assert resolve("authors", {"knn_k_sweep": [1, 3]}).knn_k_sweep == (1, 3)
    with pytest.raises(CroftError, match="conventions 'paper'"):
        resolve("paper")
    with pytest.raises(CroftError, match="unknown key"):
        resolve("croft", {"id_positive": "all"})
    with pytest.raises(CroftError, match="id_positives"):
        resolve("croft", {"id_positives": "some"})


def test_cap_per_class_keeps_at_most_n_per_class() -> None:
    labels = torch.tensor([0] * 10 + [1] * 3 + [-1] * 2)
    idx = cap_per_class(labels, 4, seed=1)
    kept = labels[idx]
    assert int((kept == 0).sum()) == 4 and int((kept == 1).sum()) == 3
    assert int((kept == -1).sum()) == 2
    assert torch.equal(idx, cap_per_class(labels, 4, seed=1))
    assert torch.equal(cap_per_class(labels, 0), torch.arange(15))


def test_detection_view_ratios_round_trip(tmp_path) -> None:  # noqa: ANN001
    head = _head()
    x = _set(12, 1).eval_features()
    assert detection_head(head) is head
    head.det_ratio, head.det_ratio_text = 0.5, 0.0
    det = head.detection_view()
    ref = AdapterHead(["a", "b", "c"], D, 10.0, ratio=0.5, ratio_text=0.0)
    ref.load_state_dict(head.state_dict())
    torch.testing.assert_close(det.logits(x), ref.logits(x), rtol=0, atol=0)
    assert not torch.allclose(head.logits(x), det.logits(x))  # accuracy view unchanged
    loaded = load_head(save_head(head, tmp_path / "h"), expect_dim=D)
    assert (loaded.det_ratio, loaded.det_ratio_text) == (0.5, 0.0)
    torch.testing.assert_close(loaded.detection_view().logits(x), det.logits(x))


def test_fit_option_sets_detection_ratios() -> None:
    train = _set(30, 5)
    head = M.fit("ce_adapter", train, None, epochs=1, det_ratio=0.5, det_ratio_text=0.0).head
    assert (head.det_ratio, head.det_ratio_text) == (0.5, 0.0)
    assert M.fit("ce_adapter", train, None, epochs=1).head.det_ratio is None


def test_authors_conventions_change_exactly_the_detection_side(caplog) -> None:  # noqa: ANN001
    head, id_set, ood, bank = _head(), _set(60, 1), _set(40, 2, ood=True), _set(30, 4)
    kw = {"scores": ["energy", "knn"], "bank": bank}
    croft = evaluate(head, id_set, {"o": ood}, **kw)
    conv = resolve("authors", {"id_cap_per_class": 15, "knn_k_sweep": [1, 5, 100]})
    auth = evaluate(head, id_set, {"o": ood}, conventions=conv, **kw)
    assert "knn@100 skipped: the bank holds 30 rows" in caplog.text
    assert auth.accuracy == croft.accuracy  # accuracy: prediction ratios, all ID
    assert auth.conventions["name"] == "authors" and croft.conventions["name"] == "croft"
    assert set(auth.detection["o"]) == {"energy", "knn", "knn@1", "knn@5"}
    # the reference: detection view at 0.5 / 0.0, ≤ 15 per class, correct-only for energy
    det = detection_head(head, conv)
    logits = det.logits(id_set.eval_features())
    kept = np.zeros(60, dtype=bool)
    kept[cap_per_class(id_set.labels, 15).numpy()] = True
    correct = (logits.argmax(1) == id_set.labels).numpy()
    assert kept.sum() == 45 and 0 < (kept & correct).sum() < 45
    e_id = torch.logsumexp(logits.double(), 1).numpy()
    e_ood = torch.logsumexp(det.logits(ood.eval_features()).double(), 1).numpy()
    assert auth.detection["o"]["energy"] == detection_metrics(e_id[kept & correct], e_ood)
    assert auth.detection["o"]["knn"] == auth.detection["o"]["knn@1"]
    assert croft.detection["o"]["energy"] != auth.detection["o"]["energy"]
    # id_correct_only is the id_positives switch
    legacy = evaluate(head, id_set, {"o": ood}, id_correct_only=True, **kw)
    assert legacy.conventions["id_positives"] == "correct"


def test_select_grid_point_ties_go_to_nll_then_smaller_lambda() -> None:
    def rec(label: str, acc: float, nll: float | None, **opts: float) -> dict:
        return {"label": label, "val_accuracy": acc, "val_nll": nll, "options": opts}

    a = rec("croft[lambda2=1000]", 0.9, 0.30, lambda2=1000.0)
    b = rec("croft[lambda2=10]", 0.9, 0.25, lambda2=10.0)
    c = rec("croft[lambda2=0]", 0.9, 0.25, lambda2=0.0)
    d = rec("croft[lambda2=100]", 0.8, 0.01, lambda2=100.0)
    assert select_grid_point([a, b, c, d])["label"] == "croft[lambda2=0]"  # nll tie -> λ
    assert select_grid_point([a, b, d])["label"] == "croft[lambda2=10]"  # lower nll
    assert select_grid_point([d, a])["label"] == a["label"]  # accuracy first
    # λ1 compares before λ2; records without NLL rank after those with one
    e = rec("x[lambda1=0,lambda2=1000]", 0.9, 0.25, lambda1=0.0, lambda2=1000.0)
    f = rec("x[lambda1=5,lambda2=0]", 0.9, 0.25, lambda1=5.0, lambda2=0.0)
    assert select_grid_point([f, e])["label"] == e["label"]
    assert select_grid_point([rec("p", 0.9, None, lambda2=0.0), a])["label"] == a["label"]
    with pytest.raises(CroftError, match="no val_accuracy"):
        select_grid_point([{"label": "z", "options": {}}])


def test_validation_nll_is_the_mean_cross_entropy() -> None:
    head, val = _head(), _set(20, 7)
    ref = torch.nn.functional.cross_entropy(head.logits(val.eval_features()).double(), val.labels)
    assert validation_nll(head, val) == pytest.approx(float(ref), rel=1e-12)


@pytest.mark.parametrize("name", ["coop", "cocoop", "dplclip", "clip_adapter", "tip_adapter_f"])
def test_baseline_protocols(name: str) -> None:
    cls = M.METHODS.get(name).config_cls
    repo = dataclasses.asdict(M.make_config(cls, {"protocol": "croft_repo"}))
    orig = dataclasses.asdict(M.make_config(cls, {}))
    assert orig["protocol"] == "original"
    if name != "tip_adapter_f":  # the CRoFT repository's shared SGD settings
        assert (repo["lr"], repo["weight_decay"], repo["epochs"], repo["batch_size"]) == (
            0.002,
            0.1,
            30,
            32,
        )
        assert orig != {**repo, "protocol": "original"}
    expected = {
        "coop": {"weight_decay": 5e-4, "epochs": 200},
        "cocoop": {"n_ctx": 4, "ctx_init": "a photo of a", "batch_size": 1, "epochs": 10},
        "dplclip": {"lr": 1e-3, "momentum": 0.1, "weight_decay": 0.0},
        "clip_adapter": {"weight_decay": 5e-4, "epochs": 200},
        "tip_adapter_f": {"optimizer": "adamw", "lr": 1e-3, "epochs": 20, "batch_size": 256},
    }[name]
    assert {k: orig[k] for k in expected} == expected
    explicit = M.make_config(cls, {"protocol": "croft_repo", "epochs": "7", "lr": 0.5})
    assert (explicit.epochs, explicit.lr) == (7, 0.5)  # explicit options always win
    with pytest.raises(CroftError, match="protocol"):
        M.make_config(cls, {"protocol": "paper"})


def test_wise_records_the_validation_curve_and_a_fixed_alpha() -> None:
    train, val = _set(30, 5), _set(21, 6)
    r = M.fit("wise", train, val, base="ce_adapter", base_options={"epochs": 2})
    curve = r.selection["wise"]["curve"]
    assert [p["alpha"] for p in curve] == pytest.approx([i / 10 for i in range(11)])
    best = max(curve, key=lambda p: p["val_acc"])["val_acc"]
    chosen = r.selection["wise"]["alpha"]
    assert next(p for p in curve if p["alpha"] == chosen)["val_acc"] == best
    assert r.head.meta["wise_curve"] == curve
    fixed = M.fit("wise", train, val, base="ce_adapter", base_options={"epochs": 2}, search=False)
    assert fixed.selection["wise"]["alpha"] == 0.5
    assert fixed.selection["wise"]["alpha_from"] == "config"
    assert len(fixed.selection["wise"]["curve"]) == 11  # the curve is recorded either way


def test_report_tables_name_their_conventions_and_fpr95() -> None:
    from croft.report import build_tables, select_records
    from croft.tables import tidy_rows

    def rec(label: str, conv: str, seed: int) -> dict:
        det = {"auroc": 0.8, "fpr95_id_pos": 0.4, "fpr95_paper": 0.3, "aupr_in": 0.7}
        return {
            "label": label,
            "method": label,
            "test_domain": "photo",
            "seed": seed,
            "accuracy": 0.9,
            "val_accuracy": 0.9,
            "val_nll": 0.3,
            "detection": {"dtd": {"energy": det}},
            "conventions": resolve(conv).to_dict(),
        }

    one = build_tables([rec("croft", "authors", 1), rec("zeroshot", "authors", 1)])
    assert one["accuracy"].title.endswith("[conventions: authors]")
    assert one["detection_energy"].groups[0][1][0] == "fpr95_paper ↓"
    # the title explains the FPR95 it shows, and only that one
    title = one["detection_energy"].title
    assert "fpr95_paper: the authors' rule" in title and "fpr95_id_pos" not in title
    both = build_tables([rec("croft", "authors", 1), rec("croft", "croft", 1)])
    assert {"accuracy__authors", "accuracy__croft", "detection_energy__croft"} <= set(both)
    assert both["detection_energy__croft"].groups[0][1][0] == "fpr95_id_pos ↓"
    rows = tidy_rows([rec("croft", "authors", 1)])
    assert {r["metric"] for r in rows} >= {"fpr95_id_pos", "fpr95_paper", "nll"}
    assert {r["conventions"] for r in rows} == {"authors"}
    grid = [rec("c[lambda2=10]", "croft", 1), rec("c[lambda2=0]", "croft", 1)]
    assert select_records(grid)[0]["selected_from"] == "c[lambda2=0]"  # tie -> smaller λ


def test_no_correct_id_sample_records_null_metrics(caplog) -> None:  # noqa: ANN001
    head, id_set, ood = _head(), _set(9, 1), _set(6, 2, ood=True)
    id_set.labels = (head.predict(id_set.eval_features()) + 1) % C  # every prediction wrong
    ev = evaluate(head, id_set, {"o": ood}, scores=["energy"], id_correct_only=True)
    assert ev.detection["o"]["energy"]["auroc"] is None and ev.accuracy == 0.0
    assert "no ID sample is classified correctly" in caplog.text
