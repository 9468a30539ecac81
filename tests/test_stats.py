"""Paired bootstrap intervals (croft.stats) on known answers."""

from __future__ import annotations

import numpy as np
import pytest

from croft.errors import CroftError
from croft.stats import higher_is_better, paired_bootstrap


def test_constant_difference_gives_a_point_interval() -> None:
    a = {(d, s): 0.5 + 0.01 * s for d in "ab" for s in (1, 2, 3)}
    b = {k: v - 0.2 for k, v in a.items()}
    d = paired_bootstrap(a, b)
    assert d.n == 6 and d.mean == pytest.approx(0.2)
    assert d.low == pytest.approx(0.2) and d.high == pytest.approx(0.2) and d.significant


def test_pairing_removes_shared_noise() -> None:
    """Large per-pair offsets common to both methods do not widen the interval."""
    rng = np.random.default_rng(0)
    keys = [(d, s) for d in range(4) for s in range(5)]
    base = {k: float(rng.normal(0, 10)) for k in keys}
    a = {k: base[k] + 1.0 + float(rng.normal(0, 0.1)) for k in keys}
    d = paired_bootstrap(a, base)
    assert 0.8 < d.low < d.mean < d.high < 1.2 and d.significant


def test_symmetric_differences_span_zero_and_are_deterministic() -> None:
    keys = list(range(10))
    a = {k: float(k % 2) for k in keys}  # differences +1, -1 alternating vs zeros
    b = {k: 0.5 for k in keys}
    d1, d2 = paired_bootstrap(a, b, seed=3), paired_bootstrap(a, b, seed=3)
    assert d1 == d2 and d1.low < 0 < d1.high and not d1.significant
    assert d1.mean == pytest.approx(0.0)


def test_unpaired_keys_are_dropped_and_errors() -> None:
    d = paired_bootstrap({1: 1.0, 2: 2.0}, {2: 1.0, 3: 0.0})
    assert d.n == 1 and d.mean == 1.0 and d.low == d.high == 1.0 and not d.significant
    with pytest.raises(CroftError, match="share no"):
        paired_bootstrap({1: 1.0}, {2: 1.0})
    with pytest.raises(CroftError, match="level"):
        paired_bootstrap({1: 1.0, 2: 0.0}, {1: 0.0, 2: 0.0}, level=1.5)


def test_metric_direction() -> None:
    assert higher_is_better("auroc") and higher_is_better("accuracy")
    assert not higher_is_better("fpr95_id_pos")
