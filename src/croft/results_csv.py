"""results.csv: a tidy long format of run results, one row per run × metric.

:func:`tidy_rows` turns run records (``metrics.json`` dicts) into one row per run × metric
with a numeric ``value`` in the tables' unit (``unit``: ``%`` for accuracy and the detection
metrics, ×100 of the fractions in ``metrics.json``; ``nats`` for the validation NLL),
``row`` (the report table row a run belongs to), typed booleans (``kept_init``,
``diverged``: False where a run recorded no selection) and the options it was given
(``cfg.<key>``: the config's options and its grid point) as columns; :func:`run_rows` gives
one row per run with its whole resolved config; :func:`to_csv_text` writes either for
pandas. Re-exported by :mod:`croft.tables`, whose human tables round as :data:`DECIMALS`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "DECIMALS",
    "PERCENT_METRICS",
    "TIDY_COLUMNS",
    "UNITS",
    "conventions_name",
    "run_rows",
    "tidy_rows",
    "to_csv_text",
]

# columns every tidy row has, in this order; config keys follow as ``cfg.<key>``
TIDY_COLUMNS = (
    "row",
    "label",
    "method",
    "world_seed",
    "test_domain",
    "seed",
    "split",
    "set",
    "tag",
    "score",
    "metric",
    "value",
    "unit",
    "selected",
    "selected_from",
    "selected_epoch",
    "kept_init",
    "diverged",
    "conventions",
    "run_dir",
)
#: metrics stored as fractions in metrics.json and shown (and written to results.csv) in %
PERCENT_METRICS = frozenset(
    {"accuracy", "auroc", "aupr_in", "aupr_out", "fpr95_id_pos", "fpr95_ood_pos", "fpr95_paper"}
)
#: the unit of every other metric in results.csv (``1``: as recorded)
UNITS = {"nll": "nats"}
#: a value in % is rounded to this many decimals, in results.csv and in the tables alike
#: (``58.1``, not ``58.099999999999994``), so that both average the same numbers
DECIMALS = 10


# ---------------------------------------------------------------- tidy long format


def conventions_name(rec: Mapping[str, Any]) -> str:
    """The evaluation conventions a run record was made under (``croft`` when unrecorded):
    the preset's name, plus ``+`` when single fields were overridden."""
    conv = rec.get("conventions")
    if not isinstance(conv, Mapping):
        return "croft"
    from croft.conventions import resolve

    name = str(conv.get("name", "croft"))
    try:
        same = resolve(name) == resolve(conv)
    except Exception:  # noqa: BLE001 - a record from another croft version: show its name
        same = True
    return name if same else f"{name}+"


def _run_columns(rec: Mapping[str, Any], config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Identity columns of a run, then ``cfg.<key>`` of ``config`` (default: its options)."""
    sel = rec.get("selection") if isinstance(rec.get("selection"), Mapping) else {}
    cols: dict[str, Any] = {
        "row": str(rec["label"]).split("[", 1)[0],
        "label": rec["label"],
        "method": rec.get("method", ""),
        "test_domain": rec.get("test_domain", ""),
        "seed": rec.get("seed", ""),
        "selected_from": rec.get("selected_from", ""),
        "selected_epoch": sel.get("selected_epoch", rec.get("selected_epoch", "")),
        "kept_init": bool(sel.get("kept_init")),  # as the report's † counts it
        "diverged": bool(sel.get("diverged")),
        "conventions": conventions_name(rec),
        "run_dir": rec.get("run_dir", ""),
    }
    for key, value in sorted((config or rec.get("options") or {}).items()):
        if isinstance(value, (str, int, float, bool)) or value is None:
            cols[f"cfg.{key}"] = value
    if rec.get("world_seed") is not None:  # a study over several worlds (world_seeds)
        cols["world_seed"] = rec["world_seed"]
    return {k: ("" if v is None else v) for k, v in cols.items()}


def run_rows(
    records: Iterable[Mapping[str, Any]], configs: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One row per run: its identity columns and ``cfg.<key>`` of its whole resolved config
    (``configs[run_dir]``, else its options); join to :func:`tidy_rows` on ``run_dir``."""
    return [_run_columns(r, configs.get(str(r.get("run_dir", "")))) for r in records]


def tidy_rows(
    records: Iterable[Mapping[str, Any]],
    configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per run × metric: ``split`` is ``test`` (held-out domain), ``source_val``,
    ``shifted`` (Setup-I sets), ``ood`` or ``ood_full_spectrum`` (positives id+covariate);
    ``set`` names the data, ``tag`` its ``near``/``far`` tag (an OOD set's, where the run
    recorded ``ood_tags``), ``score`` the OOD score; ``value`` is in ``unit`` (``%`` for
    :data:`PERCENT_METRICS`); ``row`` is the run's label without its grid point (the
    report's row under the default selection; :func:`croft.report.write_report` writes
    the exact row of every run).

    ``configs`` maps a run's ``run_dir`` to the config whose keys become ``cfg.*`` columns
    (default: the run's options, i.e. what the experiment config and its grid point set;
    the whole resolved config of a run is :func:`run_rows`' job: repeated on every metric
    row of a large grid, its many mostly empty columns made a 3,580-run study's CSV 137 MB).
    """
    rows: list[dict[str, Any]] = []
    for rec in records:
        base = _run_columns(rec, (configs or {}).get(str(rec.get("run_dir", ""))))
        tags = rec.get("ood_tags") if isinstance(rec.get("ood_tags"), Mapping) else {}

        def add(
            split: str,
            name: str,
            score: str,
            metric: str,
            value: Any,
            base: dict = base,
            tags: Mapping[str, Any] = tags,
        ) -> None:
            if value is None or not isinstance(value, (int, float)) or isinstance(value, bool):
                return
            pct = metric in PERCENT_METRICS
            rows.append(
                {
                    **base,
                    "split": split,
                    "set": name,
                    "tag": str(tags.get(name, "")) if split.startswith("ood") else "",
                    "score": score,
                    "metric": metric,
                    "value": round(100.0 * float(value), DECIMALS) if pct else float(value),
                    "unit": "%" if pct else UNITS.get(metric, "1"),
                }
            )

        add("test", str(rec.get("test_domain", "")), "", "accuracy", rec.get("accuracy"))
        add("source_val", "source_val", "", "accuracy", rec.get("val_accuracy"))
        add("source_val", "source_val", "", "nll", rec.get("val_nll"))
        for name, acc in (rec.get("shifted_accuracy") or {}).items():
            add("shifted", name, "", "accuracy", acc)
        for ood, per_score in (rec.get("detection") or {}).items():
            for score, metrics in per_score.items():
                for metric, value in sorted(metrics.items()):
                    add("ood", ood, score, metric, value)
        # full spectrum (positives id+covariate, croft.evaluation_frame), when recorded
        for ood, per_score in (rec.get("detection_full_spectrum") or {}).items():
            for score, metrics in per_score.items():
                for metric, value in sorted(metrics.items()):
                    add("ood_full_spectrum", ood, score, metric, value)
    return rows


def to_csv_text(rows: Sequence[Mapping[str, Any]], drop_empty: bool = False) -> str:
    """CSV of tidy (or run) rows: the :data:`TIDY_COLUMNS` they have, in that order, then
    every other (``cfg.*``) column, sorted; ``drop_empty`` leaves out the columns no row
    has a value in (``""`` or None everywhere)."""
    present = {k for r in rows for k in r if not drop_empty or r[k] not in ("", None)}
    lead = [k for k in TIDY_COLUMNS if k in present]
    extra = sorted(present - set(TIDY_COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, [*lead, *extra], restval="", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {k: (repr(v) if isinstance(v, float) else v) for k, v in r.items() if k in present}
        )
    return buf.getvalue()
