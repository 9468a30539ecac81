"""Paired comparisons of two methods over the same (held-out domain, seed) runs.

A comparison "A vs B" pairs each run of A with the run of B on the same held-out domain and
seed (the same training draw and test data), takes the per-pair difference ``a - b`` of one
metric, and bootstraps the mean difference for a confidence interval. An interval that
contains 0 means "no significant difference" at that level. Signs: the difference is in the
metric's own units; whether a positive difference is good depends on the metric
(``higher_is_better``).

Two bootstraps (:data:`BOOTSTRAPS`):

* ``cluster`` (the default of the report, the demo and :mod:`croft.verdict`):
  :func:`cluster_bootstrap`. Pairs that share a top factor (the world seed where there
  are several, else the held-out domain: its test images, its source split) are not
  independent; the clusters are resampled with replacement, then the pairs within each
  drawn cluster, and the percentile interval is widened for few clusters (the expanded
  percentile interval: by ``sqrt(C/(C-1)) t_{C-1} / z``, Hesterberg 2015), so that with
  C clusters it is about as wide as a t interval on the C cluster means.
* ``iid``: :func:`paired_bootstrap`, the pairs resampled as if independent (too narrow
  when clusters differ: tests/test_stats_cluster.py measures both).

Each interval carries a two-sided bootstrap p-value (the smallest ``1 - level`` at which
the interval excludes 0); :func:`holm` adjusts a family of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from croft.errors import CroftError

LOWER_IS_BETTER = frozenset({"fpr95_id_pos", "fpr95_ood_pos", "fpr95_paper"})
BOOTSTRAPS = ("cluster", "iid")
P_FLOOR = 1e-4  # bootstrap p-values are reported down to this


def higher_is_better(metric: str) -> bool:
    """False for the FPR-type metrics (lower is better), True for accuracy, AUROC, AUPR."""
    return metric not in LOWER_IS_BETTER


@dataclass(frozen=True)
class PairedDiff:
    """Mean of ``a - b`` over ``n`` pairs and its bootstrap interval ``[low, high]``.

    ``clusters``: the number of top-factor clusters the pairs fall in (0: not clustered,
    the ``iid`` bootstrap); ``p``: the two-sided bootstrap p-value (None: not computed)."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95
    clusters: int = 0
    p: float | None = None
    method: str = "iid"

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
            "clusters": self.clusters,
            "p": self.p,
            "method": self.method,
        }


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise CroftError(f"confidence level must lie in (0, 1), got {level}")


def _shared(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> list[Hashable]:
    keys = [k for k in a if k in b]
    if not keys:
        raise CroftError("paired comparison: the two methods share no (domain, seed) runs")
    return keys


def expansion(level: float, clusters: int) -> float:
    """The expanded percentile interval's widening for ``clusters`` clusters (>= 2):
    ``sqrt(C/(C-1)) t_{C-1}(q) / z(q)``, ``q = (1 + level) / 2``; 1 below 2 clusters."""
    if clusters < 2:
        return 1.0
    from scipy.special import ndtri, stdtrit  # scipy: a dependency of scikit-learn

    q = (1.0 + level) / 2.0
    return math.sqrt(clusters / (clusters - 1)) * float(stdtrit(clusters - 1, q) / ndtri(q))


def _interval(
    boots: np.ndarray, mean: float, level: float, clusters: int = 0
) -> tuple[float, float]:
    """Percentile interval of ``boots`` at ``level``, widened about ``mean`` by
    :func:`expansion` when ``clusters`` >= 2."""
    return _widened(np.sort(boots), mean, level, clusters)


def _widened(ordered: np.ndarray, mean: float, level: float, clusters: int) -> tuple[float, float]:
    """:func:`_interval` on sorted ``ordered`` (numpy's default linear quantiles)."""
    alpha = (1.0 - level) / 2.0
    pos = np.array([alpha, 1.0 - alpha]) * (len(ordered) - 1)
    low, high = np.interp(pos, np.arange(len(ordered)), ordered)
    f = expansion(level, clusters) if clusters >= 2 else 1.0
    return float(mean - f * (mean - low)), float(mean + f * (high - mean))


def boot_p(boots: np.ndarray, mean: float, clusters: int = 0) -> float:
    """Two-sided p-value: the smallest ``1 - level`` whose interval (:func:`_interval`)
    excludes 0, found by bisection; at least :data:`P_FLOOR`, 1 when the mean is 0."""
    if mean == 0.0:
        return 1.0
    ordered = np.sort(boots)

    def excludes(p: float) -> bool:
        low, high = _widened(ordered, mean, 1.0 - p, clusters)
        return low > 0 or high < 0

    if excludes(P_FLOOR):
        return P_FLOOR
    if not excludes(1.0 - 1e-9):
        return 1.0
    lo, hi = P_FLOOR, 1.0 - 1e-9  # excludes(hi) and not excludes(lo)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if excludes(mid) else (mid, hi)
    return hi


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (monotone, capped at 1)."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out = [1.0] * len(ps)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


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
    keys = _shared(a, b)
    _check_level(level)
    d = np.array([float(a[k]) - float(b[k]) for k in keys], dtype=float)
    mean = float(d.mean())
    if len(d) == 1:
        return PairedDiff(mean, mean, mean, 1, level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(axis=1)
    low, high = _interval(boots, mean, level)
    return PairedDiff(mean, low, high, len(d), level, p=boot_p(boots, mean))


def two_stage_means(
    padded: np.ndarray, sizes: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_boot`` two-stage bootstrap means of clustered values, vectorised.

    ``padded``: ``(C, M)`` values, cluster ``c``'s in ``padded[c, :sizes[c]]``. Each
    replicate draws C clusters with replacement, then ``sizes[k]`` values with replacement
    within each drawn cluster ``k``, and averages every drawn value. Shape ``(n_boot,)``."""
    n_c, width = padded.shape
    out = np.empty(n_boot)
    step = max(1, 2_000_000 // max(1, n_c * width))  # bound memory per chunk
    cols = np.arange(width)
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        k = rng.integers(0, n_c, size=(b, n_c))
        nk = sizes[k]
        j = (rng.random((b, n_c, width)) * nk[..., None]).astype(np.int64)
        vals = np.where(cols < nk[..., None], padded[k[..., None], j], 0.0)
        out[start : start + b] = vals.sum(axis=(1, 2)) / nk.sum(axis=1)
    return out


def cluster_bootstrap(
    a: Mapping[Hashable, float],
    b: Mapping[Hashable, float],
    cluster: Callable[[Hashable], Hashable],
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedDiff:
    """Two-stage (cluster, then pair) bootstrap interval of ``mean(a[k] - b[k])``.

    ``cluster(key)`` names the key's top-factor cluster (e.g. ``key[0]``, the held-out
    domain of ``(domain, seed)``). The interval is the expanded percentile interval
    (module doc); one cluster gives the within-cluster bootstrap, unexpanded, and
    ``clusters == 1``. Deterministic for a given ``seed``.
    """
    keys = _shared(a, b)
    _check_level(level)
    groups: dict[Hashable, list[float]] = {}
    for k in keys:
        groups.setdefault(cluster(k), []).append(float(a[k]) - float(b[k]))
    sizes = np.array([len(v) for v in groups.values()], dtype=np.int64)
    padded = np.zeros((len(groups), int(sizes.max())))
    for i, v in enumerate(groups.values()):
        padded[i, : len(v)] = v
    mean = float(padded.sum() / sizes.sum())
    n, n_c = int(sizes.sum()), len(groups)
    if n == 1:
        return PairedDiff(mean, mean, mean, 1, level, 1, None, "cluster")
    boots = two_stage_means(padded, sizes, n_boot, np.random.default_rng(seed))
    low, high = _interval(boots, mean, level, n_c)
    return PairedDiff(mean, low, high, n, level, n_c, boot_p(boots, mean, n_c), "cluster")
