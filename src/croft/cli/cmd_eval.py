"""``croft eval``: a fitted head + ID and OOD feature files -> metrics JSON and a table."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="accuracy on an ID (shifted) set, and open-set detection against OOD sets if given",
        description="Evaluate a fitted head: accuracy on --id, and AUROC / FPR95 / AUPR of "
        "each score (higher = more in-distribution) for every --ood set.",
    )
    p.add_argument("head", help="directory written by 'croft fit'")
    p.add_argument("--id", required=True, help="ID feature file (e.g. the held-out domain)")
    p.add_argument(
        "--ood",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="open-set OOD feature file (repeatable); NAME defaults to the file stem; "
        "without any, only accuracy is reported",
    )
    p.add_argument(
        "--bank",
        help="ID training feature file the fitted scores (knn, mahalanobis, vim, neglabel) are "
        "fitted on; without it they use the states saved with the head, if any",
    )
    p.add_argument(
        "--scores",
        help="comma-separated score names (default: energy,mcm,msp,max_logit, and knn when it "
        "can be fitted); 'croft list scores -v' lists them with their parameters",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="SCORE.PARAM=VALUE",
        help="a score parameter, e.g. --param knn.k=50 --param vim.dim=256 (repeatable)",
    )
    p.add_argument("--knn-k", type=int, help=argparse.SUPPRESS)  # deprecated: --param knn.k=K
    p.add_argument(
        "--temperature",
        type=float,
        help="temperature of every requested score that has one (energy, mcm, neglabel)",
    )
    p.add_argument(
        "--id-correct-only",
        action="store_true",
        help="keep only correctly classified ID samples as positives (the authors' evaluator)",
    )
    p.add_argument("--out", help="write metrics JSON here (default: print only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from croft.detector_states import load_states
    from croft.evaluation import convention_detectors, default_scores, evaluate
    from croft.features import load_features
    from croft.methods import load_head
    from croft.scores import SCORES
    from croft.tables import render

    params = _params(args.param)
    if args.knn_k is not None:
        params.setdefault("knn", {}).setdefault("k", args.knn_k)
    id_set = load_features(args.id)
    head = load_head(args.head, expect_dim=id_set.dim, expect_classes=id_set.num_classes)
    saved = {} if args.bank else load_states(args.head)  # --bank: fit afresh
    if args.scores is None:
        scores = [
            n for n in default_scores() if SCORES.get(n).fit is None or args.bank or n in saved
        ]
    else:
        scores = [s.strip() for s in args.scores.split(",") if s.strip()]
    if args.temperature is not None:
        for name in scores:
            if "temperature" in SCORES.get(name).params():
                params.setdefault(name, {}).setdefault("temperature", args.temperature)
    oods = {}
    for item in args.ood:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).stem, item
        oods[name] = load_features(path)
    bank = load_features(args.bank) if args.bank else None
    params = {k: v for k, v in params.items() if k in scores}
    detectors = convention_detectors(head, scores, params, bank, saved=saved)
    ev = evaluate(
        head,
        id_set,
        oods,
        detectors=detectors,
        id_correct_only=args.id_correct_only,
    )
    print(f"accuracy on {Path(args.id).name}: {100 * ev.accuracy:.2f}% ({ev.n_id} images)")
    if not oods:
        print("no --ood set given: accuracy only (add --ood NAME=FILE for detection)")
    rows = []
    for ood_name, per_score in ev.detection.items():
        for score, m in per_score.items():
            rows.append(
                [
                    ood_name,
                    score,
                    f"{100 * m['auroc']:.2f}",
                    f"{100 * m['fpr95_id_pos']:.2f}",
                    f"{100 * m['aupr_in']:.2f}",
                    f"{100 * m['aupr_out']:.2f}",
                ]
            )
    if rows:
        header = ["ood set", "score", "AUROC", "fpr95_id_pos", "aupr_in", "aupr_out"]
        print(render(header, rows))
    if args.out:
        result = {
            "head": str(Path(args.head).resolve()),
            "id": str(Path(args.id).resolve()),
            "ood": {k: str(Path(v.source).resolve()) for k, v in oods.items()},
            "scores": scores,
            "score_params": params,
            "id_correct_only": args.id_correct_only,
            **ev.to_dict(),
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True))
        print(f"metrics written to {args.out}")
    return 0


def _params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``SCORE.PARAM=VALUE`` items as ``{score: {param: value}}`` (the override grammar)."""
    from croft.errors import CroftError
    from croft.overrides import parse_assignment

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        path, value = parse_assignment(item, "--param")
        if len(path) != 2 or not all(isinstance(x, str) for x in path):
            raise CroftError(f"--param {item!r}: write SCORE.PARAM=VALUE, e.g. knn.k=50")
        out.setdefault(str(path[0]), {})[str(path[1])] = value
    return out
