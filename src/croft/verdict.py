"""What a set of runs says: paired method comparisons, the best baseline, the verdict.

Which rows trained (the per-run ``selection`` record: ``TrainingStatus``,
``training_status``, ``status_marks``, ``status_lines``) lives in
:mod:`croft.train_status` and is re-exported here.

Comparisons pair runs on ``(world_seed, test_domain, seed)`` (a record without
``world_seed`` has None there); differences are in percentage points, subject minus
reference. The default bootstrap is the cluster bootstrap (:func:`croft.stats.
cluster_bootstrap`) over the top factor: the world seed where the records hold more than
one, else the held-out domain; ``bootstrap="iid"`` resamples pairs as if independent.
Every comparison of a verdict is one of a family: each line carries its Holm-adjusted
p-value over the family, the family's size is stated, and a primary comparison (the
config's ``primary:``) is named first. Verdicts on fewer than :data:`FEW_PAIRS` pairs or
:data:`FEW_CLUSTERS` clusters carry a caution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from croft.errors import CroftError
from croft.stats import (
    BOOTSTRAPS,
    PairedDiff,
    cluster_bootstrap,
    higher_is_better,
    holm,
    paired_bootstrap,
)
from croft.train_status import DIVERGED_MARK as DIVERGED_MARK
from croft.train_status import KEPT_MARK as KEPT_MARK
from croft.train_status import PROMPT_LEARNERS as PROMPT_LEARNERS
from croft.train_status import TrainingStatus as TrainingStatus
from croft.train_status import status_lines as status_lines
from croft.train_status import status_marks as status_marks
from croft.train_status import training_status

FEW_PAIRS, FEW_CLUSTERS = 10, 4  # below either, a verdict line carries a caution

MetricKey = tuple[str, str, str]  # (metric, ood set or "", score or "")
PairKey = tuple[Any, Any, Any]  # (world_seed, test_domain, seed)


def metric_of(key: MetricKey) -> Callable[[Mapping[str, Any]], float | None]:
    """Getter of one metric from a record: ``("accuracy", "", "")`` or an OOD metric."""
    metric, ood, score = key
    if not ood:
        return lambda r: r.get(metric)
    return lambda r: r.get("detection", {}).get(ood, {}).get(score, {}).get(metric)


def pair_key(r: Mapping[str, Any]) -> PairKey:
    """What pairs two runs: ``(world_seed, test_domain, seed)``."""
    return (r.get("world_seed"), r.get("test_domain"), r.get("seed"))


def cluster_factor(records: Sequence[Mapping[str, Any]]) -> tuple[str, Callable[[Any], Any]]:
    """The top factor the cluster bootstrap resamples, as ``(plural name, key -> cluster)``:
    the world seed where the records hold more than one, else the held-out domain."""
    if len({r.get("world_seed") for r in records}) > 1:
        return "world seeds", lambda k: k[0]
    return "held-out domains", lambda k: k[1]


def compare(
    records: Sequence[Mapping[str, Any]],
    a: str,
    b: str,
    key: MetricKey,
    seed: int = 0,
    bootstrap: str = "cluster",
) -> PairedDiff | None:
    """Paired bootstrap of ``100 * (a - b)`` over shared pairs (:func:`pair_key`); None if
    none. ``bootstrap``: ``cluster`` (default, :func:`cluster_factor`) or ``iid``."""
    if bootstrap not in BOOTSTRAPS:
        raise CroftError(f"bootstrap {bootstrap!r}: use one of {', '.join(BOOTSTRAPS)}")
    get = metric_of(key)

    def by_pair(label: str) -> dict[PairKey, float]:
        out = {}
        for r in records:
            v = get(r) if r["label"] == label else None
            if v is not None:
                out[pair_key(r)] = 100.0 * float(v)
        return out

    xa, xb = by_pair(a), by_pair(b)
    if not any(k in xb for k in xa):
        return None
    if bootstrap == "iid":
        return paired_bootstrap(xa, xb, seed=seed)
    return cluster_bootstrap(xa, xb, cluster_factor(records)[1], seed=seed)


def caution(d: PairedDiff) -> str:
    """Why a verdict rests on too few runs ("" when it does not)."""
    few = []
    if d.n < FEW_PAIRS:
        few.append(f"{d.n} pairs")
    if 0 < d.clusters < FEW_CLUSTERS:
        few.append(f"{d.clusters} clusters")
    return f"caution: only {' in '.join(few)}, the interval is rough" if few else ""


def _p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def what_of(key: MetricKey) -> str:
    """``held-out accuracy`` or ``OOD, score metric``."""
    metric, ood, score = key
    return "held-out accuracy" if not ood else f"{ood}, {score} {metric}"


def describe(
    subject: str,
    other: str,
    key: MetricKey,
    d: PairedDiff,
    holm_p: float | None = None,
    factor: str = "held-out domains",
) -> str:
    """One verdict line with the interval, its clusters, a caution at small n and the
    Holm-adjusted p, e.g. "... n=20 in 4 held-out domains, Holm p=0.210: no significant
    difference"."""
    metric = key[0]
    ci = f"{d.mean:+.1f} points, {100 * d.level:.0f}% CI [{d.low:+.1f}, {d.high:+.1f}], n={d.n}"
    if d.clusters:
        ci += f" in {d.clusters} {factor}"
    warn = caution(d)
    if warn:
        ci += f" ({warn})"
    if holm_p is not None:
        ci += f", Holm {_p_text(holm_p)}"
    if not d.significant:
        word = "no significant difference"
    else:
        good = (d.mean > 0) == higher_is_better(metric)
        word = "better" if good else "worse"
        if holm_p is not None and holm_p >= 1.0 - d.level:
            word += " (n.s. after Holm)"
    return f"{what_of(key)}: {subject} vs {other}: {ci}: {word}"


def _croft_labels(records: Sequence[Mapping[str, Any]]) -> set[str]:
    """Labels of the CRoFT family (``method == "croft"``; without ``method``: the label)."""
    return {r["label"] for r in records if str(r.get("method") or r["label"]) == "croft"}


def _baselines(records: Sequence[Mapping[str, Any]], exclude: Sequence[str] = ()) -> list[str]:
    croft = _croft_labels(records)
    return [
        x for x in dict.fromkeys(r["label"] for r in records) if x not in exclude and x not in croft
    ]


def _mean_val(records: Sequence[Mapping[str, Any]], lab: str) -> float:
    vals = [r.get("val_accuracy") for r in records if r["label"] == lab]
    known = [float(v) for v in vals if v is not None]
    return sum(known) / len(known) if known else float("-inf")


def best_baseline(records: Sequence[Mapping[str, Any]], exclude: Sequence[str] = ()) -> str | None:
    """The baseline with the best mean SOURCE-VALIDATION accuracy (``val_accuracy``).

    Candidates: every label not in ``exclude`` whose method is not CRoFT (``method ==
    "croft"``: both variants, ablations and any other CRoFT row are the subject's family,
    never its "best baseline"; a record without ``method`` counts by its label). Never
    chosen on test accuracy, which would pick the comparator on the test set. Ties go to
    the first label seen. None when no candidate has a validation accuracy.
    """
    labels = _baselines(records, exclude)
    if not labels:
        return None
    best = max(labels, key=lambda lab: _mean_val(records, lab))
    return best if _mean_val(records, best) > float("-inf") else None


def baseline_ties(
    records: Sequence[Mapping[str, Any]],
    best: str,
    exclude: Sequence[str] = (),
    bootstrap: str = "cluster",
) -> list[tuple[str, PairedDiff]]:
    """The baselines within the validation noise of ``best``: those whose paired
    source-validation difference ``best - other`` (points) has a mean below its interval's
    half-width, with that difference."""
    out = []
    for other in _baselines(records, [*exclude, best]):
        d = compare(records, best, other, ("val_accuracy", "", ""), bootstrap=bootstrap)
        if d is not None and d.n >= 2 and d.mean < (d.high - d.low) / 2.0:
            out.append((other, d))
    return out


def best_baseline_line(
    records: Sequence[Mapping[str, Any]], best: str, exclude: Sequence[str] = ()
) -> str:
    """The "best baseline" line; when the pick is a tie on validation it says so and
    names every tied baseline (the verdict compares CRoFT with each of them)."""
    line = (
        f"- best baseline: {best} (by mean source-validation accuracy among the "
        "baselines; CRoFT rows are never candidates)"
    )
    ties = baseline_ties(records, best, exclude)
    if not ties:
        return line
    tied = "; ".join(
        f"{o} (+{d.mean:.2f} points, below the half-width {(d.high - d.low) / 2:.2f} of "
        f"their paired {100 * d.level:.0f}% validation interval)"
        for o, d in ties
    )
    names = ", ".join([best, *(o for o, _ in ties)])
    return (
        f"{line}, a tie within the validation noise: its margin over {tied}; no single "
        f"best baseline, so read the verdict against each of {names}"
    )


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of a verdict and its Holm-adjusted p over the family."""

    subject: str
    other: str
    key: MetricKey
    diff: PairedDiff
    holm_p: float | None = None
    note: str = ""  # e.g. " (did not train)", appended to the reference's name

    @property
    def label(self) -> str:
        return f"{self.subject} vs {self.other}"


@dataclass
class Verdict:
    """The verdict's lines, its comparisons (in order), the primary (or None) and the
    cluster factor's name."""

    lines: list[str]
    comparisons: list[Comparison]
    primary: Comparison | None
    factor: str
    bootstrap: str

    def within_noise(self) -> list[Comparison]:
        """Comparisons whose interval contains 0."""
        return [c for c in self.comparisons if not c.diff.significant]


def primary_key(primary: Mapping[str, Any] | None) -> tuple[str, str, MetricKey] | None:
    """``(a, b, metric key)`` of a config's ``primary: {a, b, metric[, ood, score]}``."""
    if not primary:
        return None
    key = (str(primary["metric"]), str(primary.get("ood") or ""), "")
    if key[1]:
        key = (key[0], key[1], str(primary.get("score") or "energy"))
    return str(primary["a"]), str(primary["b"]), key


def verdict(
    records: Sequence[Mapping[str, Any]],
    subject: str | Sequence[str] | None = None,
    references: Sequence[str] | None = None,
    scores: Sequence[str] = ("energy",),
    metrics: Sequence[str] = ("auroc", "fpr95_id_pos"),
    ood_sets: Sequence[str] | None = None,
    *,
    bootstrap: str = "cluster",
    primary: Mapping[str, Any] | None = None,
) -> Verdict:
    """The verdict: methods that did not train, the best-baseline line, then each subject
    vs each reference per metric.

    ``subject``: one label or several (default ``croft`` when present, else the primary
    comparison's ``a``); ``references``:
    default zero-shot, the CE adapter, then every other baseline present (non-CRoFT rows,
    first-seen order). The best baseline (:func:`best_baseline`) is announced in a line of
    its own, which says when the pick is a tie (:func:`best_baseline_line`). ``ood_sets``:
    the open sets compared, in this order (default: every set in the records).
    ``primary``: the config's ``primary:`` (named first, and in the family's header line).
    """
    labels = list(dict.fromkeys(r["label"] for r in records))
    statuses = training_status(records)
    lines = [
        f"- did not train: {st.label} ({st.runs} of {st.runs} runs kept {st.noun()})"
        for st in statuses.values()
        if st.did_not_train
    ]
    factor = cluster_factor(records)[0] if bootstrap == "cluster" else ""
    if subject is None:
        subjects = ["croft"] if "croft" in labels else [str((primary or {}).get("a"))]
    else:
        subjects = [subject] if isinstance(subject, str) else list(subject)
    subjects = [x for x in subjects if x in labels]
    if not subjects:
        return Verdict(lines, [], None, factor, bootstrap)
    if references is None:
        first = [x for x in ("zeroshot", "ce_adapter") if x in labels]
        references = [*first, *_baselines(records, [*subjects, *first])]
        best = best_baseline(records, exclude=[*subjects, *first])
        if best is not None:
            lines.append(best_baseline_line(records, best, exclude=[*subjects, *first]))
    oods = list(dict.fromkeys(o for r in records for o in r.get("detection", {})))
    if ood_sets is not None:
        oods = [o for o in ood_sets if o in oods]
    keys: list[MetricKey] = [("accuracy", "", "")]
    keys += [(m, o, s) for o in oods for s in scores for m in metrics]
    comps = []
    for subj in subjects:
        for other in references:
            if other == subj:
                continue
            st = statuses.get(other)
            note = " (did not train)" if st and st.did_not_train else ""
            for key in keys:
                d = compare(records, subj, other, key, bootstrap=bootstrap)
                if d is not None:
                    comps.append(Comparison(subj, other, key, d, note=note))
    adjusted = holm([1.0 if c.diff.p is None else c.diff.p for c in comps])
    comps = [dataclasses.replace(c, holm_p=p) for c, p in zip(comps, adjusted, strict=True)]
    want = primary_key(primary)
    first_c = next((c for c in comps if (c.subject, c.other, c.key) == want), None)
    how = (
        f"cluster bootstrap: {factor} resampled, then pairs within"
        if bootstrap == "cluster"
        else "i.i.d. pair bootstrap"
    )
    if first_c is not None:
        named = f"primary: {first_c.label}, {what_of(first_c.key)}"
    elif want is not None:
        named = f"the primary ({want[0]} vs {want[1]}, {what_of(want[2])}) has no shared runs"
    else:
        named = "no primary comparison named (the config's primary: key names one)"
    lines.append(
        f"- {len(comps)} comparisons ({how}; 95% intervals; Holm-adjusted p over all "
        f"{len(comps)}); {named}"
    )
    for c in ([first_c] if first_c else []) + [c for c in comps if c is not first_c]:
        text = describe(c.subject, c.other + c.note, c.key, c.diff, c.holm_p, factor)
        lines.append(f"- {'primary: ' if c is first_c else ''}{text}")
    return Verdict(lines, comps, first_c, factor, bootstrap)


def verdict_lines(
    records: Sequence[Mapping[str, Any]],
    subject: str | Sequence[str] | None = None,
    references: Sequence[str] | None = None,
    scores: Sequence[str] = ("energy",),
    metrics: Sequence[str] = ("auroc", "fpr95_id_pos"),
    ood_sets: Sequence[str] | None = None,
    *,
    bootstrap: str = "cluster",
    primary: Mapping[str, Any] | None = None,
) -> list[str]:
    """The lines of :func:`verdict` (same arguments)."""
    return verdict(
        records, subject, references, scores, metrics, ood_sets,
        bootstrap=bootstrap, primary=primary,
    ).lines  # fmt: skip
