"""Figure conventions: one marker and colour per method in every figure and panel, test
groups named per protocol (Setup-II's held-out domain is not an "ID test")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from croft import figures
from croft import plotstyle as ps

OODS = ("held_out_classes", "textures")
LABELS = ("zeroshot", "ce_adapter", "croft", "tip_adapter")


def _run(root: Path, label: str, dom: str, seed: int, **extra) -> dict:  # noqa: ANN003
    rng = np.random.default_rng(hash((label, dom, seed)) % 2**32)
    rdir = root / label / f"{dom}_seed{seed}"
    rdir.mkdir(parents=True)
    arrays = {"id/energy": rng.normal(3, 1, 40), "extra/source_val/energy": rng.normal(4, 1, 30)}
    arrays |= {f"ood/{o}/energy": rng.normal(1 + i, 1, 30) for i, o in enumerate(OODS)}
    arrays |= {f"shifted/{n}/energy": rng.normal(2, 1, 20) for n in extra.get("shifted_sets", ())}
    np.savez(rdir / "scores.npz", **arrays)
    auroc = 0.6 + 0.05 * LABELS.index(label) + 0.01 * seed
    rec = {
        "label": label,
        "method": label,
        "test_domain": dom,
        "seed": seed,
        "accuracy": 0.7 + 0.02 * LABELS.index(label),
        "detection": {o: {"energy": {"auroc": auroc}} for o in OODS},
        "run_dir": str(rdir),
        **extra,
    }
    (rdir / "metrics.json").write_text(json.dumps(rec))
    return rec


@pytest.fixture
def recs(tmp_path) -> list[dict]:
    domains = ("photo", "sketch")
    return [_run(tmp_path, lab, d, s) for lab in LABELS for d in domains for s in (1, 2)]


def _markers(fig) -> dict[str, set[str]]:  # noqa: ANN001
    """colour -> the marker shapes drawn in it, over every panel of ``fig`` (error-bar
    caps, ``_`` and ``|``, left out)."""
    out: dict[str, set[str]] = {}
    for ax in fig.get_axes():
        for line in ax.get_lines():
            if line.get_marker() not in ("None", None, "", " ", "_", "|"):
                out.setdefault(line.get_color(), set()).add(line.get_marker())
    return out


def test_one_marker_and_colour_per_method_in_every_figure(recs) -> None:
    styles = ps.method_styles(r["label"] for r in recs)
    assert len({(s.color, s.marker) for s in styles.values()}) == len(LABELS)
    assert len({s.marker for s in styles.values()}) == len(LABELS)
    # keyed by the row label; grid and oracle labels draw as their method; order-free
    assert ps.method_styles(["croft[lambda2=1.0]"])["croft[lambda2=1.0]"] == styles["croft"]
    assert ps.method_styles(["croft (oracle)", "zeroshot"])["croft (oracle)"] == styles["croft"]
    assert ps.method_styles(reversed(LABELS)) == ps.method_styles(LABELS)
    with ps.style():
        roc = figures.roc_figure(recs)
        acc = figures.accuracy_auroc_figure(recs)
        drawn = [_markers(roc), _markers(acc)]
        for fig in (roc, acc):
            ps.pyplot().close(fig)
    want = {s.color: {s.marker} for s in styles.values()}
    for got in drawn:  # one shape per colour across both panels, the same in both figures
        assert {c: m for c, m in got.items() if c in want} == want


def test_roc_legend_names_each_methods_mean_auroc(recs) -> None:
    with ps.style():
        fig = figures.roc_figure(recs, log_fpr=True)
    axes = fig.get_axes()
    assert len(axes) == len(OODS) and all(ax.get_xscale() == "log" for ax in axes)
    for ax in axes:
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        # tip_adapter: 0.6 + 0.15 + mean(0.01, 0.02) over seeds = 76.5
        assert texts == [
            "zeroshot: AUROC 61.5 (4 runs)",
            "ce_adapter: AUROC 66.5 (4 runs)",
            "croft: AUROC 71.5 (4 runs)",
            "tip_adapter: AUROC 76.5 (4 runs)",
        ]
    ps.pyplot().close(fig)


def _legend(fig) -> list[str]:  # noqa: ANN001
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


def test_energy_groups_are_named_by_protocol(tmp_path) -> None:
    lodo = [
        _run(tmp_path / "a", lab, "photo", 1, shifted_sets=["sketch_extra"])
        for lab in ("zeroshot", "croft")
    ]
    setup1 = [
        _run(tmp_path / "b", lab, "imagenet", 1, shifted_sets=["imagenet_r"], id_classes=["a"])
        for lab in ("zeroshot", "croft")
    ]
    with ps.style():
        fig2 = figures.energy_figure(lodo, "photo")
        fig1 = figures.energy_figure(setup1, "imagenet")
    names2, names1 = _legend(fig2), _legend(fig1)
    # Setup-II (leave-one-domain-out, extra target domains): the test set is the held-out
    # domain, never "ID test"
    assert names2[:3] == [
        "ID (source val)",
        "held-out domain (covariate-shifted)",
        "extra target: sketch_extra",
    ]
    assert "ID test" not in names2 and "held-out domain photo" in fig2._suptitle.get_text()
    assert names1[:3] == ["ID (source val)", "ID test", "shifted: imagenet_r"]
    assert "test set imagenet" in fig1._suptitle.get_text()
    # the method's colour names its panel
    croft = ps.method_styles(["zeroshot", "croft"])["croft"].color
    assert [ax.get_title().split("\n")[0] for ax in fig2.get_axes()] == ["zeroshot", "croft"]
    assert fig2.get_axes()[1].title.get_color() == croft
    for fig in (fig1, fig2):
        ps.pyplot().close(fig)
