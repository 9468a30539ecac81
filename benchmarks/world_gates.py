"""Gates G1-G6 of the study worlds (docs/world-study.md), on zero-shot, probe and CE adapter.

The world must pass these before any CRoFT run on it; this script fits nothing else.
``--preset study`` is world v2, ``--preset study-v3`` world v3 (v2 with source label
noise; ``--label-noise`` overrides its η; G4 then compares accuracies against the noisy
validation labels, as selection sees them), ``--preset study-v4`` world v4 (v3 with a
shortcut rate per source style; G4 is also reported per source style). Setup-II
leave-one-style-out over photo/painting/cartoon/pixel, seeds 1-5 (``--seeds``; world v3's
study uses 1-10), 16 shots per class balanced over the 3 source styles, 8 training views,
validation = the source styles' whole val split (10 per class and style), sketch an extra
target in every fold.
CE adapter: lr in {1, 4, 16} x 0.002 x (100/s)^2 (the scale-aware rule, s = the
backbone's logit scale), 30 epochs, chosen per (style, seed) on source-validation
accuracy, ties by validation NLL, then the smaller lr.

Training views are RandomResizedCrop(scale=(0.7, 1)) + flip as the design asks, through
the feature store's ``ViewSpec.train_views(..., crop_scale=(0.7, 1))`` (the scale is part
of the store key, so the shared feature cache is safe; ``--cache`` picks another one).

G4 measures the world's shortcut cue as its manifest names it (``layout.shortcut``): the
object's colour (the study world since the change of 2026-12-01) or the background tint
(the superseded first design, ``--shortcut-cue tint``).

    OMP_NUM_THREADS=1 python benchmarks/world_gates.py --out gates.json

``--world-seed S`` (default 0) generates the world with seed S, cached in a folder of its
own (``<preset>-seedS``); a ``--world`` folder that holds a world of another seed is
refused in one line, never replaced.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

SEEN = ("photo", "painting", "cartoon", "pixel")
EXTRA = "sketch"
LR_OFFICIAL = 0.002
CROP_SCALE = (0.7, 1.0)


# ----------------------------------------------------------------------------- features
def _feature_set(fs: Any, rows: dict, records: list, full: Any, text: Any, ood: bool = False):
    from croft.features import FeatureSet

    present = [r for r in records if r in rows]
    idx = torch.tensor([rows[r] for r in present], dtype=torch.long)
    names = list(full.domain_names)
    return FeatureSet(
        features=fs.features[idx],
        labels=torch.full((len(present),), -1) if ood else torch.tensor([r.label for r in present]),
        class_names=list(full.class_names),
        domains=None if ood else torch.tensor([names.index(r.domain) for r in present]),
        domain_names=[] if ood else names,
        text_features=text,
        templates=list(fs.templates),
        logit_scale=fs.logit_scale,
        extra={"paths": [r.path for r in present]},
    )


def _rows(fs: Any, index: Any) -> dict:
    from croft.features import kept_indices

    return {index.records[int(i)]: row for row, i in enumerate(kept_indices(fs).tolist())}


def load_data(root: Path, backbone: Any, seeds: list[int], cache: Path, views: int) -> dict:
    """Feature sets of every (held-out style, seed) task, the extra target and OOD sets."""
    from croft.data import few_shot, read_layout
    from croft.features import ViewSpec, extract_features, extract_text_features

    common = {"cache_dir": str(cache), "batch_size": 256, "workers": 0, "progress": False}
    per = {h: read_layout(root, "oodbench", test_domain=h) for h in (*SEEN, EXTRA)}
    full = per[SEEN[0]]
    shots = {}
    for h in SEEN:
        source = per[h].filter(split="train")
        for s in seeds:
            shots[h, s] = list(few_shot(source, 16, s, balance_domains=True).records)
    train_union = sorted({r for v in shots.values() for r in v}, key=lambda r: r.path)
    eval_union = sorted(
        {r for idx in per.values() for r in idx.records if r.split in ("val", "test")},
        key=lambda r: r.path,
    )
    tr_index, ev_index = full.with_records(train_union), full.with_records(eval_union)
    train_view = ViewSpec.train_views(views, 0, CROP_SCALE)
    tr = extract_features(backbone, tr_index, view=train_view, **common)
    ev = extract_features(backbone, ev_index, view=ViewSpec.eval_view(), **common)
    text = extract_text_features(backbone, list(full.class_names), ["a photo of a {}."])
    tr_rows, ev_rows = _rows(tr, tr_index), _rows(ev, ev_index)

    def ood(path: Path, layout: str, **opt: Any) -> Any:
        index = read_layout(path, layout, **opt)
        fs = extract_features(backbone, index, view=ViewSpec.eval_view(), **common)
        return _feature_set(fs, _rows(fs, index), index.records, full, text, ood=True)

    data: dict[str, Any] = {"tasks": {}, "ood_matched": {}, "text": text}
    for h in SEEN:
        recs = per[h].records
        val = _feature_set(ev, ev_rows, [r for r in recs if r.split == "val"], full, text)
        test = _feature_set(ev, ev_rows, [r for r in recs if r.split == "test"], full, text)
        for s in seeds:
            train = _feature_set(tr, tr_rows, shots[h, s], full, text)
            data["tasks"][h, s] = (train, val, test)
        data["ood_matched"][h] = ood(root / "ood_classes" / h, "folder", ood=True)
    extra = [r for r in per[EXTRA].records if r.split == "test"]
    data["extra"] = _feature_set(ev, ev_rows, extra, full, text)
    data["textures"] = ood(root / "ood_textures", "folder", ood=True)
    data["pooled"] = ood(root / "ood_classes", "domainbed")
    data["cue"] = _cue_agreement(root)
    return data


def _cue_agreement(root: Path) -> dict[str, bool]:
    """``{path under images/: does the image carry its class's shortcut cue}`` (ID images)."""
    man = json.loads((root / "world.json").read_text())
    short = man["layout"].get("shortcut", {"cue": "tint"})
    if short["cue"] == "tint":  # the superseded design: tint index == class index
        tints = json.loads((root / "tints.json").read_text())
        classes = man["id_classes"]
        return {
            p[len("images/") :]: t == classes.index(p.split("/")[2])
            for p, t in tints.items()
            if p.startswith("images/")
        }
    colours = json.loads((root / "colours.json").read_text())
    want = short["values"]
    return {
        p[len("images/") :]: c == want[p.split("/")[2]]
        for p, c in colours.items()
        if p.startswith("images/")
    }


# ----------------------------------------------------------------------------- metrics
@torch.no_grad()
def _logits(head: Any, fs: Any) -> torch.Tensor:
    from croft.evaluation import head_outputs

    return head_outputs(head, fs.eval_features()).logits


def _auroc(head: Any, id_fs: Any, ood_fs: Any) -> float:
    from croft.metrics import auroc
    from croft.scores import energy

    return auroc(energy(_logits(head, id_fs)), energy(_logits(head, ood_fs)))


def _cue_split(head: Any, val: Any, cue: dict[str, bool]) -> tuple[float, float]:
    """Validation accuracy on cue-agreeing and cue-disagreeing images."""
    pred = _logits(head, val).argmax(1)
    ok = (pred == val.labels).numpy()
    agree = np.array([cue[p] for p in val.extra["paths"]])
    return float(ok[agree].mean()), float(ok[~agree].mean())


def _cue_gap_by_source(head: Any, val: Any, cue: dict[str, bool]) -> dict[str, float]:
    """Per source style: validation accuracy on cue-agreeing minus cue-disagreeing images
    (world v4's styles differ in the shortcut rate; reported, not a gate)."""
    pred = _logits(head, val).argmax(1)
    ok = (pred == val.labels).numpy()
    paths = val.extra["paths"]
    agree = np.array([cue[p] for p in paths])
    style = np.array([p.split("/")[0] for p in paths])
    out = {}
    for d in sorted(set(style)):
        sel = style == d
        if agree[sel].any() and (~agree[sel]).any():
            out[d] = float(ok[sel & agree].mean() - ok[sel & ~agree].mean())
    return out


def _w_minus_i(head: Any) -> dict[str, float]:
    out = {}
    for name in ("fc_i", "fc_t"):
        w = getattr(head, name, None)
        if w is not None:
            eye = torch.eye(w.shape[0], dtype=w.dtype)
            out[name] = float(torch.linalg.norm(w - eye) / math.sqrt(w.shape[0]))
    return out


def _acc_nll(head: Any, fs: Any) -> tuple[float, float]:
    logits = _logits(head, fs)
    acc = float((logits.argmax(1) == fs.labels).float().mean())
    nll = float(torch.nn.functional.cross_entropy(logits.double(), fs.labels))
    return acc, nll


def run_task(train: Any, val: Any, test: Any, data: dict, h: str, seed: int, a: Any) -> dict:
    from croft.methods import fit

    s = train.logit_scale
    grid = [m * LR_OFFICIAL * (100.0 / s) ** 2 for m in a.lr_mults]
    heads = {"zeroshot": fit("zeroshot", train, val).head}
    heads["linear_probe"] = fit("linear_probe", train, val).head
    fits = []
    for lr in grid:
        res = fit("ce_adapter", train, val, lr=lr, epochs=a.epochs, seed=seed)
        acc, nll = _acc_nll(res.head, val)
        fits.append((-acc, nll, lr, res))
    _, _, lr, ce = min(fits, key=lambda f: f[:3])
    heads["ce_adapter"] = ce.head
    last = fit("ce_adapter", train, val, lr=lr, epochs=a.epochs, seed=seed, selection="last")
    zs_pred = _logits(heads["zeroshot"], test).argmax(1)
    rec: dict[str, Any] = {"style": h, "seed": seed, "logit_scale": s, "lr_grid": grid}
    for name, head in heads.items():
        m = rec[name] = {}
        m["val_acc"], m["val_nll"] = _acc_nll(head, val)
        m["test_acc"] = _acc_nll(head, test)[0]
        m["sketch_acc"] = _acc_nll(head, data["extra"])[0]
        m["val_acc_cue_agree"], m["val_acc_cue_disagree"] = _cue_split(head, val, data["cue"])
        m["val_cue_gap_by_source"] = _cue_gap_by_source(head, val, data["cue"])
        m["auroc_matched"] = _auroc(head, test, data["ood_matched"][h])
        m["auroc_textures"] = _auroc(head, test, data["textures"])
        m["auroc_pooled"] = _auroc(head, test, data["pooled"])
    for tag, head in (("best", ce.head), ("last", last.head)):
        changed = float((_logits(head, test).argmax(1) != zs_pred).float().mean())
        rec["ce_adapter"][f"changed_{tag}"] = changed
        rec["ce_adapter"][f"w_minus_i_{tag}"] = _w_minus_i(head)
    rec["ce_adapter"]["test_acc_last"] = _acc_nll(last.head, test)[0]
    rec["ce_adapter"].update(lr=lr, lr_mult=lr / grid[0], selected_epoch=ce.selected_epoch)
    rec["ce_adapter"]["val_acc_by_lr"] = [-f[0] for f in fits]
    return rec


# ----------------------------------------------------------------------------- gates
def _gap_by_source(records: list[dict], method: str) -> dict[str, float]:
    """Mean over runs of the per-source-style cue gap (:func:`_cue_gap_by_source`)."""
    gaps: dict[str, list[float]] = {}
    for r in records:
        for d, g in r[method].get("val_cue_gap_by_source", {}).items():
            gaps.setdefault(d, []).append(g)
    return {d: float(np.mean(v)) for d, v in sorted(gaps.items())}


def paired_bootstrap(diffs: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % interval of the mean of paired differences (resampling pairs)."""
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), (n, len(diffs)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def gates(records: list[dict]) -> dict[str, Any]:
    def arr(method: str, key: str) -> np.ndarray:
        return np.array([r[method][key] for r in records], float)

    zs_by_style = {
        h: float(np.mean([r["zeroshot"]["test_acc"] for r in records if r["style"] == h]))
        for h in SEEN
    }
    gap = float(np.mean(arr("linear_probe", "val_acc") - arr("zeroshot", "val_acc")))
    ce_gain = float(np.mean(arr("ce_adapter", "val_acc") - arr("zeroshot", "val_acc")))
    changed = float(np.mean(arr("ce_adapter", "changed_best")))
    kept = int(sum(r["ce_adapter"]["selected_epoch"] == 0 for r in records))

    def cue_gap(method: str) -> float:
        agree, disagree = arr(method, "val_acc_cue_agree"), arr(method, "val_acc_cue_disagree")
        return float(np.mean(agree - disagree))

    shortcut = cue_gap("ce_adapter")
    zs_auroc = float(np.mean(arr("zeroshot", "auroc_matched")))
    diff = arr("ce_adapter", "test_acc") - arr("zeroshot", "test_acc")
    lo, hi = paired_bootstrap(diff)
    out = {
        "G1": {
            "zeroshot_test_acc_by_style": zs_by_style,
            "pass": all(0.55 <= v <= 0.90 for v in zs_by_style.values()),
        },
        "G2": {"probe_minus_zeroshot_val": gap, "pass": gap >= 0.10},
        "G3": {
            "changed_share": changed,
            "val_gain_over_zeroshot": ce_gain,
            "kept_init_runs": kept,
            "runs": len(records),
            "pass": changed >= 0.05 and ce_gain >= 0.05 and kept <= 2,
        },
        "G4": {
            "agree_minus_disagree_val": shortcut,
            "ce_agree_val": float(np.mean(arr("ce_adapter", "val_acc_cue_agree"))),
            "ce_disagree_val": float(np.mean(arr("ce_adapter", "val_acc_cue_disagree"))),
            "zeroshot_agree_minus_disagree_val": cue_gap("zeroshot"),
            "probe_agree_minus_disagree_val": cue_gap("linear_probe"),
            "ce_gap_by_source_style": _gap_by_source(records, "ce_adapter"),
            "pass": shortcut >= 0.10,
        },
        "G5": {"zeroshot_matched_energy_auroc": zs_auroc, "pass": 0.65 <= zs_auroc <= 0.95},
        "G6": {
            "ce_minus_zeroshot_test_acc": float(diff.mean()),
            "ci95": [lo, hi],
            "half_width": (hi - lo) / 2,
            "pass": (hi - lo) / 2 <= 0.02,
        },
    }
    return out


def _summary_table(records: list[dict]) -> str:
    keys = ("val_acc", "test_acc", "sketch_acc", "auroc_matched", "auroc_textures", "auroc_pooled")
    lines = ["method        " + " ".join(f"{k:>15}" for k in keys)]
    for m in ("zeroshot", "linear_probe", "ce_adapter"):
        vals = [100 * np.mean([r[m][k] for r in records]) for k in keys]
        lines.append(f"{m:<14}" + " ".join(f"{v:>15.1f}" for v in vals))
    return "\n".join(lines)


def world_root(world: Path | None, default: Path, seed: int) -> Path:
    """The world folder: ``world`` (refused, exit 2, when it holds a generated world of
    another seed) or the seed-specific ``default``."""
    if world is None:
        return default
    try:
        old = json.loads((world / "world.json").read_text())
    except (OSError, ValueError):
        old = {}
    if isinstance(old, dict) and "croft_world" in old and old.get("seed") != seed:
        print(
            f"world_gates: {world} holds the world of seed {old.get('seed')}, not "
            f"--world-seed {seed}; pass another --world folder (a world of another seed is "
            "never replaced)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return world


def main() -> None:
    from croft.backbones import load_backbone
    from croft.features.store import default_cache_dir
    from croft.fileio import atomic_write_json, cache_dir
    from croft.world import TINY_CLIP_ARCH, generate_world, tiny_clip_checkpoint

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--world", type=Path, default=None, help="world folder (default: cached)")
    p.add_argument("--world-seed", type=int, default=0, help="the world's seed (default 0)")
    p.add_argument("--checkpoint", default=None, help="tiny CLIP weights (default: shipped v2)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--styles", nargs="+", default=list(SEEN))
    p.add_argument("--lr-mults", type=float, nargs="+", default=[1.0, 4.0, 16.0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--cache", type=Path, default=None, help="feature cache (default: croft's)")
    p.add_argument(
        "--shortcut-cue",
        choices=("colour", "tint"),
        default="colour",
        help="the study world's shortcut (tint: the superseded first design)",
    )
    p.add_argument(
        "--preset",
        choices=("study", "study-v3", "study-v4"),
        default="study",
        help="the world: v2 (study), v3 (study-v3: v2 with source label noise) or v4 "
        "(study-v4: v3 with a shortcut rate per source style)",
    )
    p.add_argument(
        "--label-noise", type=float, default=None, help="v3's label noise η (default: preset's)"
    )
    p.add_argument("--out", type=Path, default=Path("world_gates.json"))
    a = p.parse_args()
    t0 = time.perf_counter()
    from croft.world import world_preset

    over: dict[str, Any] = {}
    if a.shortcut_cue != "colour":
        over["shortcut_cue"] = a.shortcut_cue
    if a.label_noise is not None:
        over["label_noise"] = a.label_noise
    world = world_preset(a.preset, **over)
    tag = "".join(f"-{k}{v}" for k, v in over.items())
    cached = cache_dir() / "world" / f"{a.preset}{tag}-seed{a.world_seed}"
    root = world_root(a.world, cached, a.world_seed)
    generate_world(
        root, preset=a.preset, seed=a.world_seed, config=world if over else None, log=print
    )
    ckpt = a.checkpoint or str(tiny_clip_checkpoint("study"))
    backbone = load_backbone(f"openclip:{TINY_CLIP_ARCH}:{ckpt}")
    cache = a.cache or default_cache_dir()
    data = load_data(root, backbone, a.seeds, cache, a.views)
    print(f"features ready in {time.perf_counter() - t0:.0f} s")
    records = []
    for h in a.styles:
        for s in a.seeds:
            torch.manual_seed(s)
            rec = run_task(*data["tasks"][h, s], data, h, s, a)
            records.append(rec)
            ce = rec["ce_adapter"]
            print(
                f"{h:>8} seed {s}: zs {rec['zeroshot']['test_acc']:.3f} "
                f"ce {ce['test_acc']:.3f} (lr x{ce['lr_mult']:g}, epoch {ce['selected_epoch']}) "
                f"lp val {rec['linear_probe']['val_acc']:.3f} [{time.perf_counter() - t0:.0f} s]"
            )
    import os

    result = {
        "gates": gates(records),
        "records": records,
        "checkpoint": ckpt,
        "world": str(root),
        "world_seed": a.world_seed,
        "protocol": {
            "seeds": a.seeds,
            "styles": a.styles,
            "shots": 16,
            "sampling": "balanced",
            "val": "all source val images (10 per class and style)",
            "views": a.views,
            "crop_scale": list(CROP_SCALE),
            "shortcut_cue": a.shortcut_cue,
            "preset": a.preset,
            "label_noise": world.label_noise,
            "epochs": a.epochs,
            "lr_rule": "lr_mult x 0.002 x (100 / s)^2",
            "lr_mults": a.lr_mults,
            "templates": ["a photo of a {}."],
            "score": "energy, all ID test samples positive",
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(),
        },
    }
    result["seconds"] = time.perf_counter() - t0
    atomic_write_json(a.out, result)
    print(_summary_table(records))
    for name, g in result["gates"].items():
        nums = {k: v for k, v in g.items() if k != "pass"}
        print(f"{name}: {'PASS' if g['pass'] else 'FAIL'}  {json.dumps(nums)}")


if __name__ == "__main__":
    main()
