"""Whole grids in one program: fit many adapter-family members at once, each exactly.

:func:`fit_many` takes members ``(train, val, options)`` of one method and returns, for
each, the :class:`~croft.methods.base.FitResult` that ``croft.methods.fit(method, train,
val, **options)`` returns (float64: equal to 1e-10; float32: to rounding, see
``tests/test_batched.py``). Members are grouped automatically by what must be shared
(:func:`group_key`): the step's branches (variant, WCCF, ``gen_step``, worst-case branch,
energy reduction; paper: ``lambda2 == 0``), dtype, epochs, batch size, training rows,
views, feature dimension, class count and whether a validation set is given. Within a
group members may differ in every scalar (λ1, λ2, λ_c, lr, warm-up, momentum, weight
decay, ratios, logit scale, temperature), in seed (own shuffling generator), training set
(of the same shape) and validation set (any size). A group is split into chunks that fit
``chunk_budget_bytes`` (:func:`member_bytes`); each chunk trains as one stack of
``(G, D, D)`` matrices with :mod:`croft.methods.batched_steps`.

Per member and per epoch, exactly as :func:`croft.methods.loop.run_epochs`: the schedule
(:func:`lr_at_epoch` of the member's config), view ``e mod V``, the batch order of its own
``torch.Generator(seed)``, mean step losses, validation accuracy, the selection policy
(:class:`EpochSelector`), divergence (the first epoch with a non-finite loss or matrix ends
the member; the selected epoch before it is returned) and the selection record. Values
are read to the host once per epoch, never inside a step. The history's ``seconds`` is
the chunk's epoch time divided by its member count.

Methods without a batched step (every method but ``croft`` and ``ce_adapter``) fall back
to sequential fits, logged once per call.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.adapter_head import AdapterHead
from croft.methods.base import METHODS, FitResult, make_config
from croft.methods.batched_steps import STEPS, BatchedParams, Hyper, Structure, adapt
from croft.methods.croft import CroftConfig
from croft.methods.loop import (
    EpochSelector,
    check_val,
    epoch_batches,
    lr_at_epoch,
    param_change,
    resolve_logit_scale,
    select_policy,
    selection_record,
)
from croft.methods.saving import _features as features_of
from croft.methods.saving import provenance
from croft.methods.text import class_text_features
from croft.progress import progress as progress_bar

log = logging.getLogger(__name__)

BATCHED_METHODS = ("croft", "ce_adapter")
DEFAULT_BUDGET = 2 * 2**30  # bytes per chunk
# Peak bytes per member, measured (benchmarks/grid_speed.py --memory: RSS slope between 1
# and 9 Setup-II members sharing one training set, float32): 29 MB at D = 512 (28 D²
# numbers), 8.8 MB at D = 256 (34 D²). The estimate below (MAT_FACTOR·D² + ACT_FACTOR·
# (2B + C)·D, plus the member's own features) is ~1.3x above both: 38 MB and 11 MB.
MAT_FACTOR = 30
ACT_FACTOR = 48
Member = tuple[FeatureSet, "FeatureSet | None", Mapping[str, Any]]


def default_threads() -> int:
    """Torch threads for batched fits: ``CROFT_THREADS`` if set, else 1 (see the module
    README in benchmarks/grid_speed.py: one thread is fastest on these small ops and does
    not collapse beside another busy process)."""
    value = os.environ.get("CROFT_THREADS", "").strip()
    if not value:
        return 1
    try:
        threads = int(value)
    except ValueError:
        raise CroftError(f"CROFT_THREADS={value!r}: give a whole number of threads") from None
    if threads < 1:
        raise CroftError(f"CROFT_THREADS={value!r}: give at least 1")
    return threads


def structure_of(method: str, cfg: Any) -> Structure:
    """The step branches a member's config selects (shared by every member of a group)."""
    if method == "ce_adapter":
        return Structure("ce")
    if cfg.variant == "paper":
        return Structure("paper", cfg.wccf, cfg.gen_step, penalty=cfg.lambda2 != 0.0)
    return Structure("official", cfg.wccf, cfg.gen_step, cfg.covariate_rows, cfg.energy_reduction)


def group_key(method: str, train: FeatureSet, val: FeatureSet | None, cfg: Any) -> tuple:
    """Members with equal keys train together (see the module docstring)."""
    return (
        method,
        structure_of(method, cfg),
        cfg.dtype,
        cfg.epochs,
        cfg.batch_size,
        len(train),
        train.num_views,
        train.dim,
        train.num_classes,
        val is None,
    )


def member_bytes(
    dim: int, classes: int, batch: int, rows: int, views: int, val_rows: int, dtype_bytes: int
) -> int:
    """Estimated peak bytes one member adds to a chunk (~1.3x the measured peak).

    ``MAT_FACTOR·D²`` (three matrices with gradients, momentum, initial and kept copies, the
    gradient accumulation of the double-backward step) + ``ACT_FACTOR·(2B + C)·D`` (step
    activations, covariate rows included) + the member's own training features ``N·V·D``
    (an upper bound: members sharing a training set store it once) and padded validation
    features ``2·N_val·D``. At D = 768 (Setup-II rows, float32) about 90 MB: a 2 GiB budget
    trains 22 members at a time, so a 1,000-member grid runs in 46 chunks of bounded size.
    """
    d = dim
    numbers = MAT_FACTOR * d * d + ACT_FACTOR * (2 * batch + classes) * d
    numbers += rows * views * d + 2 * val_rows * d
    return int(numbers * dtype_bytes)


def chunk_size(nbytes: int, budget: int, label: str) -> int:
    """Members per chunk under ``budget``; a one-line error when one member does not fit."""
    if nbytes > budget:
        raise CroftError(
            f"{label}: one member needs about {nbytes / 2**20:.2f} MiB, more than the chunk "
            f"budget of {budget / 2**20:.2f} MiB; raise chunk_budget_bytes"
        )
    return max(1, budget // nbytes)


# ---------------------------------------------------------------------------- stacking
def hyper(cfgs: Sequence[Any], scales: Sequence[float], dtype: torch.dtype, dev: torch.device,
          *, evaluation: bool = False) -> Hyper:  # fmt: skip
    """Per-member scalars as ``(G,)`` tensors (training ratios, or prediction ratios)."""

    def col(values: Sequence[float]) -> torch.Tensor:
        return torch.tensor([float(v) for v in values], dtype=dtype, device=dev)

    ratio = [c.ratio for c in cfgs]
    ratio_text = [c.ratio_text for c in cfgs]
    if evaluation:
        ratio = [c.ratio if c.eval_ratio < 0 else c.eval_ratio for c in cfgs]
        ratio_text = [c.ratio_text if c.eval_ratio_text < 0 else c.eval_ratio_text for c in cfgs]
    return Hyper(
        {
            "ratio": col(ratio),
            "ratio1": col([1.0 - r for r in ratio]),
            "ratio_text": col(ratio_text),
            "ratio_text1": col([1.0 - r for r in ratio_text]),
            "scale": col(scales),
            "lambda1": col([getattr(c, "lambda1", 0.0) for c in cfgs]),
            "lambda2": col([getattr(c, "lambda2", 0.0) for c in cfgs]),
            "lambda_c": col([getattr(c, "lambda_c", 1.0) for c in cfgs]),
            "temperature": col([getattr(c, "energy_temperature", 1.0) for c in cfgs]),
            "momentum": col([c.momentum for c in cfgs]),
            "weight_decay": col([c.weight_decay for c in cfgs]),
            "lr": col([lr_at_epoch(c, 0) for c in cfgs]),
        }
    )


def _unique(items: Sequence[Any]) -> tuple[list[Any], list[int]]:
    """Distinct objects (by identity) and each item's index among them."""
    seen: dict[int, int] = {}
    out: list[Any] = []
    for it in items:
        if id(it) not in seen:
            seen[id(it)] = len(out)
            out.append(it)
    return out, [seen[id(it)] for it in items]


class Validation:
    """Members' validation sets, deduplicated and padded: ``x`` ``(U, Nmax, D)``."""

    def __init__(self, vals: Sequence[FeatureSet], dtype: torch.dtype, dev: torch.device):
        uniq, of = _unique(vals)
        self.sizes = [len(vals[i]) for i in range(len(vals))]
        n_max, dim = max(len(v) for v in uniq), uniq[0].dim
        self.x = torch.zeros(len(uniq), n_max, dim, dtype=dtype, device=dev)
        self.y = torch.full((len(uniq), n_max), -1, dtype=torch.long, device=dev)
        for i, v in enumerate(uniq):
            self.x[i, : len(v)] = v.eval_features().to(dev, dtype)
            self.y[i, : len(v)] = v.labels.to(dev)
        self.of = torch.tensor(of, device=dev)

    @torch.no_grad()
    def accuracy(self, p: BatchedParams, t: torch.Tensor, ev: Hyper) -> list[float]:
        """Top-1 accuracy per member, as :func:`croft.methods.loop.accuracy` computes it."""
        z = adapt(self.x[self.of], p.full("fc_i"), ev.m("ratio"), ev.m("ratio1"))
        zt = adapt(t, p.full("fc_t"), ev.m("ratio_text"), ev.m("ratio_text1"))
        hit = ((ev.m("scale") * z @ zt.mT).argmax(-1) == self.y[self.of]).cpu()
        return [float(hit[g, :n].float().mean()) for g, n in enumerate(self.sizes)]


# ------------------------------------------------------------------------------- chunk
class Chunk:
    """One stack of members of one group, trained together."""

    def __init__(self, method: str, members: Sequence[tuple[FeatureSet, Any, Any]], dev):  # noqa: ANN001
        self.method, self.dev = method, dev
        self.trains = [m[0] for m in members]
        self.vals = [m[1] for m in members]
        self.cfgs = [m[2] for m in members]
        cfg0, train0 = self.cfgs[0], self.trains[0]
        self.structure = structure_of(method, cfg0)
        self.dtype = getattr(torch, cfg0.dtype)
        uniq, of = _unique(self.trains)
        self.feats = torch.stack([u.features.to(dev, self.dtype) for u in uniq])
        self.labels = torch.stack([u.labels.to(dev) for u in uniq])
        self.of = torch.tensor(of, device=dev)[:, None]
        self.t = torch.stack(
            [
                class_text_features(tr.require_text(), c.ensemble).to(dev, self.dtype)
                for tr, c in zip(self.trains, self.cfgs, strict=True)
            ]
        )
        scales = [
            resolve_logit_scale(tr, c.logit_scale)
            for tr, c in zip(self.trains, self.cfgs, strict=True)
        ]
        self.scales = scales
        self.hp = hyper(self.cfgs, scales, self.dtype, dev)
        self.ev = hyper(self.cfgs, scales, self.dtype, dev, evaluation=True)
        residual = self.structure.variant == "paper"
        self.params = BatchedParams.create(len(members), train0.dim, self.dtype, dev, residual)
        self.val = None if self.vals[0] is None else Validation(self.vals, self.dtype, dev)
        self.size = len(members)

    def epoch(self, epoch: int, gens: Sequence[torch.Generator]) -> tuple[list, list[bool]]:
        """Train one epoch; returns per-batch losses ``[batch][loss][member]`` and finiteness."""
        cfgs, p = self.cfgs, self.params
        lrs = [lr_at_epoch(c, epoch) for c in cfgs]
        self.hp.values["lr"] = torch.tensor(lrs, dtype=self.dtype, device=self.dev)
        feats = (
            self.feats if self.feats.dim() == 3 else self.feats[:, :, epoch % self.feats.shape[2]]
        )
        n_rows, bs = self.feats.shape[1], cfgs[0].batch_size
        idx = torch.stack([torch.stack(epoch_batches(n_rows, bs, g)) for g in gens]).to(self.dev)
        step = STEPS[self.structure.variant]
        outs = []
        for b in range(idx.shape[1]):
            ib = idx[:, b]
            out = step(
                p, feats[self.of, ib], self.labels[self.of, ib], self.t, self.hp, self.structure
            )
            outs.append(torch.stack([out.loss, out.loss_ce, out.loss1, out.loss2]))
        losses = torch.stack(outs)  # (batches, 4, G)
        ok = torch.isfinite(losses).all(0).all(0)
        for k in ("fc_i", "fc_t", "generator"):
            ok &= torch.isfinite(p.mats[k].detach()).flatten(1).all(1)
        return losses.cpu().tolist(), ok.cpu().tolist()

    def head(self, g: int, mats: Sequence[torch.Tensor]) -> AdapterHead:
        """The member's head for matrices ``mats`` = (fc_i, fc_t, generator) as stored."""
        cfg, train = self.cfgs[g], self.trains[g]
        head = AdapterHead(
            train.class_names,
            train.dim,
            self.scales[g],
            ratio=cfg.ratio,
            ratio_text=cfg.ratio_text,
            eval_ratio=None if cfg.eval_ratio < 0 else cfg.eval_ratio,
            eval_ratio_text=None if cfg.eval_ratio_text < 0 else cfg.eval_ratio_text,
            dtype=cfg.dtype,
        )
        eye = torch.eye(train.dim, dtype=self.dtype, device=self.dev)
        full = [m + eye if self.params.residual else m for m in mats]
        head.text.copy_(self.t[g])
        head.fc_i.copy_(full[0])
        head.fc_t.copy_(full[1])
        head.generator.copy_(full[2])
        if self.method == "croft":
            head.meta = {"method": "croft", "variant": cfg.variant, "config": asdict(cfg)}
        else:
            head.meta = {"method": "ce_adapter", "config": asdict(cfg)}
        return head.to(self.dev)


KEYS = ("loss", "loss_ce", "loss1", "loss2")


def fit_chunk(chunk: Chunk, tick: Callable[[int], None]) -> list[FitResult | CroftError]:
    """Train every member of ``chunk``; one result (or the divergence error) per member."""
    g_n, cfgs, p = chunk.size, chunk.cfgs, chunk.params
    names = ("fc_i", "fc_t", "generator")
    init = {k: p.mats[k].detach().clone() for k in names}
    kept = {k: v.clone() for k, v in init.items()}
    gens = [torch.Generator().manual_seed(c.seed) for c in cfgs]
    val_init = chunk.val.accuracy(p, chunk.t, chunk.ev) if chunk.val else [None] * g_n
    selectors = [EpochSelector(select_policy(c), c.warmup_epochs) for c in cfgs]
    history: list[list[dict[str, float]]] = [[] for _ in range(g_n)]
    diverged: list[int | None] = [None] * g_n
    for epoch in range(cfgs[0].epochs):
        t0 = time.perf_counter()
        losses, ok = chunk.epoch(epoch, gens)
        accs = chunk.val.accuracy(p, chunk.t, chunk.ev) if chunk.val else [None] * g_n
        seconds = (time.perf_counter() - t0) / g_n
        take: list[int] = []
        for g in range(g_n):
            if diverged[g] is not None:
                continue
            if not ok[g]:
                diverged[g] = epoch
                log.warning("member %d: training diverged at epoch %d", g, epoch)
                continue
            rec: dict[str, float] = {"epoch": float(epoch), "lr": lr_at_epoch(cfgs[g], epoch)}
            for j, key in enumerate(KEYS):
                vals = [b[j][g] for b in losses]
                rec[key] = sum(vals) / len(vals)
            rec["seconds"] = seconds
            if accs[g] is not None:
                rec["val_acc"] = accs[g]
            history[g].append(rec)
            if selectors[g].offer(epoch, accs[g]):
                take.append(g)
        if take:
            sel = torch.tensor(take, device=chunk.dev)
            for k in names:
                kept[k][sel] = p.mats[k].detach()[sel]
        tick(g_n)
        if all(d is not None for d in diverged):
            break
    return [_result(chunk, g, kept, init, selectors[g], history[g], val_init[g], diverged[g])
            for g in range(g_n)]  # fmt: skip


def _result(chunk: Chunk, g: int, kept, init, selector: EpochSelector, history, val_init,  # noqa: ANN001
            diverged: int | None) -> FitResult | CroftError:  # fmt: skip
    cfg = chunk.cfgs[g]
    if selector.epoch is None:
        hint = "lower lr or lambda2" if isinstance(cfg, CroftConfig) else "lower lr"
        return CroftError(
            f"training diverged at epoch {diverged} before any epoch completed "
            f"(non-finite loss); {hint}"
        )
    mats = [kept[k][g] for k in ("fc_i", "fc_t", "generator")]
    change = param_change([init[k][g] for k in ("fc_i", "fc_t", "generator")], mats)
    record = selection_record(
        select_policy(cfg), cfg.warmup_epochs, selector.epoch, history, val_init, change, diverged
    )
    return FitResult(chunk.head(g, mats), history, selector.epoch, record)


# --------------------------------------------------------------------------------- API
def fit_many(
    method: str,
    members: Sequence[Member],
    *,
    device: str | torch.device = "cpu",
    chunk_budget_bytes: int = DEFAULT_BUDGET,
    progress: bool = False,
    threads: int | None = None,
    errors: str = "raise",
) -> list[FitResult | CroftError]:
    """Fit ``method`` once per member ``(train, val, options)``; results in member order.

    Each result equals ``croft.methods.fit(method, train, val, device=device, **options)``.
    ``errors="raise"`` raises the first member's divergence error (after every member has
    trained); ``"return"`` puts the :class:`CroftError` in that member's slot. The other
    arguments are :func:`fit_iter`'s. Every head is kept: use :func:`fit_iter` to write
    results as they come when the grid's heads (3·D² numbers each) do not fit in memory.
    """
    if errors not in ("raise", "return"):
        raise CroftError(f"errors={errors!r}: use 'raise' or 'return'")
    results: list[FitResult | CroftError | None] = [None] * len(members)
    it = fit_iter(
        method, members, device=device, chunk_budget_bytes=chunk_budget_bytes,
        progress=progress, threads=threads,
    )  # fmt: skip
    for i, r in it:
        results[i] = r
    if errors == "raise":
        for r in results:
            if isinstance(r, CroftError):
                raise r
    return [r for r in results if r is not None]


def fit_iter(
    method: str,
    members: Sequence[Member],
    *,
    device: str | torch.device = "cpu",
    chunk_budget_bytes: int = DEFAULT_BUDGET,
    progress: bool = False,
    threads: int | None = None,
) -> Iterator[tuple[int, FitResult | CroftError]]:
    """Yield ``(member index, result or divergence error)`` as each chunk finishes.

    Configs and chunk sizes are checked before any training (one-line errors). ``threads``:
    torch threads while fitting (default :func:`default_threads`), restored after.
    ``progress``: one bar over member-epochs. Methods without a batched step are fitted one
    by one (logged).
    """
    spec = METHODS.get(method)
    dev = torch.device(device)
    members, paths = _load(members)
    cfgs = [make_config(spec.config_cls, dict(opts)) for _, _, opts in members]
    for train, val, _ in members:
        train.require_labels()
        check_val(train, val)
    batched = method in BATCHED_METHODS
    if batched:
        plan = plan_chunks(method, members, cfgs, chunk_budget_bytes)
    else:
        log.info("%s has no batched step: fitting %d members one by one", method, len(members))
        plan = [[i] for i in range(len(members))]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads())
    bar = progress_bar(sum(c.epochs for c in cfgs), f"fit {method}", "member-epoch",
                       enabled=progress)  # fmt: skip
    try:
        for part in plan:
            if not batched:
                (i,) = part
                result = spec.fit(members[i][0], members[i][1], cfgs[i], device=dev)
                yield i, _with_provenance(method, cfgs[i], result, members[i], paths[i])
                bar.update(cfgs[i].epochs)
                continue
            chunk = Chunk(method, [(members[i][0], members[i][1], cfgs[i]) for i in part], dev)
            results = fit_chunk(chunk, bar.update)
            del chunk
            for i, r in zip(part, results, strict=True):
                yield i, _with_provenance(method, cfgs[i], r, members[i], paths[i])
    finally:
        bar.close()
        torch.set_num_threads(old_threads)


def plan_chunks(method: str, members: Sequence[Member], cfgs: Sequence[Any],
                budget: int) -> list[list[int]]:  # fmt: skip
    """Member indices per chunk: grouped by :func:`group_key`, sized by :func:`member_bytes`."""
    groups: dict[tuple, list[int]] = {}
    for i, ((train, val, _), cfg) in enumerate(zip(members, cfgs, strict=True)):
        groups.setdefault(group_key(method, train, val, cfg), []).append(i)
    plan = []
    for key, idx in groups.items():
        train, cfg = members[idx[0]][0], cfgs[idx[0]]
        val_rows = max((len(members[i][1]) for i in idx if members[i][1] is not None), default=0)
        nbytes = member_bytes(
            train.dim, train.num_classes, min(cfg.batch_size, len(train)), len(train),
            train.num_views, val_rows, getattr(torch, cfg.dtype).itemsize,
        )  # fmt: skip
        size = chunk_size(nbytes, budget, f"{method} (D={train.dim}, C={train.num_classes})")
        log.info("%s: group %s, %d members in chunks of %d", method, key[1:], len(idx), size)
        plan.extend(idx[s : s + size] for s in range(0, len(idx), size))
    return plan


def _load(members: Sequence[Member]) -> tuple[list[Member], list[str | None]]:
    """Members with feature files loaded (each path once); the training files' paths."""
    cache: dict[str, tuple[FeatureSet | None, str | None]] = {}

    def load(data: Any) -> tuple[FeatureSet | None, str | None]:
        if data is None or isinstance(data, FeatureSet):
            return data, None
        key = str(data)
        if key not in cache:
            cache[key] = features_of(data)
        return cache[key]

    out, paths = [], []
    for train, val, opts in members:
        train_fs, path = load(train)
        out.append((train_fs, load(val)[0], opts))
        paths.append(path)
    return out, paths


def _with_provenance(method: str, cfg: Any, result: FitResult | CroftError, member: Member,
                     train_path: str | None) -> FitResult | CroftError:  # fmt: skip
    """``head.meta`` as :func:`croft.methods.saving.fit_method` writes it."""
    if isinstance(result, FitResult):
        prov = provenance(method, cfg, result, member[0], member[1], train_path=train_path)
        result.head.meta = {**result.head.meta, **prov}
    return result
