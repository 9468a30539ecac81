"""``croft report`` outputs on hand-made run directories with known numbers.

Runs: 2 held-out domains × 2 seeds of zeroshot, ce_adapter, coop (every run kept its
initial prompt), clip_adapter (diverged once) and a 2-point croft grid; metrics.json with
and without the ``selection`` record; scores.npz; croft runs store a head in ``head/``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from croft.cli.main import main
from croft.errors import CroftError
from croft.report import collect_runs, export_head, select_records, write_report
from croft.tables import Cell, Table, tidy_rows, to_latex, to_markdown

DOMAINS, SEEDS, OODS = ("photo", "sketch"), (1, 2), ("held_out_classes", "textures")
# method -> (accuracy, energy auroc); croft gains 2 points of accuracy in every pair
BASE = {
    "zeroshot": (0.80, 0.70),
    "ce_adapter": (0.81, 0.68),
    "coop": (0.80, 0.70),
    "clip_adapter": (0.79, 0.69),
    "croft[lambda2=1.0]": (0.82, 0.70),
    "croft[lambda2=10.0]": (0.60, 0.50),
}


def _write_run(root: Path, label: str, dom: str, seed: int, head=None) -> None:  # noqa: ANN001
    acc, auroc = BASE[label]
    jitter = 0.01 * (seed - 1) + (0.03 if dom == "sketch" else 0.0)
    det = {
        o: {
            "energy": {"auroc": auroc + jitter, "fpr95_id_pos": 1 - auroc, "aupr_in": auroc},
            "knn": {"auroc": 0.6, "fpr95_id_pos": 0.5, "aupr_in": 0.55},  # shared features
        }
        for o in OODS
    }
    method = label.split("[")[0]
    rec = {
        "label": label,
        "method": method,
        "options": {"lambda2": float(label.split("=")[1][:-1])} if "[" in label else {},
        "test_domain": dom,
        "seed": seed,
        "accuracy": acc + jitter,
        "val_accuracy": 0.9 if label == "croft[lambda2=1.0]" else 0.5 + acc / 10,
        "selected_epoch": 0 if method == "coop" else 4,
        "detection": det,
    }
    if method != "zeroshot":  # zeroshot: an older run without a selection record
        diverged = method == "clip_adapter" and dom == "sketch" and seed == 2
        rec["selection"] = {
            "select_epoch": "best",
            "selected_epoch": rec["selected_epoch"],
            "val_init": 0.5,
            "val_epoch0": 0.5,
            "val_selected": rec["val_accuracy"],
            "diverged": diverged,
            "diverged_epoch": 3 if diverged else None,
            "param_change": 0.0 if method == "coop" else 0.3,
            "kept_init": method == "coop",
        }
    rdir = root / "runs" / label / f"{dom}_seed{seed}"
    rdir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    np.savez(
        rdir / "scores.npz",
        **{"id/energy": rng.normal(3, 1, 60), "extra/source_val/energy": rng.normal(4, 1, 40)},
        **{f"ood/{o}/energy": rng.normal(1 + i, 1, 50) for i, o in enumerate(OODS)},
    )
    (rdir / "config.json").write_text(
        json.dumps({"method": method, "config": {"lr": 0.002, "epochs": 5, "seed": seed}})
    )
    (rdir / "metrics.json").write_text(json.dumps(rec))
    if head is not None:
        head(rdir / "head")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_task) -> Path:
    import croft.methods as M
    from croft.evaluation import energy_threshold

    fitted = M.fit("zeroshot", small_task.train).head
    thr = energy_threshold(fitted, small_task.val)

    def head(d: Path) -> None:
        M.save_head(fitted, d, ood_threshold={"score": "energy", "tpr": 0.95, "value": thr})

    root = tmp_path_factory.mktemp("runs")
    for label in BASE:
        for d in DOMAINS:
            for s in SEEDS:
                _write_run(root, label, d, s, head if label.startswith("croft") else None)
    return root


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> dict:
    return write_report(runs, tmp_path_factory.mktemp("rep") / "report")


def test_results_csv_is_tidy_and_numeric(report, runs) -> None:
    out = Path(report["out_dir"])
    rows = list(csv.DictReader((out / "results.csv").open()))
    n_runs = len(BASE) * len(DOMAINS) * len(SEEDS)
    # per run: accuracy, val accuracy, 2 OOD sets x 2 scores x 3 metrics
    assert len(rows) == n_runs * (2 + 2 * 2 * 3) and report["runs"] == n_runs
    assert all(float(r["value"]) == float(r["value"]) for r in rows)  # every value a number
    acc = [
        r
        for r in rows
        if r["label"] == "coop"
        and r["metric"] == "accuracy"
        and r["split"] == "test"
        and r["test_domain"] == "photo"
        and r["seed"] == "1"
    ]
    # the tables' unit (%), said by the unit column; nll keeps its own
    assert len(acc) == 1 and float(acc[0]["value"]) == pytest.approx(80.0)
    assert acc[0]["unit"] == "%" and {r["unit"] for r in rows} == {"%"}
    assert acc[0]["kept_init"] == "True" and "cfg.lr" not in acc[0]  # runs.csv has it
    lam = {r["label"]: r["cfg.lambda2"] for r in rows if r["label"].startswith("croft[")}
    assert lam == {"croft[lambda2=1.0]": "1.0", "croft[lambda2=10.0]": "10.0"}  # grid points
    # runs.csv: one row per run with its whole resolved config, joined on run_dir
    runs_csv = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs_csv) == n_runs and "metric" not in runs_csv[0] and "value" not in runs_csv[0]
    by_dir = {r["run_dir"]: r for r in runs_csv}
    assert by_dir[acc[0]["run_dir"]]["cfg.lr"] == "0.002"
    assert by_dir[acc[0]["run_dir"]]["selected"] == acc[0]["selected"]
    assert {r["metric"] for r in rows} >= {"fpr95_id_pos", "aupr_in", "auroc", "accuracy"}
    grid = {r["label"]: r["selected"] for r in rows if r["label"].startswith("croft[")}
    assert grid == {"croft[lambda2=1.0]": "True", "croft[lambda2=10.0]": "False"}
    pd = pytest.importorskip("pandas")
    df = pd.read_csv(out / "results.csv")
    assert df["value"].dtype.kind == "f" and df["seed"].dtype.kind == "i"
    wide = pd.read_csv(out / "detection_energy.csv")
    assert all(wide[c].dtype.kind in "fi" for c in wide.columns[1:])


def test_tables_mark_untrained_rows_and_identical_rows(report) -> None:
    md = (Path(report["out_dir"]) / "report.md").read_text()
    header, rows = report["tables"]["accuracy"]
    assert header == ["method", "photo", "sketch", "avg"]
    labels = [r[0] for r in rows]
    assert "coop†" in labels and "clip_adapter‡" in labels and "croft" in labels
    assert "† coop: 4 of 4 runs kept the initial prompt" in md
    assert "‡ clip_adapter: training diverged in 1 of 4 runs" in md
    assert "coop: 4 of 4 runs kept the initial prompt" in md  # the per-method count
    # zeroshot and coop print the same numbers: said under the table, not silently
    assert "rows coop, zeroshot are identical to the printed digit" in md
    assert "the knn score uses only image features" in md
    assert "fpr95_id_pos ↓" in md and "aupr_in ↑" in md


def test_verdict_has_intervals_and_names_untrained(report) -> None:
    lines = report["verdict"]
    assert lines[0] == "- did not train: coop (4 of 4 runs kept the initial prompt)"
    acc = next(x for x in lines if x.startswith("- held-out accuracy: croft vs zeroshot"))
    # croft - zeroshot = +2.0 points in each of the 4 pairs: a point interval, significant
    # the cluster bootstrap over the 2 held-out domains; n = 4 pairs: the small-n caution
    assert "+2.0 points, 95% CI [+2.0, +2.0], n=4 in 2 held-out domains (caution: " in acc
    assert acc.endswith(": better") and ", Holm p=" in acc
    auroc = next(x for x in lines if "held_out_classes, energy auroc: croft vs zeroshot" in x)
    assert "+0.0 points" in auroc and "no significant difference" in auroc
    md = (Path(report["out_dir"]) / "report.md").read_text()
    assert "## Verdict" in md and acc[2:] in md


def test_grid_points_are_listed_per_domain_and_seed(report) -> None:
    md = (Path(report["out_dir"]) / "report.md").read_text()
    assert "Grid points chosen (per held-out domain and seed)" in md
    assert md.count("croft[lambda2=1.0]") >= 4
    assert "croft <- croft[lambda2=1.0]" in md


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.imgs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:  # noqa: ANN001
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])

    def handle_data(self, data) -> None:  # noqa: ANN001
        self.text.append(data)


def test_html_is_one_self_contained_file(report) -> None:
    html = (Path(report["out_dir"]) / "report.html").read_text()
    p = _Collect()
    p.feed(html)
    assert p.tags.count("table") >= 4 and "h2" in p.tags
    assert p.imgs and all(s.startswith("data:image/png;base64,") for s in p.imgs)
    assert len(p.imgs) == len(report["plots"])
    text = " ".join(p.text)
    assert "did not train: coop" in text and "95% CI" in text
    assert 'colspan="3"' in html  # grouped header per OOD set
    assert 'src="http' not in html and "<link" not in html


def test_latex_booktabs_grouped_bold_escaped() -> None:
    t = Table(
        "detection_energy",
        "AUROC (%) & FPR95 ± std, λ2 grid",
        [("held_out_classes", ["fpr95_id_pos ↓", "auroc ↑"])],
        [("zeroshot", [Cell([0.4]), Cell([0.7])]), ("croft_x", [Cell([0.2, 0.4]), Cell([0.8])])],
        ["min", "max"],
        notes=["† coop: 1 of 1 runs kept the initial prompt"],
    )
    tex = to_latex(t)
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"\multicolumn{2}{c}{held\_out\_classes}" in tex and r"\cmidrule(lr){2-3}" in tex
    assert r"\label{tab:croft-detection-energy}" in tex
    # ± is the sample std (ddof=1): 20 and 40 -> 30.0 ± 14.1
    assert r"croft\_x & \textbf{30.0 $\pm$ 14.1} & \textbf{80.0} \\" in tex
    assert r"zeroshot & 40.0 & 70.0 \\" in tex  # one value: no ±
    assert r"\& FPR95 $\pm$ std, $\lambda$2" in tex and r"$^\dagger$" in tex
    assert "±" not in tex and "λ" not in tex and "↓" not in tex
    md = to_markdown(t)
    assert "| zeroshot |" in md.replace("  ", " ") and "30.0 ± 14.1" in md


def test_single_seed_omits_plus_minus(runs) -> None:
    recs = [r for r in select_records(collect_runs(runs)) if r["seed"] == 1]
    from croft.report import build_tables

    _, rows = build_tables(recs)["accuracy"].as_pair()
    zs = next(r for r in rows if r[0] == "zeroshot")
    assert zs[1:3] == ["80.0", "83.0"] and "±" in zs[3]  # avg: over 2 domains


def test_tidy_rows_without_selection_record() -> None:
    rec = {"label": "m", "test_domain": "a", "seed": 1, "accuracy": 0.5, "detection": {}}
    (row,) = tidy_rows([rec])
    # no selection record: False (typed, as the report's † counts it); value in %
    assert row["kept_init"] is False and row["diverged"] is False
    assert row["value"] == 50.0 and row["unit"] == "%" and row["metric"] == "accuracy"
    assert row["row"] == "m"


def test_export_head_predicts_with_an_ood_flag(runs, tmp_path, small_task, capsys) -> None:
    from croft.predict import load_predictor

    dest = tmp_path / "best"
    argv = ["report", str(runs), "--export-head", str(dest), "--method", "croft"]
    assert main(argv) == 2
    assert "4 runs match" in capsys.readouterr().err
    assert main([*argv, "--domain", "sketch", "--seed", "2"]) == 0
    pred = load_predictor(dest, lazy=True).predict_features(small_task.test.eval_features())
    assert pred and all(p.is_ood in (True, False) for p in pred)
    with pytest.raises(CroftError, match="not empty"):
        export_head(runs, dest, method="croft", domain="sketch", seed=2)
    with pytest.raises(CroftError, match="stored no head"):
        export_head(runs, tmp_path / "z", method="coop", domain="sketch", seed=2)


def _layout(fig):  # noqa: ANN001, ANN202
    """(axes, legend) after drawing; fails if the legend overlaps an axes or the title."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = fig.get_axes()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in axes:
        assert not box.overlaps(ax.get_tightbbox(renderer)), ax.get_title()
    assert not box.overlaps(fig._suptitle.get_window_extent(renderer))
    return axes, legend


def _roc_layout(fig):  # noqa: ANN001, ANN202
    """(axes, per-axes legends); fails if a panel's legend overlaps any axes or the title."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = fig.get_axes()
    assert not fig.legends
    legends = [ax.get_legend() for ax in axes]
    for leg in legends:
        box = leg.get_window_extent(renderer)
        for ax in axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()
            assert not box.overlaps(ax.xaxis.label.get_window_extent(renderer)), ax.get_title()
        assert not box.overlaps(fig._suptitle.get_window_extent(renderer))
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)
    return axes, legends


@pytest.mark.parametrize("which", ["energy", "energy_sketch", "roc", "roc_log", "acc_auroc"])
def test_figure_layout(runs, which) -> None:
    from croft import figures
    from croft import plotstyle as ps

    recs = select_records(collect_runs(runs))
    methods = sorted({r["label"] for r in recs})
    with ps.style():
        fig = {
            "energy": lambda: figures.energy_figure(recs),
            "energy_sketch": lambda: figures.energy_figure(recs, "sketch"),
            "roc": lambda: figures.roc_figure(recs),
            "roc_log": lambda: figures.roc_figure(recs, log_fpr=True),
            "acc_auroc": lambda: figures.accuracy_auroc_figure(recs),
        }[which]()
        if which.startswith("roc"):
            axes, legends = _roc_layout(fig)
        else:
            axes, legend = _layout(fig)
    title = fig._suptitle.get_text()
    if which == "acc_auroc":
        assert len(axes) == len(OODS) and [a.get_title() for a in axes][0].endswith(OODS[0])
        assert "mean over 20 runs (2 held-out domains × 2 seeds)" in title.replace("\n", " ")
        assert len(legend.get_texts()) == len(methods)
        # one colour per method, the same in every figure
        colors = ps.method_colors(methods)
        assert len(set(colors.values())) == len(methods)
    elif which.startswith("roc"):
        # one panel per OOD set, every method overlaid, its mean AUROC in its legend entry
        assert [a.get_title() for a in axes] == [f"OOD set: {o}" for o in OODS]
        for leg in legends:
            texts = [t.get_text() for t in leg.get_texts()]
            assert len(texts) == len(methods) and all(": AUROC " in t for t in texts)
        # the mean of the recorded AUROCs (as in the tables): zeroshot 70 + jitter
        # (0, 1, 3, 4 points over photo/sketch x seeds 1/2) = 72.0
        zs = next(t.get_text() for t in legends[0].get_texts() if t.get_text().startswith("zero"))
        assert zs == "zeroshot: AUROC 72.0 (4 runs)"
        # no band: every filled area would hide the other methods' curves
        assert not any(ax.collections for ax in axes)
    else:
        assert len(axes) == len(methods)  # one panel per method, 5 -> 4 + 1 (wraps)
    xs = {round(ax.get_position().x0, 3) for ax in axes}
    assert len(xs) <= 4
    if which == "energy_sketch":
        assert "held-out domain sketch, 2 seeds pooled" in title
        assert all("sketch" in ax.get_title() for ax in axes)
        assert len(legend.get_texts()) == 2 + len(OODS)  # ID, covariate-shifted, each OOD
    if which.startswith("roc"):
        assert "mean over 20 runs" in title.replace("\n", " ")
        assert axes[0].get_xscale() == ("log" if which == "roc_log" else "linear")
    ps.pyplot().close(fig)


def test_figures_saved_as_png_and_pdf(report) -> None:
    for png in report["plots"]:
        assert png.endswith(".png") and Path(png).stat().st_size > 1000
        assert Path(png[:-4] + ".pdf").read_bytes()[:4] == b"%PDF"
    stems = {Path(p).stem for p in report["plots"]}
    assert {"energy_distributions", "energy_distributions_sketch", "roc_energy"} <= stems


def test_malicious_scores_file_is_one_line_and_never_unpickled(tmp_path, capsys) -> None:
    root = tmp_path / "runs"
    _write_run(root, "zeroshot", "photo", 1)
    (scores,) = root.rglob("scores.npz")
    np.savez(scores, bad=np.array([object()], dtype=object))  # needs pickle to read
    rc = main(["report", str(root), "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "scores.npz" in err[0] and "Traceback" not in err[0]


def test_methods_without_epochs_are_not_listed_as_trained() -> None:
    from croft.verdict import status_lines, training_status

    recs = [
        {"label": "zeroshot", "method": "zeroshot", "selection": {}},
        {"label": "ce", "method": "ce_adapter", "selection": {"kept_init": False}},
    ]
    lines = status_lines(training_status(recs))
    assert lines == ["ce: 0 of 1 runs kept its initialisation"]


class _Ids(HTMLParser):
    """Element ids, contents links, and where each h2 / table / details starts."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.links: list[str] = []
        self.starts: list[tuple[str, int, dict]] = []
        self._in_nav = False

    def handle_starttag(self, tag, attrs) -> None:  # noqa: ANN001
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "nav":
            self._in_nav = True
        if tag == "a" and self._in_nav:
            self.links.append(a["href"])
        self.starts.append((tag, self.getpos()[0] * 10**7 + self.getpos()[1], a))

    def handle_endtag(self, tag) -> None:  # noqa: ANN001
        if tag == "nav":
            self._in_nav = False


def test_html_results_first_contents_resolve_grid_collapsed(report) -> None:
    html = (Path(report["out_dir"]) / "report.html").read_text()
    p = _Ids()
    p.feed(html)
    # a contents list: one link per section, each resolving to a unique id
    h2_ids = [a["id"] for tag, _, a in p.starts if tag == "h2"]
    assert p.links == [f"#{i}" for i in h2_ids] and len(set(p.ids)) == len(p.ids)
    assert html.index('<nav class="contents">') < html.index("<h2")
    # results first: the verdict, then the first result table, both before the grid table
    body = html.split("</nav>", 1)[1]
    verdict = body.index('<h2 id="verdict">')
    accuracy = body.index("<h2", body.index(">Closed-set OOD generalisation") - 80)
    grid = body.index(">Grid points chosen (per held-out domain and seed)</h2>")
    assert verdict < accuracy < grid
    assert body.index("<table>", accuracy) < grid
    # the grid table (one row per held-out domain x seed) folded into <details>
    details = body.index("<details>", grid)
    folded = body[details : body.index("</details>", details)]
    assert "<summary>the 4 grid points chosen (show)</summary>" in folded
    assert folded.count("croft[lambda2=1.0]") == 4
    assert "croft[lambda2=1.0]</td>" not in body[:details]  # no grid row outside it
    # the Markdown keeps every section, in the same order, unfolded
    md = (Path(report["out_dir"]) / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## Closed-set") < md.index("## Figures")
    assert md.index("## Figures") < md.index("## Grid points")  # the last section
    assert md.count("| croft[lambda2=1.0] |") == 4 and "<details>" not in md


def test_ties_are_bold_in_every_row_and_every_format(report) -> None:
    # detection_energy: zeroshot, coop and croft share the best AUROC (70 + the same
    # jitter): every one of them is bold, in HTML and Markdown alike
    html = (Path(report["out_dir"]) / "report.html").read_text().split("</nav>", 1)[1]
    section = html.split("Open-set OOD detection, energy score", 1)[1].split("</table>", 1)[0]
    bold_rows = {
        row.split("</td>", 1)[0].removeprefix("<td>")
        for row in section.split("<tr>")[1:]
        if 'class="best"' in row
    }
    assert {"zeroshot", "coop†", "croft"} <= bold_rows
    assert "ce_adapter" not in bold_rows  # 68 + jitter: not tied
    md = (Path(report["out_dir"]) / "report.md").read_text()
    md_section = md.split("Open-set OOD detection, energy score", 1)[1].split("\n## ", 1)[0]
    md_bold = {line.split("|")[1].strip() for line in md_section.splitlines() if "**" in line}
    assert md_bold == bold_rows


def test_best_cells_ties_at_printed_precision() -> None:
    from croft.tables import best_cells, best_rows

    t = Table(
        "accuracy",
        "acc",
        [("", ["a", "b", "c"])],
        [
            ("m1", [Cell([0.8004]), Cell([0.5]), Cell([0.1])]),
            ("m2", [Cell([0.7996, 0.8004]), Cell([0.6]), Cell([0.1])]),  # 80.0 ± 0.1 (sample std)
            ("m3", [Cell([0.7]), Cell([0.6]), Cell([])]),
        ],
        ["max", "min", ""],
    )
    assert best_cells(t) == [frozenset({0, 1}), frozenset({0}), frozenset()]
    assert best_rows(t) == [0, 0, None]  # the first tied row, as before
    md = to_markdown(t)
    assert "| m1 | **80.0** | **50.0** | 10.0 |" in " ".join(md.split()).replace("| ", "| ")
    assert "**80.0 ± 0.1**" in md and "**60.0**" not in md
    tex = to_latex(t)
    assert r"\textbf{80.0}" in tex and r"\textbf{80.0 $\pm$ 0.1}" in tex
    from croft.report_html import _result_html

    html = _result_html(t)
    assert html.count('class="best"') == 3
    # a cell that prints nan (a metric undefined in a run) is never the best, nor hides it
    rows = [("p", [Cell([math.nan])]), ("q", [Cell([0.5])]), ("r", [Cell([0.4])])]
    t2 = Table("x", "x", [("", ["a"])], rows, ["max"])
    assert best_cells(t2) == [frozenset({1})]


def test_results_csv_pivots_to_the_report_tables(report) -> None:
    pytest.importorskip("pandas")
    from report_pivot import assert_results_csv_reproduces_report

    # accuracy, detection_energy, detection_knn, each row and cell as printed
    assert assert_results_csv_reproduces_report(Path(report["out_dir"])) == 3


def test_results_csv_columns_are_typed_and_never_empty(report) -> None:
    pd = pytest.importorskip("pandas")
    out = Path(report["out_dir"])
    for name in ("results.csv", "runs.csv"):
        df = pd.read_csv(out / name)
        for col in ("selected", "kept_init", "diverged"):
            assert df[col].dtype == bool, (name, col, df[col].dtype)
        assert not [c for c in df.columns if df[c].isna().all()], name
        assert "selected_from" not in df.columns  # never filled for runs read from disk
    df = pd.read_csv(out / "results.csv")
    # a grid point carries the row it competed for; zeroshot (no selection record): False
    assert set(df["row"]) == {"zeroshot", "ce_adapter", "coop", "clip_adapter", "croft"}
    grid = df[df["label"].str.startswith("croft[")]
    assert set(grid["row"]) == {"croft"} and set(grid["selected"]) == {True, False}
    assert not df[df["row"] == "zeroshot"]["kept_init"].any()
    assert df[df["row"] == "coop"]["kept_init"].all()


def test_per_table_csv_headers_and_std_columns(report) -> None:
    pd = pytest.importorskip("pandas")
    out = Path(report["out_dir"])
    wide = pd.read_csv(out / "detection_energy.csv")
    assert all(re.fullmatch(r"[a-z0-9_]+", c) for c in wide.columns), list(wide.columns)
    assert wide.columns[0] == "row" and len(wide.columns) == 1 + 2 * 3 * 3
    assert list(wide.columns[1:4]) == [
        "held_out_classes__fpr95_id_pos_mean",
        "held_out_classes__fpr95_id_pos_std",
        "held_out_classes__fpr95_id_pos_n",
    ]
    acc = pd.read_csv(out / "accuracy.csv").set_index("row")
    assert list(acc.columns) == [
        f"{c}_{k}" for c in DOMAINS + ("avg",) for k in ("mean", "std", "n")
    ]
    # zeroshot: photo 80, 81 (seeds 1, 2); avg over 4 runs 80, 81, 83, 84
    z = acc.loc["zeroshot"]
    assert z["photo_mean"] == pytest.approx(80.5) and z["photo_n"] == 2
    assert z["photo_std"] == pytest.approx(np.std([80, 81], ddof=1), abs=1e-4)
    assert z["avg_n"] == 4 and z["avg_std"] == pytest.approx(
        np.std([80, 81, 83, 84], ddof=1), abs=1e-4
    )


def test_rows_keep_the_paper_variant_and_the_oracle_apart(tmp_path, monkeypatch) -> None:
    pd = pytest.importorskip("pandas")
    from report_pivot import assert_results_csv_reproduces_report

    monkeypatch.setitem(BASE, "croft_paper", (0.81, 0.69))
    root = tmp_path / "runs"
    for label in ("zeroshot", "croft[lambda2=1.0]", "croft[lambda2=10.0]", "croft_paper"):
        for d in DOMAINS:
            for s in SEEDS:
                _write_run(root, label, d, s)
    for m in root.glob("runs/croft_paper/*/metrics.json"):  # the same method, another row
        m.write_text(json.dumps({**json.loads(m.read_text()), "method": "croft"}))
    for selection, croft_row in (("val_acc", "croft"), ("oracle", "croft (oracle)")):
        out = tmp_path / selection
        write_report(root, out, plots=False, selection=selection)
        df = pd.read_csv(out / "results.csv")
        assert set(df["row"]) == {"zeroshot", croft_row, "croft_paper"}
        assert set(df[df["row"].isin([croft_row, "croft_paper"])]["method"]) == {"croft"}
        assert set(df[df["label"].str.startswith("croft[")]["row"]) == {croft_row}
        assert assert_results_csv_reproduces_report(out) == 3


def test_every_caption_says_what_plus_minus_means(report) -> None:
    from croft.tables import PM_TEXT

    out = Path(report["out_dir"])
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    headings = [x for x in md.splitlines() if x.startswith("## ")]
    results = [h for h in headings if "(%)" in h]
    assert len(results) == len(report["tables"]) and all(PM_TEXT in h for h in results)
    # the figure with error bars says it too, in both documents
    assert f"Held-out accuracy vs energy AUROC per OOD set; {PM_TEXT}" in md
    assert html.count(PM_TEXT) >= len(report["tables"]) + 1
    # the detection titles explain the FPR95 they show, not the other one
    det = [h for h in results if h.startswith("## Open-set")]
    assert det and all("fpr95_id_pos: FPR at 95% TPR" in h for h in det)
    assert not any("fpr95_paper" in h for h in det)


def test_error_bars_are_the_table_cells(runs) -> None:
    from croft import figures
    from croft.report import build_tables

    recs = select_records(collect_runs(runs))
    tables = build_tables(recs)
    points = figures.accuracy_auroc_points(recs)
    acc = dict(tables["accuracy"].rows)
    det = tables["detection_energy"]
    j = det.columns.index("held_out_classes auroc ↑")
    for label, (x, xe, y, ye) in points["held_out_classes"].items():
        m, s, n = acc[label][-1].stats()  # the avg column: every (domain, seed) run
        assert n == 4 and (x, xe) == pytest.approx((m, s))
        cell = dict(det.rows)[label][j]
        assert (y, ye) == pytest.approx(cell.stats()[:2])
    # croft: 82, 83 (photo), 85, 86 (sketch): the std over the 4 runs (1.83), not the std
    # of the per-seed means over domains (83.5, 84.5: 0.5) the figure used to draw
    assert points["held_out_classes"]["croft"][1] == pytest.approx(np.std([82, 83, 85, 86], ddof=1))


def test_near_far_columns_pivot_from_the_tag_column(tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    from report_pivot import assert_results_csv_reproduces_report

    root = tmp_path / "runs"
    for label in ("zeroshot", "ce_adapter"):
        for d in DOMAINS:
            for s in SEEDS:
                _write_run(root, label, d, s)
    tags = {"held_out_classes": "near", "textures": "far"}
    for m in root.rglob("metrics.json"):
        rec = json.loads(m.read_text())
        rec["detection"]["textures"]["energy"]["auroc"] -= 0.1 * rec["seed"]  # near != far
        m.write_text(json.dumps({**rec, "ood_tags": tags}))
    out = tmp_path / "rep"
    rep = write_report(root, out, plots=False)
    assert "near avg auroc ↑" in " ".join(rep["tables"]["detection_energy"][0])
    df = pd.read_csv(out / "results.csv")
    ood = df[df["split"] == "ood"]
    assert dict(zip(ood["set"], ood["tag"], strict=True)) == tags
    assert assert_results_csv_reproduces_report(out) == 3


def test_readme_pivot_recipe_gives_the_accuracy_table(report) -> None:
    pytest.importorskip("pandas")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "pivot_table" in b]
    csv_path = Path(report["out_dir"]) / "results.csv"
    scope: dict = {}
    exec(code.replace("runs/setup2_pacs/report/results.csv", str(csv_path)), scope)  # noqa: S102
    acc = scope["accuracy"]
    header, rows = report["tables"]["accuracy"]
    for row in rows:
        label = row[0].rstrip("†‡")
        for j, col in enumerate(header[1:], 1):
            mean, std = acc["mean"][col][label], acc["std"][col][label]
            assert row[j] == f"{mean:.1f} ± {std:.1f}", (label, col)
    energy = scope["energy"]
    (croft,) = [r for r in report["tables"]["detection_energy"][1] if r[0] == "croft"]
    cell = energy.loc["croft"]
    got = f"{cell['mean']['textures']['auroc']:.1f} ± {cell['std']['textures']['auroc']:.1f}"
    assert croft[5] == got  # textures auroc, the 5th cell
