"""Score lists as configs and callers write them: ``[energy, {name: knn, k: 50}]``.

An entry is a registered score's name, or a mapping ``{name: SCORE, PARAM: VALUE, …,
label: COLUMN}`` (``label``, default the name, names the score's column, so one score can
be listed twice with other parameters). :func:`score_specs` parses and checks a list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from croft.errors import CroftError
from croft.scores import SCORES, Detector

__all__ = ["ScoreSpec", "score_specs"]


@dataclass(frozen=True)
class ScoreSpec:
    """One entry of a score list: the registered ``name``, its ``params`` and the column
    ``label`` (default the name)."""

    name: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "label", self.label or self.name)

    def detector(self) -> Detector:
        return SCORES.get(self.name).detector(self.label, **self.params)

    def to_json(self) -> str | dict[str, Any]:
        """The entry as a config writes it: a bare name when it has no parameters."""
        if not self.params and self.label == self.name:
            return self.name
        out: dict[str, Any] = {"name": self.name, **self.params}
        if self.label != self.name:
            out["label"] = self.label
        return out


def score_specs(
    entries: Iterable[str | Mapping[str, Any] | ScoreSpec],
    params: Mapping[str, Mapping[str, Any]] | None = None,
    where: str = "scores",
) -> list[ScoreSpec]:
    """Parse a score list: names (``energy``), mappings (``{name: knn, k: 50, label: knn50}``)
    or :class:`ScoreSpec`\\ s. ``params`` (the older ``{name: {param: value}}`` form) adds
    parameters to the entries of that name. Unknown names and parameters, and two entries
    with one label, are one-line errors."""
    out: list[ScoreSpec] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, ScoreSpec):
            spec = entry
        elif isinstance(entry, str):
            spec = ScoreSpec(entry)
        elif isinstance(entry, Mapping):
            body = dict(entry)
            name = body.pop("name", None)
            if not isinstance(name, str):
                raise CroftError(f"{where}[{i}]: a mapping entry needs name: SCORE, got {entry!r}")
            label = body.pop("label", "")
            if not isinstance(label, str):
                raise CroftError(f"{where}[{i}]: label must be a string, got {label!r}")
            spec = ScoreSpec(name, body, label)
        else:
            raise CroftError(
                f"{where}[{i}]: {entry!r}: write a score name or {{name: SCORE, PARAM: VALUE}}"
            )
        if spec.name not in SCORES:
            raise CroftError(
                f"{where}: unknown score {spec.name!r}; known: {', '.join(SCORES.names())}"
            )
        extra = dict((params or {}).get(spec.name, {}))
        spec = ScoreSpec(spec.name, {**extra, **spec.params}, spec.label)
        try:
            SCORES.get(spec.name).check_params(spec.params)
        except CroftError as exc:
            raise CroftError(f"{where}: {exc}") from None
        out.append(spec)
    stray = sorted(set(params or {}) - {s.name for s in out})
    if stray:
        raise CroftError(
            f"{where}: parameters given for {', '.join(map(repr, stray))}, which is not "
            f"among the requested scores {[s.label for s in out]}; fix the name or request it"
        )
    labels = [s.label for s in out]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise CroftError(
            f"{where}: {twice[0]!r} is listed twice; give each entry its own label: "
            f"{{name: {twice[0]}, ..., label: {twice[0]}_2}}"
        )
    return out
