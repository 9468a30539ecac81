"""Matrix-free Hessian estimators on Hessian-vector products (HVPs).

Every function takes ``hvp(v) -> H v`` for flat vectors ``v`` of length ``dim`` and never
forms ``H``; memory is a few vectors of length ``dim``. Probes come from a seeded
``torch.Generator``, so a result is reproducible from ``(seed, probes)``.

* :func:`hutchinson_trace`: ``tr H ≈ mean_k v_kᵀ H v_k`` with Rademacher ``v_k`` (exact
  for a diagonal ``H``), with the standard error of that mean.
* :func:`top_eigenvalue`: power iteration; returns the eigenvalue of LARGEST MAGNITUDE,
  signed (a Rayleigh quotient), so a dominant negative curvature shows as negative.
* :func:`shared_probe_stats`: several operators on the SAME probes: each one's trace,
  squared Frobenius norm ``‖H‖_F² = E‖H v‖²``, and for every pair ``(a, b)`` the cosine
  ``cos(H_a v, H_b v)`` (mean and standard deviation over probes) and the normalised
  Frobenius distance ``2‖H_a − H_b‖_F / (‖H_a‖_F + ‖H_b‖_F)`` in ``[0, 2]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

Hvp = Callable[[torch.Tensor], torch.Tensor]


def rademacher(dim: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """A vector of ``dim`` independent ±1 entries (CPU, then moved by the caller)."""
    return (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).to(dtype)


def _mean_se(values: list[float]) -> tuple[float, float]:
    k = len(values)
    mean = sum(values) / k
    if k < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (k - 1)
    return mean, math.sqrt(var / k)


def hutchinson_trace(
    hvp: Hvp,
    dim: int,
    probes: int,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """``(estimate, standard error)`` of ``tr H`` from ``probes`` Rademacher probes."""
    gen = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(probes):
        v = rademacher(dim, gen, dtype).to(device)
        vals.append(float(v @ hvp(v)))
    return _mean_se(vals)


def top_eigenvalue(
    hvp: Hvp,
    dim: int,
    iters: int = 100,
    tol: float = 1e-6,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> tuple[float, int]:
    """``(λ, iterations used)``: the largest-magnitude eigenvalue of ``H`` (signed).

    Stops when the Rayleigh quotient changes by at most ``tol·|λ|``. A zero operator
    returns ``(0.0, k)``.
    """
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(dim, generator=gen, dtype=dtype).to(device)
    v = v / v.norm()
    lam = 0.0
    for k in range(1, iters + 1):
        hv = hvp(v)
        new = float(v @ hv)
        norm = float(hv.norm())
        if norm == 0.0:
            return 0.0, k
        v = hv / norm
        if k > 1 and abs(new - lam) <= tol * abs(new):
            return new, k
        lam = new
    return lam, iters


@dataclass
class ProbeStats:
    """Results of :func:`shared_probe_stats` (keys are operator names)."""

    trace: dict[str, tuple[float, float]] = field(default_factory=dict)  # (mean, se)
    frob_sq: dict[str, float] = field(default_factory=dict)  # estimate of ‖H‖_F²
    cosine: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # mean, sd
    distance: dict[tuple[str, str], float] = field(default_factory=dict)  # normalised Frobenius


def shared_probe_stats(
    hvps: Mapping[str, Hvp],
    dim: int,
    probes: int,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> ProbeStats:
    """Traces, Frobenius norms and pairwise alignment of several operators on shared probes.

    One HVP per operator and probe; only the current probe's products are held. Pairs are
    the ordered-by-name pairs ``(a, b)`` with ``a`` listed before ``b`` in ``hvps``.
    """
    names = list(hvps)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    gen = torch.Generator().manual_seed(seed)
    quad: dict[str, list[float]] = {k: [] for k in names}
    sq: dict[str, list[float]] = {k: [] for k in names}
    cos: dict[tuple[str, str], list[float]] = {p: [] for p in pairs}
    diff: dict[tuple[str, str], list[float]] = {p: [] for p in pairs}
    for _ in range(probes):
        v = rademacher(dim, gen, dtype).to(device)
        hv = {k: hvps[k](v) for k in names}
        for k in names:
            quad[k].append(float(v @ hv[k]))
            sq[k].append(float(hv[k] @ hv[k]))
        for a, b in pairs:
            na, nb = hv[a].norm(), hv[b].norm()
            c = float(hv[a] @ hv[b] / (na * nb)) if float(na * nb) > 0 else float("nan")
            cos[(a, b)].append(c)
            diff[(a, b)].append(float((hv[a] - hv[b]).square().sum()))
    out = ProbeStats()
    for k in names:
        out.trace[k] = _mean_se(quad[k])
        out.frob_sq[k] = sum(sq[k]) / probes
    for p in pairs:
        vals = cos[p]
        mean, se = _mean_se(vals)
        out.cosine[p] = (mean, se * math.sqrt(len(vals)) if len(vals) > 1 else float("nan"))
        fa, fb = math.sqrt(out.frob_sq[p[0]]), math.sqrt(out.frob_sq[p[1]])
        dist = math.sqrt(sum(diff[p]) / probes)
        out.distance[p] = 2.0 * dist / (fa + fb) if fa + fb > 0 else float("nan")
    return out
