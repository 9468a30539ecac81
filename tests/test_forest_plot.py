"""The verdict at a glance (croft.forest): the forest plot's layout, the compact table, and
the report embedding both, with the primary comparison read from config.resolved.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from croft.forest import forest_figure, verdict_table
from croft.report import write_report
from croft.verdict import verdict

STYLES, SEEDS = ("photo", "painting", "cartoon", "pixel"), (1, 2, 3)
# label -> (method, accuracy, matched energy auroc, val accuracy)
ROWS = {
    "zeroshot": ("zeroshot", 0.70, 0.80, 0.60),
    "ce_adapter": ("ce_adapter", 0.78, 0.70, 0.95),
    "tip_adapter": ("tip_adapter", 0.80, 0.72, 0.90),
    "croft": ("croft", 0.79, 0.75, 0.93),
}


def _records() -> list[dict]:
    rng = np.random.default_rng(3)
    out = []
    for d in STYLES:
        for s in SEEDS:
            for label, (method, acc, auroc, val) in ROWS.items():
                det = {"energy": {"auroc": auroc + float(rng.normal(0, 0.01)), "fpr95_id_pos": 0.5}}
                out.append(
                    {
                        "label": label,
                        "method": method,
                        "test_domain": d,
                        "seed": s,
                        "accuracy": acc + float(rng.normal(0, 0.01)),
                        "val_accuracy": val,
                        "detection": {"matched": det},
                    }
                )
    return out


def test_forest_layout_one_panel_per_metric_one_row_per_comparison() -> None:
    v = verdict(_records(), "croft")
    fig = forest_figure(v)
    axes = fig.get_axes()
    # held-out accuracy, matched auroc, matched fpr95_id_pos
    assert len(axes) == 3
    titles = [ax.get_title() for ax in axes]
    assert titles[0].startswith("held-out accuracy") and "higher is better" in titles[0]
    assert "fpr95_id_pos" in titles[2] and "lower is better" in titles[2]
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    # top to bottom in the verdict's order: zeroshot, ce_adapter, then the other baselines
    assert labels[::-1] == ["croft vs zeroshot", "croft vs ce_adapter", "croft vs tip_adapter"]
    for ax in axes:  # zero marked in every panel
        assert any(list(line.get_xdata()) == [0.0, 0.0] for line in ax.get_lines()), ax.get_title()
    import matplotlib.pyplot as plt

    plt.close(fig)
    assert forest_figure(verdict(_records(), "nobody")) is None


def test_compact_table_cells_and_marks() -> None:
    v = verdict(_records(), "croft")
    header, rows = verdict_table(v)
    assert header == ["comparison", "accuracy", "matched auroc", "matched fpr95_id_pos"]
    assert [r[0] for r in rows] == [
        "croft vs zeroshot", "croft vs ce_adapter", "croft vs tip_adapter"
    ]  # fmt: skip
    zs = rows[0]
    assert 8.0 < float(zs[1].split()[0]) < 10.0 and zs[1].endswith("] *")  # 9 points
    assert zs[3] == "+0.0 [+0.0, +0.0]"  # equal FPR95 everywhere: no mark


def _write_runs(root: Path) -> None:
    for rec in _records():
        rdir = root / "runs" / rec["label"] / f"{rec['test_domain']}_seed{rec['seed']}"
        rdir.mkdir(parents=True)
        (rdir / "metrics.json").write_text(json.dumps(rec))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("forest_runs")
    _write_runs(root)
    primary = {"a": "croft", "b": "ce_adapter", "metric": "auroc", "ood": "matched"}
    (root / "config.resolved.json").write_text(json.dumps({"name": "x", "primary": primary}))
    return write_report(root)


def test_report_embeds_the_forest_plot_beside_the_table(report) -> None:
    out = Path(report["out_dir"])
    assert (out / "plots" / "verdict_forest.png").is_file()
    assert (out / "plots" / "verdict_forest.pdf").is_file()
    assert str(out / "plots" / "verdict_forest.png") in report["plots"]
    html = (out / "report.html").read_text()
    verdict_html = html.split('<h2 id="verdict">Verdict</h2>', 1)[1].split("<h2", 1)[0]
    assert '<div class="beside"><figure><img alt="Verdict at a glance' in verdict_html
    assert "data:image/png;base64," in verdict_html and "<table>" in verdict_html
    # the bullet lines come after the figure and its table
    assert verdict_html.index("<table>") < verdict_html.index("<ul>")
    md = (out / "report.md").read_text()
    section = md.split("## Verdict", 1)[1].split("\n## ", 1)[0]
    assert "(plots/verdict_forest.png)" in section
    assert section.index("| comparison ") < section.index("- 9 comparisons (")
    header, rows = report["verdict_table"]
    assert header[0] == "comparison" and len(rows) == 3


def test_report_names_the_configs_primary(report) -> None:
    lines = report["verdict"]
    header = next(x for x in lines if " comparisons (" in x)
    assert header.startswith("- 9 comparisons (cluster bootstrap: held-out domains resampled")
    assert header.endswith("primary: croft vs ce_adapter, matched, energy auroc")
    first = lines[lines.index(header) + 1]
    assert first.startswith("- primary: matched, energy auroc: croft vs ce_adapter: +4.")
    assert "n=12 in 4 held-out domains, Holm p" in first and "caution" not in first


def test_within_noise_lines_group_by_comparison() -> None:
    from croft.forest import within_noise_lines

    lines = within_noise_lines(verdict(_records(), "croft"))
    # fpr95 is equal everywhere (within the noise for every comparison); ce_adapter's
    # accuracy gap (+0.5) too; the rest exclude 0
    assert "- within the noise on accuracy, matched fpr95_id_pos: croft vs ce_adapter" in lines
    assert "- within the noise on matched fpr95_id_pos: croft vs zeroshot" in lines
    assert not any("on every metric" in x for x in lines)


def test_cli_report_bootstrap_iid_is_a_named_option(tmp_path, capsys) -> None:
    from croft.cli.main import main

    _write_runs(tmp_path / "runs_dir")
    out = tmp_path / "rep"
    assert main(["report", str(tmp_path / "runs_dir"), "--out", str(out), "--no-plots",
                 "--bootstrap", "iid"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "- 9 comparisons (i.i.d. pair bootstrap; 95% intervals" in text
    assert "held-out domains" not in text.split("verdict:", 1)[1]
    assert not (out / "plots" / "verdict_forest.png").exists()  # --no-plots: the table only
    assert "| comparison " in (out / "report.md").read_text()
