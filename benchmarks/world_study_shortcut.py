"""The world study's exploratory shortcut table (benchmarks/world_study.py; outside the
analysis plan of docs/world-study.md, added after the v3 study had started and before any
of its results were read)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Pair = tuple[str, int]


def by_pair(
    records: Sequence[Mapping[str, Any]], label: str, metric: Callable[[Mapping[str, Any]], float]
) -> dict[Pair, float]:
    return {(r["test_domain"], r["seed"]): metric(r) for r in records if r["label"] == label}


def shortcut_following(
    chosen: Sequence[Mapping[str, Any]], run_out: Path, order: Sequence[str]
) -> str:
    """Exploratory (not in the analysis plan): on the held-out style's test images whose
    colour is another class's shortcut colour (colours are uniform there, so the cue is
    worthless), the share predicted as that class. The reference is zero-shot's row (each
    shortcut colour is another class's pre-training colour, so a uniform guess, 1/7, is
    not it)."""
    from croft.stats import paired_bootstrap

    root = Path(json.loads((run_out / "config.resolved.json").read_text())["data"]["root"])
    man = json.loads((root / "world.json").read_text())
    short = man["layout"].get("shortcut", {})
    if short.get("cue") != "colour":
        return "(the world has no colour shortcut)"
    colours = json.loads((root / "colours.json").read_text())
    owner = {colour: c for c, colour in short["values"].items()}
    classes = list(man["id_classes"])
    cue: dict[str, np.ndarray] = {}
    for h in sorted({r["test_domain"] for r in chosen}):
        test = json.loads((root / f"test_on_{h}.json").read_text())["test"]
        cols = [owner.get(colours["images/" + rel], name) for rel, _, name in test]
        cue[h] = np.array(
            [
                classes.index(c) if c != name else -1
                for c, (_, _, name) in zip(cols, test, strict=True)
            ]
        )

    labels = {
        h: [classes.index(name) for _, _, name in json.loads(
            (root / f"test_on_{h}.json").read_text())["test"]]
        for h in cue
    }  # fmt: skip

    def follow(r: Mapping[str, Any]) -> float:
        c = cue[r["test_domain"]]
        pred = r["_scores"]["id/pred"]
        if r["_scores"]["id/labels"].tolist() != labels[r["test_domain"]]:
            raise SystemExit(f"{r['run_dir']}: test predictions not in the split file's order")
        return 100.0 * float(np.mean(pred[c >= 0] == c[c >= 0]))

    n = int(np.mean([(c >= 0).sum() for c in cue.values()]))
    lines = [
        f"Test images per style whose colour is another class's shortcut colour: about {n}.",
        "",
        "| method | predicted as the colour's class (%) |",
        "|---|---|",
    ]
    for lab in order:
        vals = list(by_pair(chosen, lab, follow).values())
        lines.append(f"| {lab} | {np.mean(vals):.1f} |")
    lines += ["", "| subject − reference | mean diff | 95 % CI |", "|---|---|---|"]
    for a, b in (
        ("ce_adapter", "zeroshot"),
        ("croft", "ce_adapter"),
        ("croft_paper", "ce_adapter"),
    ):
        d = paired_bootstrap(by_pair(chosen, a, follow), by_pair(chosen, b, follow))
        lines.append(f"| {a} − {b} | {d.mean:+.1f} | [{d.low:+.1f}, {d.high:+.1f}] |")
    return "\n".join(lines)
