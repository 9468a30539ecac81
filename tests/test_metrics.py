"""Golden tests for croft.metrics: hand-computed answers on tiny arrays with ties,
independent brute-force references, and every error message."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from croft.errors import CroftError
from croft.metrics import (
    accuracy,
    aupr_in,
    aupr_out,
    auroc,
    detection_metrics,
    fpr95_paper,
    fpr_at_tpr,
    fpr_at_tpr_ood_positive,
)

# ID = [1, 2, 3, 4], OOD = [0, 2, 5]: one ID/OOD tie at 2.
ID4 = [1.0, 2.0, 3.0, 4.0]
OOD3 = [0.0, 2.0, 5.0]


# --- brute-force references (no sklearn) -------------------------------------------------------
def ref_auroc(id_s: np.ndarray, ood_s: np.ndarray) -> float:
    diff = id_s[:, None] - ood_s[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def ref_fpr_id_pos(id_s: np.ndarray, ood_s: np.ndarray, tpr: float) -> float:
    for t in sorted(set(id_s) | set(ood_s), reverse=True):
        if np.mean(id_s >= t) >= tpr - 1e-12:
            return float(np.mean(ood_s >= t))
    raise AssertionError("unreachable")


def ref_fpr_ood_pos(id_s: np.ndarray, ood_s: np.ndarray, tpr: float) -> float:
    for t in sorted(set(id_s) | set(ood_s)):
        if np.mean(ood_s <= t) >= tpr - 1e-12:
            return float(np.mean(id_s <= t))
    raise AssertionError("unreachable")


# --- hand-computed answers ----------------------------------------------------------------------
def test_auroc_hand_with_tie() -> None:
    # 12 pairs: wins 1 + 1 + 2 + 2, one tie (2 vs 2) counts 1/2 -> 6.5 / 12
    assert auroc(ID4, OOD3) == pytest.approx(6.5 / 12)


def test_aupr_in_hand_with_tie() -> None:
    # thresholds 5,4,3,2,1,0 -> (R,P): (0,0) (.25,1/2) (.5,2/3) (.75,3/5) (1,2/3) (1,4/7)
    # AP = .25 * (1/2 + 2/3 + 3/5 + 2/3) = 73/120
    assert aupr_in(ID4, OOD3) == pytest.approx(73 / 120)


def test_aupr_out_hand_with_tie() -> None:
    # OOD positive on -score, thresholds 0,1,2,3,4,5 -> (R,P): (1/3,1) (1/3,1/2) (2/3,1/2)
    # (2/3,2/5) (2/3,1/3) (1,3/7); AP = 1/3 * (1 + 1/2 + 3/7) = 9/14
    assert aupr_out(ID4, OOD3) == pytest.approx(9 / 14)


@pytest.mark.parametrize(
    ("tpr", "expected"),
    [
        (0.95, 2 / 3),  # all 4 ID kept at score >= 1: OOD 2 and 5 pass
        (0.75, 2 / 3),  # threshold 2 is one tied threshold: the OOD 2 counts too
        (0.5, 1 / 3),  # threshold 3: only OOD 5
        (0.25, 1 / 3),  # threshold 4: only OOD 5
    ],
)
def test_fpr_id_pos_hand_with_tie(tpr: float, expected: float) -> None:
    assert fpr_at_tpr(ID4, OOD3, tpr=tpr) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("tpr", "expected"),
    [
        (0.95, 1.0),  # all 3 OOD flagged only at score <= 5: every ID flagged
        (2 / 3, 0.5),  # score <= 2 (tied threshold): ID 1 and 2 flagged
        (1 / 3, 0.0),  # score <= 0: no ID flagged
    ],
)
def test_fpr_ood_pos_hand_with_tie(tpr: float, expected: float) -> None:
    assert fpr_at_tpr_ood_positive(ID4, OOD3, tpr=tpr) == pytest.approx(expected)


def test_fpr_conventions_differ_on_crafted_example() -> None:
    id_s = [10.0] * 19 + [0.0]  # 95 % of ID at score 10
    ood_s = [1.0] * 18 + [20.0, 20.0]  # 90 % of OOD at 1, the rest above every ID
    # ID positive: threshold 10 keeps 19/20 ID; OOD >= 10 -> the two 20s -> 2/20
    assert fpr_at_tpr(id_s, ood_s) == pytest.approx(0.1)
    # OOD positive: 19/20 OOD flagged only once score <= 20, which flags all ID -> 1.0
    assert fpr_at_tpr_ood_positive(id_s, ood_s) == pytest.approx(1.0)
    # paper: θ = percentile = 0 + 0.95 * 10 = 9.5 -> OOD > 9.5 -> 2/20
    assert fpr95_paper(id_s, ood_s) == pytest.approx(0.1)


def test_fpr95_paper_strict_at_theta() -> None:
    id_s = np.arange(21.0)  # percentile 5 of 0..20 is exactly 1.0
    ood_s = [1.0, 1.0, 2.0, 0.5]
    assert np.percentile(id_s, 5) == 1.0
    assert fpr95_paper(id_s, ood_s) == pytest.approx(0.25)  # only 2.0 > 1.0
    # the ID-positive rule counts the tied OOD at threshold 1 (20/21 ID >= 1)
    assert fpr_at_tpr(id_s, ood_s) == pytest.approx(0.75)


def test_fpr95_paper_interpolates_and_all_tied() -> None:
    # percentile 5 of [1,2,3,4] = 1 + 0.15 = 1.15 -> OOD > 1.15: 2 and 5
    assert fpr95_paper(ID4, OOD3) == pytest.approx(2 / 3)
    # all ID tied at 3 -> θ = 3; OOD 3 is not above it
    assert fpr95_paper([3.0, 3.0, 3.0, 3.0], [3.0, 3.0, 4.0]) == pytest.approx(1 / 3)


def test_perfect_separation() -> None:
    m = detection_metrics([5.0, 6.0, 7.0], [1.0, 2.0])
    assert m == {
        "auroc": 1.0,
        "aupr_in": 1.0,
        "aupr_out": 1.0,
        "fpr95_id_pos": 0.0,
        "fpr95_ood_pos": 0.0,
        "fpr95_paper": 0.0,
    }


def test_reversed_separation() -> None:
    m = detection_metrics([1.0, 2.0], [5.0, 6.0, 7.0])
    assert m["auroc"] == 0.0
    assert m["fpr95_id_pos"] == 1.0
    assert m["fpr95_ood_pos"] == 1.0
    assert m["fpr95_paper"] == 1.0
    # ID positive: (R,P) = (1/2,1/4) at 2, (1,2/5) at 1 -> 13/40
    assert m["aupr_in"] == pytest.approx(13 / 40)
    # OOD positive on -score: (1/3,1/3) (2/3,1/2) (1,3/5) -> 43/90
    assert m["aupr_out"] == pytest.approx(43 / 90)


# --- references on random tied data -----------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tpr", [0.95, 0.9, 0.5, 1.0])
def test_against_references_with_ties(seed: int, tpr: float) -> None:
    rng = np.random.default_rng(seed)
    id_s = rng.integers(3, 12, size=60).astype(float)  # heavy ties, overlapping ranges
    ood_s = rng.integers(0, 8, size=45).astype(float)
    assert fpr_at_tpr(id_s, ood_s, tpr) == pytest.approx(ref_fpr_id_pos(id_s, ood_s, tpr))
    assert fpr_at_tpr_ood_positive(id_s, ood_s, tpr) == pytest.approx(
        ref_fpr_ood_pos(id_s, ood_s, tpr)
    )
    assert auroc(id_s, ood_s) == pytest.approx(ref_auroc(id_s, ood_s))
    y = np.r_[np.ones(60), np.zeros(45)]
    s = np.r_[id_s, ood_s]
    assert auroc(id_s, ood_s) == pytest.approx(roc_auc_score(y, s))
    assert aupr_in(id_s, ood_s) == pytest.approx(average_precision_score(y, s))
    assert aupr_out(id_s, ood_s) == pytest.approx(average_precision_score(1 - y, -s))
    theta = np.percentile(id_s, 5)
    assert fpr95_paper(id_s, ood_s) == pytest.approx(np.mean(ood_s > theta))


def test_torch_inputs_and_float_outputs() -> None:
    id_t = torch.tensor(ID4, dtype=torch.float32, requires_grad=True)
    ood_t = torch.tensor(OOD3, dtype=torch.bfloat16)
    m = detection_metrics(id_t, ood_t)
    assert m == pytest.approx(detection_metrics(np.array(ID4), np.array(OOD3)))
    assert all(type(v) is float for v in m.values())
    assert type(auroc(ID4, OOD3)) is float


# --- accuracy ---------------------------------------------------------------------------------
def test_accuracy_logits_and_predictions() -> None:
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = [1, 0, 0, 0]
    assert accuracy(logits, labels) == pytest.approx(0.75)
    assert accuracy(torch.tensor(logits), torch.tensor(labels)) == pytest.approx(0.75)
    assert accuracy([1, 0, 1, 1], labels) == pytest.approx(0.5)
    assert accuracy(np.array([1.0, 0.0, 0.0, 0.0]), labels) == 1.0
    assert type(accuracy([0], [0])) is float


@pytest.mark.parametrize(
    ("pred", "labels", "match"),
    [
        (np.zeros((3, 2)), [0, 1], "3 predictions but 2 labels"),
        ([0, 1, 1], [0, 1], "3 predictions but 2 labels"),
        (np.zeros((2, 2, 2)), [0, 1], r"shape \(2, 2, 2\), expected \(N, C\) logits"),
        ([0, 1], [[0, 1]], r"labels has shape \(1, 2\)"),
        ([0.5, 1.0], [0, 1], "must be integer class indices"),
        ([0, 1], [0.5, 1.0], "labels must be integer class indices"),
        (np.zeros((0, 3)), [], "no samples"),
        (np.zeros((2, 0)), [0, 1], "no classes"),
        (np.array([[np.nan, 1.0]]), [0], "NaN/inf"),
    ],
)
def test_accuracy_errors(pred: object, labels: object, match: str) -> None:
    with pytest.raises(CroftError, match=match):
        accuracy(pred, labels)


# --- errors of the detection metrics -------------------------------------------------------
FUNCS = [auroc, aupr_in, aupr_out, fpr_at_tpr, fpr_at_tpr_ood_positive, fpr95_paper]


@pytest.mark.parametrize("fn", [*FUNCS, detection_metrics])
def test_empty_input(fn: Callable[..., object]) -> None:
    with pytest.raises(CroftError, match=rf"{fn.__name__}: id_scores is empty"):
        fn([], [1.0])
    with pytest.raises(CroftError, match="ood_scores is empty"):
        fn([1.0], np.array([]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", [*FUNCS, detection_metrics])
def test_non_finite(fn: Callable[..., object], bad: float) -> None:
    with pytest.raises(CroftError, match=r"ood_scores holds 1 NaN/inf value\(s\) of 3"):
        fn([1.0, 2.0], [0.0, bad, 1.0])
    with pytest.raises(CroftError, match="id_scores holds 1 NaN/inf"):
        fn(torch.tensor([bad, 2.0]), [0.0])


@pytest.mark.parametrize("fn", FUNCS)
def test_not_1d(fn: Callable[..., object]) -> None:
    with pytest.raises(CroftError, match=r"id_scores has shape \(2, 2\), expected a 1-D"):
        fn(np.ones((2, 2)), [0.0])
    with pytest.raises(CroftError, match=r"ood_scores has shape \(\), expected a 1-D"):
        fn([1.0], 0.5)


def test_non_numeric() -> None:
    with pytest.raises(CroftError, match="expected real numbers"):
        auroc(["a", "b"], [1.0])


@pytest.mark.parametrize("tpr", [0.0, -0.1, 1.5, 95, float("nan")])
@pytest.mark.parametrize("fn", [fpr_at_tpr, fpr_at_tpr_ood_positive])
def test_tpr_out_of_range(fn: Callable[..., object], tpr: float) -> None:
    with pytest.raises(CroftError, match=r"outside \(0, 1\]; pass a fraction"):
        fn(ID4, OOD3, tpr=tpr)


def test_tpr_one_is_allowed() -> None:
    # tpr = 1 keeps every ID sample: threshold 1 -> OOD 2 and 5 pass
    assert fpr_at_tpr(ID4, OOD3, tpr=1.0) == pytest.approx(2 / 3)
