"""``croft fit``: feature files in, fitted head out (:func:`croft.methods.fit_and_save`)."""

from __future__ import annotations

import argparse

from croft.cli.cmd_list import HelpOptionsAction
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
    p.add_argument(
        "--help-options",
        nargs="?",
        metavar="METHOD",
        action=HelpOptionsAction,
        help="print the options of --method (given before it) or of METHOD, and exit",
    )
    add_set_option(p)
    p.add_argument("--out", required=True, help="output directory for the fitted head")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from croft.methods import fit_and_save

    result, out = fit_and_save(
        args.method,
        args.train,
        args.out,
        args.val,
        device=args.device,
        progress=not args.quiet,
        options=parse_sets(args.set),
    )
    msg = f"saved {args.method} head to {out}"
    sel, last = result.selected_epoch, result.history[-1] if result.history else {}
    if sel is not None and "val_acc" in last:
        msg += f" (epoch {sel}, val acc {result.history[sel]['val_acc']:.3f})"
        if result.selection.get("kept_init"):
            msg += "; the selected model is its initialisation (see the warning)"
    print(msg)
    return 0
