"""Fit worker processes: an experiment's runs spread over one-thread processes.

``croft run`` and ``croft demo`` extract features once in the parent (through the
feature cache), then start ``n`` worker processes with the ``spawn`` context (a fresh
interpreter: no forked torch or OpenMP state). Worker ``j`` is a ``--shard`` of the same
output folder (:func:`croft.experiments.runner.shard_of`): it runs
:func:`~croft.experiments.protocols.run_experiment` with one torch thread on its part of
the grid (the features come from the cache), and writes its own run folders. A run's
result does not depend on the worker that fits it, or on which other runs share its
batched fit (``tests/test_fit_workers.py``); the report then reads the folder as one.

Progress (one message per finished run) and errors come back on a queue: a worker's
:class:`~croft.errors.CroftError` is raised again in the parent as the same one-line
error (the CLI's exit 2), any other failure as a ``RuntimeError`` with the worker's
traceback; the other workers are then stopped (finished runs stay, an interrupted one is
redone by a rerun). A worker whose parent is gone (``croft run`` killed, even with
SIGKILL) exits within a second (:func:`_watch_parent`): an orphan would go on writing
into the output folder under a rerun's feet.

Why processes: two one-thread processes scale 1.7-1.8x on the 2-core reference machine
where a second torch thread inside one process gains nothing for these small matmuls
(issue 22, BENCHMARKS.md). How many: :func:`fit_workers`.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from croft.errors import CroftError

log = logging.getLogger(__name__)

ENV = "CROFT_FIT_WORKERS"


def fit_workers(
    requested: int | None = None, *, device: str = "cpu", runs: int | None = None
) -> int:
    """How many fit workers: ``requested`` (``--workers-fit``), else ``CROFT_FIT_WORKERS``,
    else one per CPU this process may use on a CPU device (one on CUDA: the runs share
    one accelerator); never more than ``runs`` (the runs left to fit), at least 1."""
    from croft.provenance import available_cpus

    if requested is None:
        value = os.environ.get(ENV, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise CroftError(f"{ENV}={value!r}: give a whole number of workers, at least 1")
            requested = int(value)
    elif int(requested) < 1:
        raise CroftError(f"--workers-fit {requested}: give at least 1")
    if requested is None:
        requested = available_cpus() if str(device).startswith("cpu") else 1
    n = int(requested)
    return max(1, min(n, runs)) if runs is not None else n


def worker_shards(n: int, shard: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """The ``--shard`` of each of ``n`` workers; within ``shard=(K, N)`` the parts
    ``(K + N·j, N·n)``, ``j < n``, which split exactly part K of N
    (``x mod N·n ≡ K-1 (mod N)`` iff ``x mod N = K-1``)."""
    k, parts = shard or (1, 1)
    return [(k + parts * j, parts * n) for j in range(n)]


def _watch_parent(parent: int, every: float = 0.5) -> threading.Thread:
    """A daemon thread that ends this process (exit 1, no cleanup: an unfinished run stays a
    temporary folder that readers skip and a rerun redoes) once its parent ``parent`` is
    gone, i.e. when it has been re-parented."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    t = threading.Thread(target=watch, name="watch-parent", daemon=True)
    t.start()
    return t


def _worker(  # noqa: ANN202
    run: Callable[..., Any],
    cfg: Any,
    out: str,
    shard: tuple[int, int],
    messages: Any,
    parent: int | None = None,
):
    """One worker: one torch thread, ``run`` (``run_experiment``, passed by reference so
    this module imports no protocol code) on its shard of ``cfg`` into ``out``; reports on
    ``messages``: ``("run", shard)`` per finished run, then ``("done", shard)`` or
    ``("croft" | "crash", shard, text)``. Exits when process ``parent`` is gone."""
    if parent is not None:
        _watch_parent(parent)
    os.environ["CROFT_THREADS"] = "1"  # run_threads reads it
    os.environ[ENV] = "1"
    try:
        import torch

        torch.set_num_threads(1)

        def report(_metrics: Any) -> None:
            messages.put(("run", shard))

        run(cfg, out, progress=False, shard=shard, workers=1, on_result=report)
        messages.put(("done", shard))
    except CroftError as exc:
        messages.put(("croft", shard, str(exc)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        messages.put(("crash", shard, traceback.format_exc()))


def run_in_workers(
    run: Callable[..., Any],
    cfg: Any,
    out: str | os.PathLike[str],
    n: int,
    *,
    shard: tuple[int, int] | None = None,
    on_result: Callable[[], None] | None = None,
    start_method: str = "spawn",
) -> None:
    """Fit ``cfg``'s runs (those of ``shard``, if given) into ``out`` with ``n`` worker
    processes, each calling ``run`` (:func:`~croft.experiments.protocols.run_experiment`:
    a module-level function, pickled by name); ``on_result()`` once per finished run.
    Returns when every worker is done; raises the first worker's error (the others are
    stopped)."""
    import multiprocessing as mp

    ctx = mp.get_context(start_method)
    messages = ctx.Queue()
    shards = worker_shards(n, shard)
    procs = {
        s: ctx.Process(
            target=_worker,
            args=(run, cfg, str(Path(out)), s, messages, os.getpid()),
            name=f"fit-{s[0]}",
        )
        for s in shards
    }
    for p in procs.values():
        p.start()
    log.info("fitting with %d worker processes (one torch thread each)", n)
    finished: set[tuple[int, int]] = set()
    dead_since: dict[tuple[int, int], float] = {}
    try:
        while len(finished) < len(procs):
            try:
                msg = messages.get(timeout=0.5)
            except queue_mod.Empty:
                _check_alive(procs, finished, dead_since)
                continue
            kind, who = msg[0], tuple(msg[1])
            if kind == "run":
                if on_result is not None:
                    on_result()
            elif kind == "done":
                finished.add(who)
            elif kind == "croft":
                raise CroftError(msg[2])
            else:
                raise RuntimeError(f"fit worker {who[0]}/{who[1]} failed:\n{msg[2]}")
    finally:
        _stop(procs.values())


def _check_alive(procs: dict, finished: set, dead_since: dict[Any, float]) -> None:
    """Raise when a worker exited without its last message (killed, out of memory); its
    message may still be in flight, so it gets two seconds."""
    for s, p in procs.items():
        if s in finished or p.exitcode is None:
            continue
        first = dead_since.setdefault(s, time.monotonic())
        if time.monotonic() - first > 2.0:
            raise RuntimeError(
                f"fit worker {s[0]}/{s[1]} exited with code {p.exitcode} before finishing "
                "(killed? out of memory?); rerun to resume (finished runs are kept)"
            )


def _stop(procs: Sequence[Any] | Any) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)


__all__ = ["ENV", "fit_workers", "run_in_workers", "worker_shards"]
