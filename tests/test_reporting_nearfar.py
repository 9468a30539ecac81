"""Reporting the field's way: near/far tags (YAML, run keys untouched), near/far averages
and full-spectrum columns in the report's tables, and metrics_frame giving the same
numbers as the report."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import croft.methods as M
from croft.errors import CroftError
from croft.evaluation_frame import METRIC_KEYS, metrics_frame, pooled_detection, tag_averages
from croft.experiments.evaluate import evaluate_task
from croft.experiments.loading import build_config
from croft.experiments.task import Task
from croft.report import build_tables
from croft.tables import tidy_rows, to_markdown

TAGS = {"unseen_classes": "near", "noise": "far"}
SCORES = ["energy", "mcm", "knn"]


def _doc(**ood_extra):  # noqa: ANN003, ANN202
    return {
        "name": "x",
        "backbone": "openclip:ViT-B-16:/w.pt",
        "data": {"root": "/d", "layout": "domainbed"},
        "ood": [{"name": "dtd", "root": "/o", "layout": "folder", **ood_extra}],
        "methods": [{"label": "zs", "method": "zeroshot"}],
    }


def test_tags_are_checked_and_never_enter_the_run_key():
    plain = build_config(_doc(), "<t>")
    tagged = build_config(_doc(tag="far"), "<t>")
    assert tagged.ood[0].tag == "far"
    assert plain.run_settings() == tagged.run_settings()
    with pytest.raises(CroftError, match="ood dtd: tag 'middle': use near or far"):
        build_config(_doc(tag="middle"), "<t>").check()


def test_pooled_detection_known_answer():
    pos_id = {"s": np.array([3.0, 4.0])}
    pos_cov = {"s": np.array([1.0, 2.0])}
    ood = {"o": {"s": np.array([0.0, 2.5])}}
    std = pooled_detection([pos_id], ood, ["s"])
    fs = pooled_detection([pos_id, pos_cov], ood, ["s"])
    assert std["o"]["s"]["auroc"] == pytest.approx(1.0)
    # 8 (ID, OOD) pairs; the shifted 1 and 2 fall below 2.5: 6 of 8 ordered right
    assert fs["o"]["s"]["auroc"] == pytest.approx(0.75)
    det = {"a": {"s": {"auroc": 0.6}}, "b": {"s": {"auroc": 0.8}}, "c": {"s": {"auroc": 0.1}}}
    avg = tag_averages(det, {"a": "near", "b": "near", "c": "far"}, "s", "auroc")
    assert avg == pytest.approx({"near": 0.7, "far": 0.1})


@pytest.fixture(scope="module")
def fitted(small_task):  # noqa: ANN001, ANN201
    head = M.fit("zeroshot", small_task.train, small_task.val).head
    task = Task(
        test_domain=small_task.test_domain,
        seed=1,
        train=small_task.train,
        val=small_task.val,
        test=small_task.test,
        ood_sets=small_task.ood_sets,
        meta={"ood_tags": TAGS},
    )
    fields, _ = evaluate_task(head, task, SCORES)
    record = {"label": "zs", "method": "zeroshot", "test_domain": task.test_domain, "seed": 1}
    record.update(fields, **task.meta)
    return head, task, record


def test_record_carries_the_full_spectrum(fitted):  # noqa: ANN001
    _, task, rec = fitted
    assert rec["full_spectrum_positives"] == ["id", "source_val"]
    fs, std = rec["detection_full_spectrum"], rec["detection"]
    assert set(fs) == set(std) == {"unseen_classes", "noise"}
    # source validation is in-domain ID: adding it moves every AUROC
    assert all(fs[o][s]["auroc"] != std[o][s]["auroc"] for o in fs for s in SCORES)
    split = {r["split"] for r in tidy_rows([rec])}
    assert "ood_full_spectrum" in split


def test_metrics_frame_gives_the_reports_numbers(fitted):  # noqa: ANN001
    head, task, rec = fitted
    frame = metrics_frame(
        head,
        task.test,
        task.ood_sets,
        scores=SCORES,
        bank=task.train,
        covariate={"source_val": task.val},
        tags=TAGS,
    )
    assert list(frame.columns) == ["method", "score", "ood_set", "tag", "positives", *METRIC_KEYS]
    assert set(frame["method"]) == {"zeroshot"}
    assert len(frame) == len(SCORES) * 2 * (2 + 2)  # 2 sets + near/far avg, 2 column sets
    tables = build_tables([rec])
    for score in SCORES:
        table = tables[f"detection_{score}"]
        (label, cells), = table.rows  # fmt: skip
        by_column = dict(zip(table.columns, cells, strict=True))
        for _, row in frame[frame["score"] == score].iterrows():
            prefix = "FS " if row["positives"] == "id+covariate" else ""
            for metric in ("fpr95_id_pos", "auroc", "aupr_in"):
                arrow = "↓" if metric.startswith("fpr") else "↑"
                cell = by_column[f"{prefix}{row['ood_set']} {metric} {arrow}"]
                assert cell.values == [pytest.approx(row[metric], abs=1e-12)], (score, row)
    md = to_markdown(tables["detection_energy"])
    assert "near avg auroc" in md and "FS far avg auroc" in md and "FS noise auroc" in md
    near = frame[(frame.ood_set == "near avg") & (frame.positives == "id")]
    got = near[near.score == "energy"]["auroc"].item()
    assert got == pytest.approx(rec["detection"]["unseen_classes"]["energy"]["auroc"])


def test_tables_without_tags_or_full_spectrum_are_unchanged(fitted):  # noqa: ANN001
    *_, rec = fitted
    plain = {k: v for k, v in rec.items() if k not in ("ood_tags", "detection_full_spectrum")}
    cols = build_tables([plain])["detection_energy"].columns
    assert not [c for c in cols if "avg" in c or c.startswith("FS ")]
    assert len(cols) == 2 * 3


def test_metrics_frame_without_pandas_says_how_to_get_it(fitted, monkeypatch):  # noqa: ANN001
    head, task, _ = fitted
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(CroftError, match="pip install pandas"):
        metrics_frame(head, task.test, task.ood_sets, scores=["energy"])


def test_metrics_frame_rejects_bad_tags(fitted):  # noqa: ANN001
    head, task, _ = fitted
    with pytest.raises(CroftError, match="tag 'close': use near or far"):
        metrics_frame(head, task.test, task.ood_sets, scores=["energy"], tags={"noise": "close"})


def test_local_scores_and_methods_need_local_features_in_the_config():
    doc = _doc()
    doc["scores"] = ["energy", "gl_mcm"]
    with pytest.raises(CroftError, match="score gl_mcm needs local .* local_features: true"):
        build_config(doc, "<t>").check()
    doc["scores"], doc["methods"] = ["energy"], [{"label": "lo", "method": "locoop"}]
    with pytest.raises(CroftError, match="method lo needs local"):
        build_config(doc, "<t>").check()
    doc["local_features"] = True
    cfg = build_config(doc, "<t>")
    cfg.check()
    assert cfg.run_settings()["local_features"] is True
    assert "local_features" not in build_config(_doc(), "<t>").run_settings()
