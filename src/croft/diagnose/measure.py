"""The paper's theory, observable: energy-gradient norms and per-domain loss Hessians.

For a fitted adapter head (:class:`~croft.methods.croft.head.AdapterHead`, written by
the ``croft`` and ``ce_adapter`` methods) and feature sets, this measures

* **energy-gradient norm** per sample, ``g_i = ‖∂E_i/∂(W_i, W_t)‖_F`` (both adapter
  matrices), with the textbook energy ``E_i = -τ·logsumexp_j(z_I(x_i)·z_T(t_j)/τ)`` on
  cosine similarities (lower = more in-distribution; croft's energy *score* is ``-E``).
  This is the quantity the paper variant's EDR penalty ``mean_i g_i²`` minimises
  (:func:`~croft.methods.croft.core.per_sample_energy_grad_sq`); it is summarised per
  group (mean, standard deviation, quantiles).
* the **classification loss's Hessian** ``H_d = ∇²_θ mean_{i∈d} CE(s·z_I z_Tᵀ, y)`` with
  respect to ``θ`` = the chosen adapter matrices (default ``fc_i`` and ``fc_t``, flattened
  and concatenated), for every labelled group ``d``: Hutchinson trace (± standard error),
  the largest-magnitude eigenvalue (signed, power iteration), ``‖H_d‖_F``, and the
  alignment of every pair of groups on shared probes (mean cosine of ``H_a v`` and
  ``H_b v`` with its spread, and ``2‖H_a − H_b‖_F/(‖H_a‖_F + ‖H_b‖_F)``); see
  :mod:`croft.diagnose.hessian`. Only Hessian-vector products are formed (never a ``D²×D²`` matrix).
* the official (authors') batch-level EDR penalty ``loss2`` on each group as one batch,
  in the reduction the head was trained with (``setup2`` by default);
* ``‖W − I‖_F/√D`` of ``fc_i`` and ``fc_t``; accuracy and mean CE per labelled group.

Both losses use the head's TRAINING ratios (``ratio``, ``ratio_text``), the map its losses
were trained through; accuracy uses the head's prediction map (``head.logits``).

Groups: each training domain is ``train:<domain>`` (one ``train`` group without domain
labels) plus ``train`` pooled for the energy; each named set is one group. Hessians are
measured on groups whose labels are all known (``>= 0``); sets with unknown labels (open-set
OOD) get energy-gradient norms only. Training features use view 0.

Results are tidy rows (dicts with the keys of :data:`COLUMNS`): ``quantity`` names what
``value`` is, ``spread`` its standard deviation / standard error (see :data:`QUANTITIES`),
``other`` the second group of a pairwise quantity.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from croft.diagnose.groups import Group, check_inputs, make_groups, subsample
from croft.diagnose.hessian import shared_probe_stats, top_eigenvalue
from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.base import FittedHead
from croft.methods.croft.core import (
    adapt_image,
    adapt_text,
    official_energy_gradient_penalty,
    per_sample_energy_grad_sq,
)
from croft.methods.croft.head import AdapterHead
from croft.methods.text import eps_normalize

log = logging.getLogger(__name__)

COLUMNS = ("head", "x", "group", "other", "quantity", "value", "spread", "n")
ADAPTER_PARAMS = ("fc_i", "fc_t")
QUANTITIES = {
    "energy_grad_norm_mean": "mean of g_i (spread: standard deviation)",
    "energy_grad_norm_q10": "10 % quantile of g_i",
    "energy_grad_norm_q25": "25 % quantile of g_i",
    "energy_grad_norm_median": "median of g_i",
    "energy_grad_norm_q75": "75 % quantile of g_i",
    "energy_grad_norm_q90": "90 % quantile of g_i",
    "official_penalty": "the official EDR penalty loss2 with the whole group as one batch",
    "accuracy": "top-1 accuracy of the head's predictions",
    "ce_loss": "mean cross-entropy (training ratios)",
    "hessian_trace": "Hutchinson tr H_d (spread: standard error)",
    "hessian_top_eig": "largest-magnitude eigenvalue of H_d, signed",
    "hessian_frob": "‖H_d‖_F estimated on the probes",
    "hessian_cosine": "mean cos(H_a v, H_b v) over probes (spread: sd over probes)",
    "hessian_distance": "2‖H_a − H_b‖_F / (‖H_a‖_F + ‖H_b‖_F)",
    "hessian_cosine_to_train": "mean hessian_cosine with every other training domain",
    "hessian_cosine_split_half": "mean cos(H_a v, H_b v) of two random halves of the group "
    "(spread: sd over probes): what sampling alone allows at half the size",
    "hessian_distance_to_train": "mean hessian_distance to every other training domain",
    "w_minus_i": "‖W − I‖_F / √D (group: fc_i or fc_t)",
}


@dataclass(frozen=True)
class DiagnoseOptions:
    """How the diagnostics are measured (all recorded in ``diagnostics.json``)."""

    params: tuple[str, ...] = ADAPTER_PARAMS  # the Hessian's parameters
    probes: int = 32  # Rademacher probes (trace, Frobenius norm, alignment)
    power_iters: int = 50
    power_tol: float = 1e-4
    max_rows: int = 1000  # per group, a seeded random subset above this (0: all rows)
    energy_temperature: float = -1.0  # < 0: the head's config value (default 1.0)
    seed: int = 0
    dtype: str = "float64"
    split_half: bool = True  # also measure the split-half alignment of every labelled group
    equal_rows: bool = False  # subsample every Hessian group to the smallest one's size

    def check(self) -> None:
        bad = [p for p in self.params if p not in ADAPTER_PARAMS]
        if bad or not self.params:
            raise CroftError(
                f"Hessian parameters {list(self.params)}: choose from {', '.join(ADAPTER_PARAMS)}"
            )
        if self.probes < 2 or self.power_iters < 1 or self.max_rows < 0:
            raise CroftError("probes must be >= 2, power_iters >= 1 and max_rows >= 0")
        if self.dtype not in ("float32", "float64"):
            raise CroftError(f"dtype {self.dtype!r}: use float32 or float64")


def require_adapter(head: FittedHead, label: str = "head") -> AdapterHead:
    """``head`` if it is an adapter head, else a one-line error naming what is supported."""
    if not isinstance(head, AdapterHead):
        raise CroftError(
            f"{label}: a {head.head_name!r} head cannot be diagnosed; croft diagnose supports "
            "adapter heads ('adapter', written by the methods croft and ce_adapter)"
        )
    return head


# ------------------------------------------------------------------------- quantities
def energy_grad_norms(
    head: AdapterHead, x: torch.Tensor, temperature: float = 1.0, dtype: str = "float64"
) -> torch.Tensor:
    """``g_i = ‖∂E_i/∂(W_i, W_t)‖_F`` for raw features ``x`` ``(N, D)``; shape ``(N,)``."""
    dt = getattr(torch, dtype)
    with torch.no_grad():
        sq = per_sample_energy_grad_sq(
            eps_normalize(x.to(head.text.device, dt)),
            head.text.to(dt),
            head.fc_i.to(dt),
            head.fc_t.to(dt),
            head.ratio,
            head.ratio_text,
            temperature,
        )
    return sq.clamp_min(0.0).sqrt()


def official_penalty(
    head: AdapterHead, x: torch.Tensor, reduction: str = "setup2", dtype: str = "float64"
) -> float:
    """The authors' batch-level EDR penalty (``loss2``) on rows ``n(x)``, one batch.

    ``setup2``: ``‖∂ mean_{i,j} exp(a_i·b_j)/∂δ‖²`` (the squared norm of the MEAN gradient
    over the rows, not a mean of per-sample norms); ``setup1``: ``mean(g²)`` of the sum's.
    """
    dt = getattr(torch, dtype)
    xs = eps_normalize(x.to(head.text.device, dt))
    with torch.enable_grad():
        val = official_energy_gradient_penalty(
            xs,
            eps_normalize(head.text.to(dt)),
            head.fc_i.to(dt),
            head.fc_t.to(dt),
            head.ratio,
            head.ratio_text,
            reduction,
        )
    return float(val.detach())


def classification_loss(
    head: AdapterHead, x: torch.Tensor, y: torch.Tensor, w_img: torch.Tensor, w_txt: torch.Tensor
) -> torch.Tensor:
    """``mean_i CE(s·z_I(x_i; W_i) z_T(W_t)ᵀ, y_i)`` at the head's training ratios."""
    z_i = adapt_image(x, w_img, head.ratio)
    z_t = adapt_text(head.text.to(x.dtype), w_txt, head.ratio_text)
    return F.cross_entropy(head.logit_scale * z_i @ z_t.T, y)


def _flat(parts: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate flattened tensors; ``None`` (an unused input) counts as zeros."""
    pairs = zip(parts, like, strict=True)
    return torch.cat([(torch.zeros_like(q) if p is None else p).reshape(-1) for p, q in pairs])


def loss_hvp(
    head: AdapterHead,
    x: torch.Tensor,
    y: torch.Tensor,
    params: Sequence[str] = ADAPTER_PARAMS,
    dtype: str = "float64",
):  # noqa: ANN201 (returns (hvp, dim))
    """``(hvp, dim)``: ``v ↦ H v`` of :func:`classification_loss` wrt ``params`` (flattened).

    The gradient is built once with ``create_graph``; each call is one double backward.
    """
    dt = getattr(torch, dtype)
    x, y = x.to(head.text.device, dt), y.to(head.text.device)
    mats = {"fc_i": head.fc_i.detach().to(dt), "fc_t": head.fc_t.detach().to(dt)}
    free = [mats[p].clone().requires_grad_(True) for p in params]
    full = dict(mats, **dict(zip(params, free, strict=True)))
    loss = classification_loss(head, x, y, full["fc_i"], full["fc_t"])
    flat = _flat(torch.autograd.grad(loss, free, create_graph=True, allow_unused=True), free)
    dim = flat.numel()

    def hvp(v: torch.Tensor) -> torch.Tensor:
        if not flat.requires_grad:
            return torch.zeros(dim, dtype=dt, device=x.device)
        hv = torch.autograd.grad(flat @ v.to(dt), free, retain_graph=True, allow_unused=True)
        return _flat(hv, free)

    return hvp, dim


def w_minus_i(w: torch.Tensor) -> float:
    """``‖W − I‖_F / √D`` of a ``(D, D)`` matrix."""
    d = w.shape[0]
    eye = torch.eye(d, dtype=w.dtype, device=w.device)
    return float((w - eye).norm() / math.sqrt(d))


# --------------------------------------------------------------------------- one head
def _row(head: str, x: float, group: str, quantity: str, value: float, **kw) -> dict:  # noqa: ANN003
    return {
        "head": head,
        "x": x,
        "group": group,
        "other": kw.get("other", ""),
        "quantity": quantity,
        "value": float(value),
        "spread": float(kw.get("spread", float("nan"))),
        "n": int(kw.get("n", 0)),
    }


def _energy_rows(label: str, x: float, name: str, g: torch.Tensor) -> list[dict]:
    n = int(g.numel())
    qs = torch.quantile(g, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=g.dtype))
    sd = float(g.std()) if n > 1 else float("nan")
    rows = [_row(label, x, name, "energy_grad_norm_mean", float(g.mean()), spread=sd, n=n)]
    for q, v in zip(("q10", "q25", "median", "q75", "q90"), qs.tolist(), strict=True):
        rows.append(_row(label, x, name, f"energy_grad_norm_{q}", v, n=n))
    return rows


def head_temperature(head: AdapterHead, options: DiagnoseOptions) -> float:
    """The energy temperature: the option if set (> 0), else the head's config value or 1."""
    if options.energy_temperature > 0:
        return float(options.energy_temperature)
    cfg = head.meta.get("config", {}) if isinstance(head.meta, dict) else {}
    return float(cfg.get("energy_temperature", 1.0))


def diagnose_head(
    head: FittedHead,
    train: FeatureSet,
    sets: Mapping[str, FeatureSet],
    options: DiagnoseOptions = DiagnoseOptions(),
    *,
    label: str = "head",
    x: float = float("nan"),
) -> list[dict]:
    """Every diagnostic of one head as tidy rows (see the module docstring)."""
    options.check()
    ahead = require_adapter(head, label)
    check_inputs(ahead, label, train, sets)
    dt, dev = getattr(torch, options.dtype), ahead.text.device
    groups, hess_names = make_groups(train, sets, options.max_rows, options.seed)
    tau = head_temperature(ahead, options)
    rows: list[dict] = []
    cfg = ahead.meta.get("config", {}) if isinstance(ahead.meta, dict) else {}
    reduction = str(cfg.get("energy_reduction", "setup2"))
    for name, grp in groups.items():
        rows += _energy_rows(label, x, name, energy_grad_norms(ahead, grp.x, tau, options.dtype))
        pen = official_penalty(ahead, grp.x, reduction, options.dtype)
        rows.append(_row(label, x, name, "official_penalty", pen, n=len(grp.y)))
    for name in hess_names:  # accuracy and CE on the whole group
        rows += _fit_rows(ahead, groups[name], options, label, x, name)
    hess_groups = {k: groups[k] for k in hess_names}
    if options.equal_rows and hess_groups:
        m = min(len(g.y) for g in hess_groups.values())
        hess_groups = {
            k: Group(*subsample(g.x, g.y, m, options.seed), g.source)
            for k, g in hess_groups.items()
        }
    hvps = {}
    dim = 0
    for name, grp in hess_groups.items():
        hvps[name], dim = loss_hvp(ahead, grp.x, grp.y, options.params, options.dtype)
        lam, iters = top_eigenvalue(
            hvps[name], dim, options.power_iters, options.power_tol, options.seed,
            dtype=dt, device=dev,
        )  # fmt: skip
        if iters >= options.power_iters:
            log.info("%s/%s: power iteration did not converge in %d steps", label, name, iters)
        rows.append(_row(label, x, name, "hessian_top_eig", lam, n=len(grp.y)))
    if hvps:
        stats = shared_probe_stats(hvps, dim, options.probes, options.seed, dtype=dt, device=dev)
        rows += _hessian_rows(label, x, stats, {k: len(g.y) for k, g in hess_groups.items()})
    if options.split_half:
        for name, grp in hess_groups.items():
            rows += _split_half_rows(ahead, grp, options, label, x, name)
    for pname in ADAPTER_PARAMS:
        rows.append(_row(label, x, pname, "w_minus_i", w_minus_i(getattr(ahead, pname))))
    return rows


def _fit_rows(
    head: AdapterHead, grp: Group, options: DiagnoseOptions, label: str, x: float, name: str
) -> list[dict]:
    """Accuracy (the head's prediction map) and mean CE (training ratios) of one group."""
    dt, dev = getattr(torch, options.dtype), head.text.device
    xs, ys = grp.x.to(dev, dt), grp.y.to(dev)
    with torch.no_grad():
        acc = float((head.logits(xs.to(head.text.dtype)).argmax(1) == ys).float().mean())
        ce = float(classification_loss(head, xs, ys, head.fc_i.to(dt), head.fc_t.to(dt)))
    return [
        _row(label, x, name, "accuracy", acc, n=len(ys)),
        _row(label, x, name, "ce_loss", ce, n=len(ys)),
    ]


def _split_half_rows(
    head: AdapterHead, grp: Group, options: DiagnoseOptions, label: str, x: float, name: str
) -> list[dict]:
    """Cosine of the Hessians of two seeded random halves of one group (a sampling ceiling)."""
    n = len(grp.y)
    if n < 4:
        return []
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(options.seed + 1))
    halves = {}
    for key, idx in (("a", perm[: n // 2]), ("b", perm[n // 2 :])):
        halves[key], dim = loss_hvp(head, grp.x[idx], grp.y[idx], options.params, options.dtype)
    dt, dev = getattr(torch, options.dtype), head.text.device
    st = shared_probe_stats(halves, dim, options.probes, options.seed, dtype=dt, device=dev)
    cos, sd = st.cosine[("a", "b")]
    return [_row(label, x, name, "hessian_cosine_split_half", cos, spread=sd, n=n // 2)]


def _hessian_rows(label: str, x: float, stats, sizes: Mapping[str, int]) -> list[dict]:  # noqa: ANN001
    rows = []
    for name, (tr, se) in stats.trace.items():
        rows.append(_row(label, x, name, "hessian_trace", tr, spread=se, n=sizes[name]))
        rows.append(_row(label, x, name, "hessian_frob", math.sqrt(stats.frob_sq[name])))
    train_names = [k for k in stats.trace if k.startswith("train")]
    for (a, b), (cos, sd) in stats.cosine.items():
        rows.append(_row(label, x, a, "hessian_cosine", cos, other=b, spread=sd))
        rows.append(_row(label, x, a, "hessian_distance", stats.distance[(a, b)], other=b))
    for name in stats.trace:
        others = [t for t in train_names if t != name]
        if not others:
            continue
        key = [(name, t) if (name, t) in stats.cosine else (t, name) for t in others]
        cos = sum(stats.cosine[k][0] for k in key) / len(key)
        dist = sum(stats.distance[k] for k in key) / len(key)
        rows.append(_row(label, x, name, "hessian_cosine_to_train", cos, n=len(key)))
        rows.append(_row(label, x, name, "hessian_distance_to_train", dist, n=len(key)))
    return rows


def diagnose_heads(
    heads: Mapping[str, FittedHead],
    train: FeatureSet,
    sets: Mapping[str, FeatureSet],
    options: DiagnoseOptions = DiagnoseOptions(),
    *,
    x_key: str = "lambda2",
    configs: Mapping[str, Mapping] | None = None,
) -> tuple[list[dict], str]:
    """``(rows, x_name)`` for several heads (e.g. a λ2 sweep), one tidy table.

    ``x`` is each head's ``config[x_key]`` when every head records a number there, else
    the head's position (``x_name`` says which). The config is ``configs[label]`` when
    given (e.g. a run folder's method config and grid-point options), else the head's
    own ``meta["config"]``.
    """
    xs = []
    for label, h in heads.items():
        if configs is not None and label in configs:
            cfg = configs[label]
        else:
            cfg = h.meta.get("config", {}) if isinstance(h.meta, dict) else {}
        xs.append(cfg.get(x_key))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    x_name = x_key if numeric else "head index"
    for label, h in heads.items():  # every input error before any work
        check_inputs(require_adapter(h, label), label, train, sets)
    rows: list[dict] = []
    for i, (label, h) in enumerate(heads.items()):
        xv = float(xs[i]) if numeric else float(i)
        rows += diagnose_head(h, train, sets, options, label=label, x=xv)
    return rows, x_name
