"""Which rows trained: per-method counts from each run's ``selection`` record.

Reads ``metrics.json["selection"]`` (``kept_init``, ``diverged``, ...). Runs without it
(older runs) count as unknown, never as trained or untrained. :func:`training_status`
counts per label; :func:`status_marks` gives the table markers (``†`` kept the
initialisation, ``‡`` diverged) and their notes; :func:`status_lines` one line per method.
Re-exported by :mod:`croft.verdict`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DIVERGED_MARK",
    "KEPT_MARK",
    "PROMPT_LEARNERS",
    "TrainingStatus",
    "status_lines",
    "status_marks",
    "training_status",
]

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
