"""``croft diagnose``: energy-gradient norms and per-domain loss Hessians of adapter heads."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose",
        help="energy-gradient norms and per-domain Hessians of fitted adapter heads",
        description="For one or more adapter heads (croft, ce_adapter; e.g. a lambda2 sweep) "
        "measure the per-sample energy-gradient norm per training domain and per set, and the "
        "classification loss's Hessian wrt the adapter per labelled group (Hutchinson trace, "
        "top eigenvalue, cross-domain alignment), plus ||W - I||/sqrt(D). Writes "
        "diagnostics.csv, diagnostics.json and diagnostics.png/.pdf to --out. Run folders "
        "written by 'croft run' (<out>/runs/<label>/<held_out>_seed<k>) need no feature "
        "files: their task (train shots with domains, held-out test, extra targets, OOD sets) "
        "is rebuilt from <out>/config.resolved.json through the feature cache. Given a whole "
        "output folder of 'croft run' or 'croft demo', it diagnoses every (held-out domain, "
        "seed) task: the selected run of each adapter method row, or the runs --select names, "
        "writing OUT_DIR/diagnose/<held_out>_seed<k>/ unless --out is given.",
    )
    p.add_argument(
        "heads",
        nargs="+",
        metavar="HEAD_DIR",
        help="directory written by 'croft fit', a run directory with head/ and features.json, "
        "run folders of 'croft run' of one (held-out domain, seed) task, or one whole output "
        "folder of 'croft run'/'croft demo'",
    )
    p.add_argument(
        "--select",
        default="",
        metavar="LABELS",
        help="with an output folder: comma-separated run labels or shell patterns (e.g. "
        "'croft[*' for a whole grid per task); default: the run each method row reports "
        "(chosen on source validation)",
    )
    p.add_argument(
        "--train",
        help="ID training feature file (with per-sample domains); for 'croft run' folders it "
        "replaces the rebuilt task (then --set names every other set)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a feature file to diagnose (repeatable): the held-out style (labelled) or an "
        "OOD set (labels -1: energy norms only)",
    )
    p.add_argument(
        "--out", help="output directory (default for an output folder: OUT_DIR/diagnose)"
    )
    p.add_argument(
        "--params",
        default="fc_i,fc_t",
        help="adapter matrices the Hessian is taken with respect to (fc_i, fc_t or both)",
    )
    p.add_argument("--probes", type=int, default=32, help="Rademacher probes (default 32)")
    p.add_argument("--power-iters", type=int, default=50, help="power-iteration steps")
    p.add_argument("--max-rows", type=int, default=1000, help="rows per group (0: all)")
    p.add_argument(
        "--temperature",
        type=float,
        default=-1.0,
        help="energy temperature (default: each head's energy_temperature, else 1)",
    )
    p.add_argument("--x", dest="x_key", default="lambda2", help="config key on the x axis")
    p.add_argument("--seed", type=int, default=0, help="seed of probes and subsets")
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    p.add_argument(
        "--no-split-half",
        action="store_true",
        help="skip the split-half Hessian alignment (the sampling ceiling; about 1/3 of the time)",
    )
    p.add_argument(
        "--equal-rows",
        action="store_true",
        help="subsample every labelled group to the smallest one's size before the Hessians "
        "(alignment and curvature then compare like with like)",
    )
    p.add_argument("--no-plots", action="store_true", help="write the table and JSON only")
    p.add_argument(
        "--device",
        default="cpu",
        help="where a 'croft run' task's features are extracted when not cached (default cpu)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _parse_sets(items: list[str]) -> dict[str, str]:
    from croft.errors import CroftError

    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise CroftError(f"--set {item!r}: expected NAME=FILE (e.g. --set heldout=test.st)")
        if name.strip() in out:
            raise CroftError(f"--set {name.strip()!r} given twice; use distinct names")
        out[name.strip()] = path.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from croft.diagnose import DiagnoseOptions, write_diagnostics
    from croft.errors import CroftError
    from croft.experiments.diagnose_folder import is_experiment_folder
    from croft.experiments.diagnose_runs import diagnose_runs, is_experiment_run

    options = DiagnoseOptions(
        params=tuple(p.strip() for p in args.params.split(",") if p.strip()),
        probes=args.probes,
        power_iters=args.power_iters,
        max_rows=args.max_rows,
        energy_temperature=args.temperature,
        seed=args.seed,
        dtype=args.dtype,
        split_half=not args.no_split_half,
        equal_rows=args.equal_rows,
    )
    options.check()
    if len(args.heads) == 1 and is_experiment_folder(args.heads[0]) and not args.train:
        return _whole_folder(args, options)
    if args.select:
        raise CroftError("--select applies to a whole output folder of 'croft run' only")
    if not args.out:
        raise CroftError("give --out DIR (where diagnostics.csv/.json/.png are written)")
    runs = [is_experiment_run(h) for h in args.heads]
    if any(runs) and not args.train:
        if not all(runs):
            other = next(h for h, r in zip(args.heads, runs, strict=True) if not r)
            raise CroftError(
                f"{other} is not a run folder of 'croft run' while the others are; diagnose "
                "either run folders of one task, or heads with --train FILE"
            )
        if args.sets:
            raise CroftError(
                "--set applies with --train only; run folders of 'croft run' bring their own "
                "sets (held-out style, extra targets, OOD sets)"
            )
        result = diagnose_runs(
            args.heads, options, x_key=args.x_key, device=args.device, progress=not args.quiet
        )
        rows, x_name, meta = result.rows, result.x_name, result.meta
    else:
        rows, x_name, meta = _from_files(args, options)
    paths = write_diagnostics(rows, args.out, meta, x_name=x_name, plots=not args.no_plots)
    _print_summary(rows)
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _whole_folder(args: argparse.Namespace, options: Any) -> int:
    """Every task of one output folder, each written to ``<out>/<held_out>_seed<k>/`` as it
    finishes."""
    from pathlib import Path

    from croft.diagnose import write_diagnostics
    from croft.errors import CroftError
    from croft.experiments.diagnose_folder import diagnose_folder, folder_tasks

    if args.sets:
        raise CroftError("--set applies with --train only; an output folder brings its own sets")
    select = [s.strip() for s in args.select.split(",") if s.strip()] or None
    out = Path(args.out) if args.out else Path(args.heads[0]) / "diagnose"
    tasks = folder_tasks(args.heads[0], select)  # every input error before any measurement
    print(f"diagnosing {len(tasks)} task(s), {sum(map(len, tasks.values()))} run(s) -> {out}")

    def write(task: tuple[str, int], result: Any) -> None:
        folder = out / f"{task[0]}_seed{task[1]}"
        paths = write_diagnostics(
            result.rows, folder, result.meta, x_name=result.x_name, plots=not args.no_plots
        )
        _print_summary(result.rows)
        print(f"{task[0]} seed {task[1]}: written " + ", ".join(str(p) for p in paths.values()))

    diagnose_folder(
        args.heads[0],
        options,
        select=select,
        x_key=args.x_key,
        device=args.device,
        progress=not args.quiet,
        on_task=write,
        tasks=tasks,
    )
    return 0


def _from_files(args: argparse.Namespace, options: Any) -> tuple[list[dict], str, dict]:
    """Heads (or run directories) diagnosed on the feature files named by --train/--set
    or a run directory's features.json."""
    from dataclasses import asdict
    from pathlib import Path

    from croft._version import __version__
    from croft.diagnose import diagnose_heads, run_dir_inputs
    from croft.errors import CroftError
    from croft.features import load_features
    from croft.methods import load_head

    set_paths = dict(_parse_sets(args.sets))
    train_path = args.train
    head_dirs: dict[str, Path] = {}
    for item in args.heads:
        head_dir, run_train, run_sets = run_dir_inputs(item)
        train_path = train_path or (str(run_train) if run_train else None)
        for name, path in run_sets.items():
            set_paths.setdefault(name, str(path))
        label = Path(item).resolve().name or "head"
        label = label if label not in head_dirs else f"{label}-{len(head_dirs)}"
        head_dirs[label] = head_dir
    if not train_path:
        raise CroftError("give --train FILE (the ID training features the heads were fitted on)")
    train = load_features(train_path)
    sets = {name: load_features(path) for name, path in set_paths.items()}
    heads = {
        label: load_head(d, expect_dim=train.dim, expect_classes=train.num_classes)
        for label, d in head_dirs.items()
    }
    rows, x_name = diagnose_heads(heads, train, sets, options, x_key=args.x_key)
    meta = {
        "croft_version": __version__,
        "options": {**asdict(options), "params": list(options.params)},
        "heads": {k: str(Path(v).resolve()) for k, v in head_dirs.items()},
        "train": str(Path(train_path).resolve()),
        "sets": {k: str(Path(v).resolve()) for k, v in set_paths.items()},
    }
    return rows, x_name, meta


def _print_summary(rows: list[dict]) -> None:
    from croft.tables import render

    keep = ("energy_grad_norm_mean", "accuracy", "hessian_trace", "hessian_top_eig")
    table: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        if r["quantity"] in keep and not r["other"]:
            table.setdefault((r["head"], r["group"]), {})[r["quantity"]] = f"{r['value']:.4g}"
    body = [[h, g, *(cells.get(q, "") for q in keep)] for (h, g), cells in table.items()]
    print(render(["head", "group", *keep], body))
