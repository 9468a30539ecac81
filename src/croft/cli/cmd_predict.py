"""``croft predict``: a fitted head + image files in, class / confidence / energy / OOD out."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "predict",
        help="classify image files with a fitted head and flag OOD ones",
        description="Encode each image with the head's backbone (stored in head.json by "
        "'croft fit', or --backbone) and print its class, confidence (max softmax), energy "
        "score (logsumexp of the logits; higher = more in-distribution) and OOD flag "
        "(energy below the head's stored threshold). Directories are searched recursively "
        "for image files.",
    )
    p.add_argument("head", metavar="HEAD_DIR", help="directory written by 'croft fit --out'")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories")
    p.add_argument(
        "--backbone",
        metavar="SPEC",
        help="backbone spec (default: the one stored with the head); must match the "
        "head's backbone fingerprint",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default cpu)")
    p.add_argument(
        "--precision",
        choices=["fp32", "fp16", "bf16"],
        help="backbone precision (default: that of the head's training features)",
    )
    p.add_argument("--format", choices=["table", "jsonl"], default="table", help="output format")
    p.add_argument(
        "--out",
        metavar="FILE",
        help="also write the predictions to FILE: .csv or .jsonl (by its suffix)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per forward (default 64)")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip (and list on stderr) files that are not decodable images instead of failing",
    )
    p.set_defaults(func=run)


def expand_images(items: list[str]) -> list[str]:
    """Files as given; directories replaced by their image files (recursive, sorted)."""
    from pathlib import Path

    from croft.data.images import list_images
    from croft.errors import CroftError

    out: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise CroftError(
                    f"no image files under {item} (extensions .jpg .png .bmp .gif .tif .webp); "
                    "pass image files or a folder holding some"
                )
            out.extend(str(path / rel) for rel in found)
        else:
            out.append(item)
    return out


def _reason(exc: Exception) -> str:
    """A :class:`BadImageError` line without its dataset-oriented fix hint."""
    return str(exc).split("; replace or delete the file", 1)[0]


def json_line(row: dict[str, object]) -> str:
    """``row`` as one JSON line that is safe on a terminal: JSON escapes C0 controls; the C1
    ones (``\\x9b`` starts an escape sequence too) and line separators are escaped here."""
    import json

    text = json.dumps(row, ensure_ascii=False)
    return "".join(c if not _unsafe(c) else f"\\u{ord(c):04x}" for c in text)


def _unsafe(char: str) -> bool:
    return "\x7f" <= char <= "\x9f" or char in "\u2028\u2029" or "\ud800" <= char <= "\udfff"


def _fmt_ood(flag: bool | None) -> str:
    return "-" if flag is None else ("OOD" if flag else "ID")


def run(args: argparse.Namespace) -> int:
    import sys

    from croft.errors import CroftError, printable

    if args.batch_size < 1:
        raise CroftError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.out:
        from pathlib import Path

        from croft.predict_io import FORMATS

        if Path(args.out).suffix.lower() not in FORMATS:
            raise CroftError(f"--out {args.out}: name the file .csv or .jsonl")
    paths = expand_images(args.images)

    from croft.data.images import BadImageError
    from croft.predict import load_predictor

    predictor = load_predictor(
        args.head, backbone=args.backbone, device=args.device, precision=args.precision
    )
    skipped: list[str] = []

    def on_bad(path: str, exc: Exception) -> None:
        skipped.append(path)
        print(f"croft: skipped: {printable(_reason(exc))}", file=sys.stderr)

    try:
        preds = predictor.predict(
            paths, batch_size=args.batch_size, on_bad_image=on_bad if args.skip_bad else None
        )
    except BadImageError as exc:
        raise CroftError(
            f"{_reason(exc)}; pass only image files, or --skip-bad to skip unreadable ones"
        ) from None
    if not preds:
        raise CroftError(
            f"none of the {len(paths)} files could be read as images (listed above); "
            "pass image files"
        )
    if args.format == "jsonl":
        for pr in preds:
            print(json_line(pr.to_dict()))
    else:
        from croft.tables import render

        rows = [
            [
                printable(pr.source),
                printable(pr.class_name),
                f"{pr.confidence:.3f}",
                f"{pr.energy:.3f}",
                _fmt_ood(pr.is_ood),
            ]
            for pr in preds
        ]
        print(render(["image", "class", "confidence", "energy", "ood"], rows))
        if predictor.threshold is not None:
            note = f"OOD = energy < {predictor.threshold:.3f} (the head's stored threshold)"
        else:
            note = "no OOD threshold stored with this head (fit with --val to get one)"
        print(f"croft: {note}", file=sys.stderr)
    if skipped:
        print(f"croft: skipped {len(skipped)} unreadable file(s)", file=sys.stderr)
    if args.out:
        from croft.predict_io import write_predictions

        path = write_predictions(preds, args.out)
        print(f"croft: {len(preds)} predictions written to {path}", file=sys.stderr)
    return 0
