"""Few-shot selections: K images per class, seeded with a local RNG.

:func:`few_shot` is the standard per-class draw (CoOp's ``generate_fewshot_dataset``:
K random images of each label, all of them when a class has fewer), optionally spread
as evenly as possible over the domains within each class. Records with label -1 form
one group, as in CoOp (grouping is by label).

:func:`few_shot_authors_balance` reproduces the paper code's
``generate_fewshot_dataset_balance`` as used for PACS training (bug B8): for **each
label** it draws ``int(shots / n_domains)`` images from **each domain, ignoring
class**, so the selection has random class composition and may repeat images.

The result is a new :class:`DatasetIndex` (save it with ``DatasetIndex.save``; paths stay
relative) whose ``meta["few_shot"]`` records the method, shots, seed and the source
index hash. The draws use Python's ``random.Random(seed)``; they are reproducible
here, but cannot equal the authors' draws, which came from the global RNG state.

Ids such as B8 or D7 name behaviours of the authors' code; docs/deviations.md defines them.
"""

from __future__ import annotations

import random
from collections import defaultdict

from croft.data.index import DatasetIndex
from croft.errors import CroftError

MAX_SHOTS = 100_000  # per class; far beyond any few-shot protocol, bounds memory


def _check_shots(shots: int) -> None:
    if not isinstance(shots, int) or isinstance(shots, bool) or not 1 <= shots <= MAX_SHOTS:
        raise CroftError(f"shots must be an integer in [1, {MAX_SHOTS}], got {shots!r}")


def _result(index: DatasetIndex, picked: list[int], info: dict[str, object]) -> DatasetIndex:
    info = {**info, "source_hash": index.hash(), "source_name": index.name}
    records = [index.records[i] for i in picked]
    name = f"{index.name}/{info['method']}-shots{info['shots']}-seed{info['seed']}"
    return index.with_records(records, name=name, meta={**index.meta, "few_shot": info})


def _domain_quotas(
    by_domain: dict[str, list[int]], shots: int, rng: random.Random
) -> dict[str, int]:
    """Spread ``shots`` over domains as evenly as capacity allows (random tie order)."""
    order = sorted(by_domain)
    rng.shuffle(order)
    quota = dict.fromkeys(order, 0)
    left = shots
    while left > 0:
        progressed = False
        for dom in order:
            if left > 0 and quota[dom] < len(by_domain[dom]):
                quota[dom] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return quota


def few_shot(
    index: DatasetIndex, shots: int, seed: int, balance_domains: bool = False
) -> DatasetIndex:
    """At most ``shots`` random records per label (all of a smaller class).

    With ``balance_domains`` the ``shots`` of a class are spread as evenly as possible
    over the domains present in that class (a domain with too few images gives its
    share to the others). Output keeps the index order.
    """
    _check_shots(shots)
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, rec in enumerate(index.records):
        by_label[rec.label].append(i)
    picked: list[int] = []
    for label in sorted(by_label):
        members = by_label[label]
        if not balance_domains:
            picked += members if len(members) <= shots else rng.sample(members, shots)
            continue
        by_domain: dict[str, list[int]] = defaultdict(list)
        for i in members:
            by_domain[index.records[i].domain].append(i)
        quota = _domain_quotas(by_domain, shots, rng)
        for dom in sorted(by_domain):
            picked += rng.sample(by_domain[dom], quota[dom])
    picked.sort()
    info = {"method": "per_class", "shots": shots, "seed": seed, "balance_domains": balance_domains}
    return _result(index, picked, info)


def few_shot_authors_balance(index: DatasetIndex, shots: int, seed: int) -> DatasetIndex:
    """The authors' class-agnostic "balanced" draw (bug B8), kept as the faithful option.

    For each label (sorted), for each domain (sorted): ``int(shots / n_domains)`` random
    images of that domain, whatever their class (all of a smaller domain). Draws for
    different labels are independent, so images may repeat; the output is in draw order.
    """
    _check_shots(shots)
    rng = random.Random(seed)
    by_domain: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(index.records):
        by_domain[rec.domain].append(i)
    per_domain = int(shots / len(by_domain)) if by_domain else 0
    picked: list[int] = []
    for _label in sorted({r.label for r in index.records}):
        for dom in sorted(by_domain):
            pool = by_domain[dom]
            picked += pool if len(pool) <= per_domain else rng.sample(pool, per_domain)
    info = {"method": "authors_balance", "shots": shots, "seed": seed, "per_domain": per_domain}
    return _result(index, picked, info)
