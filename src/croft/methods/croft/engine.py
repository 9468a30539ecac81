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
``(G, D, D)`` matrices with :mod:`croft.methods.croft.steps`.

Per member and per epoch, exactly as :func:`croft.methods.loop.run_epochs`: the schedule
(:func:`lr_at_epoch` of the member's config), view ``e mod V``, the batch order of its own
``torch.Generator(seed)``, mean step losses, validation accuracy, the selection policy
(:class:`EpochSelector`), divergence (the first epoch with a non-finite loss or matrix ends
the member; the selected epoch before it is returned) and the selection record. Values
are read to the host once per epoch, never inside a step. The history's ``seconds`` is
the chunk's epoch time divided by its member count.

A method has a batched step when it registers one (``MethodSpec.batched``, a
:class:`~croft.methods.croft.steps.BatchedMethod`; today CRoFT and the CE adapter, whose
single fits are batches of one); the others fall back to sequential fits, logged once per
call. The engine itself names no method.

Exactness: float64 members equal their single fits to ~1e-13 (tested at 1e-10); float32
members differ from their single float32 fits by rounding that training amplifies, never
more than that single fit's own distance to its float64 fit (tested).

Speed, measured on a 2-core CPU (grid_speed.py): at D = 512 a fit is compute-bound
(~0.35 GFLOP per official step), so stacking members saves the per-op overhead but not
the arithmetic: the gain is large at small D, small at D = 512 on a CPU (GPUs: expected
to gain most, not measured yet).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from croft.errors import CroftError
from croft.features.files import FeatureSet
from croft.methods.base import METHODS, FitResult, make_config
from croft.methods.croft.chunk import Chunk, fit_chunk, structure_of
from croft.methods.loop import check_val, resolve_lr
from croft.methods.saving import _features as features_of
from croft.methods.saving import provenance
from croft.progress import progress as progress_bar

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 2 * 2**30  # bytes per chunk
# On a CPU, stacked (G, D, D) matrices beyond a few MiB fall out of cache and each
# element-wise pass over them becomes memory-bound: at D = 512 (grid_speed.py, 48 members)
# chunks of ~4 members ran 146 ms per member-epoch, ~12: 160 ms, 48: 176 ms. So on a CPU
# one stacked matrix is kept within CPU_STACK_BYTES (D = 512 float32: 8 members; D = 128:
# 128); on other devices only the memory budget limits a chunk.
CPU_STACK_BYTES = 8 * 2**20
# Peak bytes per member, measured (benchmarks/grid_speed.py --memory: RSS slope between 1
# and 9 Setup-II members sharing one training set, float32): 29 MB at D = 512 (28 D²
# numbers), 8.8 MB at D = 256 (34 D²). The estimate below (MAT_FACTOR·D² + ACT_FACTOR·
# (2B + C)·D, plus the member's own features) is ~1.3x above both: 38 MB and 11 MB.
MAT_FACTOR = 30
ACT_FACTOR = 48
#: ``(train, val, options)``: options a mapping, or the method's typed config itself (a
#: planned run's, used as it is: :class:`croft.experiments.plan.PlannedRun`).
Member = tuple[FeatureSet, "FeatureSet | None", Any]


def default_threads(fallback: int = 1) -> int:
    """Torch threads for batched fits: ``CROFT_THREADS`` if set, else ``fallback`` (1).

    Why 1 (benchmarks/grid_speed.py on a 2-core machine shared with other work, load 3-5):
    two threads made the batched 60-member grid 1.4x (10 epochs) to 4.6x (3 epochs) slower
    in wall time than one thread, and used 2.7-4.6x its CPU time (OpenMP workers spinning
    while a sibling is descheduled); one thread beside a busy competing torch process lost
    1.0-2.1x, i.e. no more than its fair share of the cores. Two threads can only win on an
    otherwise idle machine; set ``CROFT_THREADS=2`` (or ``threads=2``) there.
    """
    value = os.environ.get("CROFT_THREADS", "").strip()
    if not value:
        return max(1, int(fallback))
    try:
        threads = int(value)
    except ValueError:
        raise CroftError(f"CROFT_THREADS={value!r}: give a whole number of threads") from None
    if threads < 1:
        raise CroftError(f"CROFT_THREADS={value!r}: give at least 1")
    return threads


# Which fits the runner batches by default (``fit_engine: auto``), from measurements on a
# 2-core CPU (grid_speed.py, BENCHMARKS.md issue 11), batched against sequential per
# member: D = 32 (synthetic demo) 4.6x; D = 128 ~2x; D = 512, C = 7 (Setup-II) 1.2-1.5x
# quiet, 0.6x beside another helper's test run; C = 400 (Setup-I-like, 50 batches of wide
# logits per epoch) 0.5-0.74x, always slower. So on a CPU a member is batched only when
# its class count is at most CPU_BATCH_MAX_CLASSES (between the measured C = 7 and
# C = 400; nothing was measured in between); on CUDA (where per-op launch overhead
# dominates a small fit) always.
CPU_BATCH_MAX_CLASSES = 64


def has_batched_step(method: str) -> bool:
    """Whether ``method`` registered a step on the batched engine (``MethodSpec.batched``)."""
    return METHODS.get(method).batched is not None


def batching_helps(method: str, train: FeatureSet, device: str | torch.device) -> bool:
    """Whether ``fit_engine: auto`` batches ``method`` on ``train`` (see above)."""
    if not has_batched_step(method):
        return False
    if torch.device(device).type != "cpu":
        return True
    return train.num_classes <= CPU_BATCH_MAX_CLASSES


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
    """Fit ``method`` once per member ``(train, val, options or config)``; results in
    member order.

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
    cfgs = [member_config(spec.config_cls, opts) for _, _, opts in members]
    for train, val, _ in members:
        train.require_labels()
        check_val(train, val)
    batched = spec.batched is not None
    if batched:
        plan = plan_chunks(method, members, cfgs, chunk_budget_bytes, dev)
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
            chunk = Chunk(
                method,
                [(members[i][0], members[i][1], resolve_lr(cfgs[i], members[i][0])) for i in part],
                dev,
            )
            results = fit_chunk(chunk, bar.update)
            del chunk
            for i, r in zip(part, results, strict=True):
                yield i, _with_provenance(method, cfgs[i], r, members[i], paths[i])
    finally:
        bar.close()
        torch.set_num_threads(old_threads)


def member_config(config_cls: type, options: Any) -> Any:
    """A member's config: ``options`` itself when it is a ``config_cls`` already, else
    :func:`~croft.methods.base.make_config` of the mapping."""
    if isinstance(options, config_cls):
        return options
    return make_config(config_cls, dict(options))


def plan_chunks(method: str, members: Sequence[Member], cfgs: Sequence[Any], budget: int,
                device: torch.device) -> list[list[int]]:  # fmt: skip
    """Member indices per chunk: grouped by :func:`group_key`, sized by :func:`member_bytes`
    (and, on a CPU, by :data:`CPU_STACK_BYTES`)."""
    groups: dict[tuple, list[int]] = {}
    for i, ((train, val, _), cfg) in enumerate(zip(members, cfgs, strict=True)):
        groups.setdefault(group_key(method, train, val, cfg), []).append(i)
    plan = []
    for key, idx in groups.items():
        train, cfg = members[idx[0]][0], cfgs[idx[0]]
        val_rows = max((len(members[i][1]) for i in idx if members[i][1] is not None), default=0)
        itemsize = getattr(torch, cfg.dtype).itemsize
        nbytes = member_bytes(
            train.dim, train.num_classes, min(cfg.batch_size, len(train)), len(train),
            train.num_views, val_rows, itemsize,
        )  # fmt: skip
        size = chunk_size(nbytes, budget, f"{method} (D={train.dim}, C={train.num_classes})")
        if device.type == "cpu":
            size = min(size, max(1, CPU_STACK_BYTES // (train.dim * train.dim * itemsize)))
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
