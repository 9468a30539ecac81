"""What a set of runs says: which rows trained, and paired method comparisons.

Reads the per-run ``selection`` record (``metrics.json["selection"]``: ``selected_epoch``,
``kept_init``, ``diverged``, ``diverged_epoch``, ...). Runs without it (older runs) count
as unknown, never as trained or untrained.

Comparisons pair runs on ``(test_domain, seed)`` (:func:`croft.stats.paired_bootstrap`);
differences are in percentage points, subject minus reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from croft.stats import PairedDiff, higher_is_better, paired_bootstrap

PROMPT_LEARNERS = frozenset({"coop", "cocoop", "dplclip"})
KEPT_MARK, DIVERGED_MARK = "†", "‡"


@dataclass(frozen=True)
class TrainingStatus:
    """Per method label: runs, runs with a selection record, kept-init and diverged counts."""

    label: str
    method: str
    runs: int
    known: int
    kept_init: int
    diverged: int

    @property
    def did_not_train(self) -> bool:
        """Every run is known and kept its initialisation."""
        return self.known == self.runs > 0 and self.kept_init == self.runs

    def noun(self) -> str:
        return "the initial prompt" if self.method in PROMPT_LEARNERS else "its initialisation"


def _selection(rec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The run's selection record; None when absent or empty (an empty record is what a
    method that does not train in epochs writes: zero-shot, Tip-Adapter, the probe)."""
    sel = rec.get("selection")
    return sel if isinstance(sel, Mapping) and "kept_init" in sel else None


def training_status(records: Sequence[Mapping[str, Any]]) -> dict[str, TrainingStatus]:
    """Counts per label (in first-seen order) from each run's ``selection`` record."""
    out: dict[str, TrainingStatus] = {}
    for label in dict.fromkeys(r["label"] for r in records):
        rs = [r for r in records if r["label"] == label]
        sels = [s for s in map(_selection, rs) if s is not None]
        out[label] = TrainingStatus(
            label,
            str(rs[0].get("method", label)),
            len(rs),
            len(sels),
            sum(bool(s.get("kept_init")) for s in sels),
            sum(bool(s.get("diverged")) for s in sels),
        )
    return out


def status_marks(statuses: Mapping[str, TrainingStatus]) -> tuple[dict[str, str], list[str]]:
    """Row markers (``†`` some runs kept the initialisation, ``‡`` some diverged) and one
    note per marked method, e.g. "coop: 12 of 12 runs kept the initial prompt"."""
    marks: dict[str, str] = {}
    notes: list[str] = []
    for st in statuses.values():
        mark = ""
        if st.kept_init:
            mark += KEPT_MARK
            notes.append(
                f"{KEPT_MARK} {st.label}: {st.kept_init} of {st.runs} runs kept {st.noun()}"
            )
        if st.diverged:
            mark += DIVERGED_MARK
            notes.append(
                f"{DIVERGED_MARK} {st.label}: training diverged in {st.diverged} of {st.runs} runs"
            )
        if mark:
            marks[st.label] = mark
    return marks, notes


def status_lines(statuses: Mapping[str, TrainingStatus]) -> list[str]:
    """One line per method with a selection record: how many runs kept their init."""
    lines = []
    for st in statuses.values():
        if not st.known:
            continue
        line = f"{st.label}: {st.kept_init} of {st.runs} runs kept {st.noun()}"
        if st.diverged:
            line += f"; {st.diverged} diverged"
        if st.known < st.runs:
            line += f" ({st.runs - st.known} runs without a selection record)"
        lines.append(line)
    return lines


MetricKey = tuple[str, str, str]  # (metric, ood set or "", score or "")


def metric_of(key: MetricKey) -> Callable[[Mapping[str, Any]], float | None]:
    """Getter of one metric from a record: ``("accuracy", "", "")`` or an OOD metric."""
    metric, ood, score = key
    if not ood:
        return lambda r: r.get(metric)
    return lambda r: r.get("detection", {}).get(ood, {}).get(score, {}).get(metric)


def compare(
    records: Sequence[Mapping[str, Any]], a: str, b: str, key: MetricKey, seed: int = 0
) -> PairedDiff | None:
    """Paired bootstrap of ``100 * (a - b)`` over shared (test_domain, seed); None if none."""
    get = metric_of(key)

    def by_pair(label: str) -> dict[tuple[Any, Any], float]:
        out = {}
        for r in records:
            v = get(r) if r["label"] == label else None
            if v is not None:
                out[(r.get("test_domain"), r.get("seed"))] = 100.0 * float(v)
        return out

    xa, xb = by_pair(a), by_pair(b)
    if not any(k in xb for k in xa):
        return None
    return paired_bootstrap(xa, xb, seed=seed)


def describe(subject: str, other: str, key: MetricKey, d: PairedDiff) -> str:
    """One verdict line with the interval, e.g. "... no significant difference"."""
    metric, ood, score = key
    what = "held-out accuracy" if not ood else f"{ood}, {score} {metric}"
    ci = f"{d.mean:+.1f} points, {100 * d.level:.0f}% CI [{d.low:+.1f}, {d.high:+.1f}], n={d.n}"
    if not d.significant:
        word = "no significant difference"
    else:
        good = (d.mean > 0) == higher_is_better(metric)
        word = "better" if good else "worse"
    return f"{what}: {subject} vs {other}: {ci}: {word}"


def best_baseline(records: Sequence[Mapping[str, Any]], exclude: Sequence[str] = ()) -> str | None:
    """The baseline with the best mean SOURCE-VALIDATION accuracy (``val_accuracy``).

    Candidates: every label not in ``exclude`` whose method is not CRoFT (``method ==
    "croft"``: both variants, ablations and any other CRoFT row are the subject's family,
    never its "best baseline"; a record without ``method`` counts by its label). Never
    chosen on test accuracy, which would pick the comparator on the test set. Ties go to
    the first label seen. None when no candidate has a validation accuracy.
    """

    def is_croft(r: Mapping[str, Any]) -> bool:
        return str(r.get("method") or r["label"]) == "croft"

    croft_labels = {r["label"] for r in records if is_croft(r)}
    labels = [
        x
        for x in dict.fromkeys(r["label"] for r in records)
        if x not in exclude and x not in croft_labels
    ]

    def mean_val(lab: str) -> float:
        vals = [r.get("val_accuracy") for r in records if r["label"] == lab]
        known = [float(v) for v in vals if v is not None]
        return sum(known) / len(known) if known else float("-inf")

    if not labels:
        return None
    best = max(labels, key=mean_val)
    return best if mean_val(best) > float("-inf") else None


def verdict_lines(
    records: Sequence[Mapping[str, Any]],
    subject: str | None = None,
    references: Sequence[str] | None = None,
    scores: Sequence[str] = ("energy",),
    metrics: Sequence[str] = ("auroc", "fpr95_id_pos"),
    ood_sets: Sequence[str] | None = None,
) -> list[str]:
    """The verdict: methods that did not train, then subject vs each reference per metric.

    ``subject`` defaults to ``croft`` (when present); ``references`` to zeroshot,
    ce_adapter and the best baseline (:func:`best_baseline`: by mean source-validation
    accuracy, CRoFT rows excluded), announced in a line of its own. ``ood_sets``: the open
    sets compared, in this order (default: every set in the records).
    """
    labels = list(dict.fromkeys(r["label"] for r in records))
    statuses = training_status(records)
    lines = [
        f"- did not train: {st.label} ({st.runs} of {st.runs} runs kept {st.noun()})"
        for st in statuses.values()
        if st.did_not_train
    ]
    subject = subject or ("croft" if "croft" in labels else None)
    if subject is None or subject not in labels:
        return lines
    if references is None:
        references = [x for x in ("zeroshot", "ce_adapter") if x in labels]
        best = best_baseline(records, exclude=[subject, *references])
        if best is not None:
            references.append(best)
            lines.append(
                f"- best baseline: {best} (by mean source-validation accuracy among the "
                "baselines; CRoFT rows are never candidates)"
            )
    oods = list(dict.fromkeys(o for r in records for o in r.get("detection", {})))
    if ood_sets is not None:
        oods = [o for o in ood_sets if o in oods]
    keys: list[MetricKey] = [("accuracy", "", "")]
    keys += [(m, o, s) for o in oods for s in scores for m in metrics]
    for other in references:
        note = " (did not train)" if statuses.get(other) and statuses[other].did_not_train else ""
        for key in keys:
            d = compare(records, subject, other, key)
            if d is not None:
                lines.append(f"- {describe(subject, other + note, key, d)}")
    return lines
