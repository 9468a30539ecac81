"""Paired comparisons of two methods over the same (held-out domain, seed) runs.

A comparison "A vs B" pairs each run of A with the run of B on the same held-out domain and
seed (the same training draw and test data), takes the per-pair difference ``a - b`` of one
metric, and resamples the pairs with replacement (percentile bootstrap) for a confidence
interval of the mean difference. An interval that contains 0 means "no significant
difference" at that level. Signs: the difference is in the metric's own units; whether a
positive difference is good depends on the metric (``higher_is_better``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np

from croft.errors import CroftError

LOWER_IS_BETTER = frozenset({"fpr95_id_pos", "fpr95_ood_pos", "fpr95_paper"})


def higher_is_better(metric: str) -> bool:
    """False for the FPR-type metrics (lower is better), True for accuracy, AUROC, AUPR."""
    return metric not in LOWER_IS_BETTER


@dataclass(frozen=True)
class PairedDiff:
    """Mean of ``a - b`` over ``n`` pairs and its bootstrap interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0 (and there are at least 2 pairs)."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "level": self.level,
            "significant": self.significant,
        }


def paired_bootstrap(
    a: Mapping[Hashable, float],
    b: Mapping[Hashable, float],
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedDiff:
    """Percentile-bootstrap interval of ``mean(a[k] - b[k])`` over the keys both share.

    ``a`` and ``b`` map a pair key (e.g. ``(held_out_domain, seed)``) to one number each.
    Deterministic for a given ``seed``. One pair gives a zero-width interval (n = 1, never
    significant).
    """
    keys = [k for k in a if k in b]
    if not keys:
        raise CroftError("paired comparison: the two methods share no (domain, seed) runs")
    if not 0.0 < level < 1.0:
        raise CroftError(f"confidence level must lie in (0, 1), got {level}")
    d = np.array([float(a[k]) - float(b[k]) for k in keys], dtype=float)
    mean = float(d.mean())
    if len(d) == 1:
        return PairedDiff(mean, mean, mean, 1, level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boots, [alpha, 1.0 - alpha])
    return PairedDiff(mean, float(low), float(high), len(d), level)
