"""The cluster (two-stage) bootstrap and Holm's adjustment (croft.stats) on known answers.

The coverage design: C clusters (held-out domains) of m pairs each, the per-pair difference
``mu + u_c + e_ci`` with a between-cluster effect ``u_c ~ N(0, sd_b^2)`` and within-cluster
noise ``e_ci ~ N(0, sd_w^2)``; the true mean difference is ``mu``. A 95% interval should
cover ``mu`` in about 95% of replications; the i.i.d. pair bootstrap, which treats the
C * m pairs as independent, covers it far less often on the same draws."""

from __future__ import annotations

import numpy as np
import pytest

from croft.errors import CroftError
from croft.stats import cluster_bootstrap, expansion, holm, paired_bootstrap

MU, SD_B, SD_W = 1.0, 1.0, 1.0


def _draw(rng: np.random.Generator, n_clusters: int, m: int) -> dict[tuple[int, int], float]:
    d = MU + rng.normal(0, SD_B, (n_clusters, 1)) + rng.normal(0, SD_W, (n_clusters, m))
    return {(c, i): float(d[c, i]) for c in range(n_clusters) for i in range(m)}


def _coverage(n_clusters: int, m: int, reps: int = 500) -> tuple[float, float]:
    rng = np.random.default_rng(2024)
    hit_cluster = hit_iid = 0
    for r in range(reps):
        a = _draw(rng, n_clusters, m)
        b = dict.fromkeys(a, 0.0)
        c = cluster_bootstrap(a, b, lambda k: k[0], n_boot=1000, seed=r)
        i = paired_bootstrap(a, b, n_boot=1000, seed=r)
        hit_cluster += c.low <= MU <= c.high
        hit_iid += i.low <= MU <= i.high
    return hit_cluster / reps, hit_iid / reps


@pytest.mark.parametrize("n_clusters", [12, 4])
def test_cluster_interval_covers_and_iid_under_covers(n_clusters: int) -> None:
    """12 clusters (a study over worlds/styles) and 4 (the demo's held-out styles)."""
    cover, cover_iid = _coverage(n_clusters, 5)
    assert 0.92 <= cover <= 0.98, cover
    assert cover_iid < 0.85, cover_iid  # about 0.7: pairs in a cluster are not independent


def test_one_cluster_per_pair_is_close_to_the_iid_bootstrap() -> None:
    rng = np.random.default_rng(1)
    a = {k: float(rng.normal(1.0, 1.0)) for k in range(40)}
    b = dict.fromkeys(a, 0.0)
    c = cluster_bootstrap(a, b, lambda k: k)  # every pair its own cluster
    i = paired_bootstrap(a, b)
    assert c.clusters == 40 and c.n == i.n == 40 and c.mean == pytest.approx(i.mean)
    # within-cluster resampling of one pair is a no-op; the expansion for C = 40 is ~2.6%
    assert (c.high - c.low) / (i.high - i.low) == pytest.approx(expansion(0.95, 40), rel=0.05)


def test_expansion_known_values() -> None:
    """sqrt(C/(C-1)) t_{C-1}(0.975) / 1.95996: t_3 = 3.18245, t_19 = 2.09302."""
    assert expansion(0.95, 4) == pytest.approx((4 / 3) ** 0.5 * 3.18245 / 1.959964, rel=1e-4)
    assert expansion(0.95, 20) == pytest.approx((20 / 19) ** 0.5 * 2.09302 / 1.959964, rel=1e-4)
    assert expansion(0.95, 1) == 1.0


def test_constant_difference_is_a_point_and_p_is_floored() -> None:
    a = {(d, s): 0.5 + 0.01 * s for d in "abc" for s in (1, 2, 3)}
    b = {k: v - 0.2 for k, v in a.items()}
    d = cluster_bootstrap(a, b, lambda k: k[0])
    assert (d.n, d.clusters, d.method) == (9, 3, "cluster")
    assert d.low == pytest.approx(0.2) and d.high == pytest.approx(0.2) and d.significant
    assert d.p is not None and d.p <= 1e-3


def test_p_value_agrees_with_the_interval_and_is_deterministic() -> None:
    rng = np.random.default_rng(5)
    a = _draw(rng, 6, 5)
    b = {k: v - 0.0 for k, v in dict.fromkeys(a, MU).items()}  # true difference 0 per cluster
    d1 = cluster_bootstrap(a, b, lambda k: k[0], seed=7)
    d2 = cluster_bootstrap(a, b, lambda k: k[0], seed=7)
    assert d1 == d2 and d1.p is not None
    assert (d1.p < 0.05) == d1.significant
    narrow = cluster_bootstrap(a, b, lambda k: k[0], seed=7, level=0.5)
    assert narrow.high - narrow.low < d1.high - d1.low


def test_errors_and_one_pair() -> None:
    with pytest.raises(CroftError, match="share no"):
        cluster_bootstrap({1: 1.0}, {2: 1.0}, lambda k: k)
    with pytest.raises(CroftError, match="level"):
        cluster_bootstrap({1: 1.0, 2: 0.0}, {1: 0.0, 2: 0.0}, lambda k: k, level=0.0)
    d = cluster_bootstrap({1: 1.0, 2: 2.0}, {2: 1.0, 3: 0.0}, lambda k: k)
    assert d.n == 1 and d.low == d.high == 1.0 and not d.significant


def test_holm_known_answer() -> None:
    """Holm on (0.01, 0.04, 0.03, 0.005): sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> 0.02,
    0.03, 0.06, then max(0.06, 0.04) = 0.06; returned in the input order."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5*2, then max(1, 0.9)
    assert holm([]) == []
