"""``croft fit``: feature files in, fitted head out."""

from __future__ import annotations

import argparse

from croft.cli.common import add_set_option, parse_sets


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="fit a method on cached features and save the head",
        description="Fit a method (croft, ce_adapter, zeroshot, ...) on a training feature "
        "file; select the epoch on the validation file; save head.safetensors + head.json.",
    )
    p.add_argument("--train", required=True, help="training feature file (.safetensors)")
    p.add_argument("--val", help="validation feature file (model selection, OOD threshold)")
    p.add_argument("--method", default="croft", help="registered method (croft list methods)")
    add_set_option(p)
    p.add_argument("--out", required=True, help="output directory for the fitted head")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict
    from pathlib import Path

    from croft.evaluation import energy_threshold
    from croft.features import load_features
    from croft.methods import METHODS, make_config, save_head

    spec = METHODS.get(args.method)
    cfg = make_config(spec.config_cls, parse_sets(args.set))
    train = load_features(args.train)
    val = load_features(args.val) if args.val else None
    result = spec.fit(train, val, cfg, device=args.device, progress=not args.quiet)
    extra = {
        "config": asdict(cfg),
        "method": args.method,
        "history": result.history,
        "selected_epoch": result.selected_epoch,
        "prompts": [tpl.format(c) for tpl in train.templates[:1] for c in train.class_names],
        "train_features": str(Path(args.train).resolve()),
        "backbone": train.extra.get("backbone"),
        "backbone_spec": train.extra.get("backbone_spec"),
    }
    if val is not None:
        extra["ood_threshold"] = {
            "score": "energy",
            "tpr": 0.95,
            "value": energy_threshold(result.head, val),
        }
    out = save_head(result.head, args.out, **extra)
    (out / "config.json").write_text(json.dumps(extra["config"], indent=2, sort_keys=True))
    last = result.history[-1] if result.history else {}
    msg = f"saved {args.method} head to {out}"
    if result.selected_epoch is not None and "val_acc" in last:
        best = result.history[result.selected_epoch]["val_acc"]
        msg += f" (epoch {result.selected_epoch}, val acc {best:.3f})"
    print(msg)
    return 0
