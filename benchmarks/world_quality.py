"""Quality of the built-in world and its tiny CLIP (zero-shot only; no method is tuned here).

Generates the demo world (files on disk, as a user dataset), extracts eval-view features
with the shipped tiny CLIP (or ``--checkpoint``), and prints:

- zero-shot accuracy on the 7 ID classes per style: the 3 demo styles seen in
  pre-training, the held-out one (never seen), and the world's other styles;
- zero-shot energy AUROC (energy = logsumexp(logit_scale * cos), higher = ID; ID = the
  target style's ID images) against held-out classes (same style, and all styles) and
  against textures/noise;
- the gap: a logistic-regression probe on 16-shot source features (C chosen on one half
  of the source-domain val split) vs zero-shot, both on the other half, per held-out style.

Usage: ``.venv/bin/python benchmarks/world_quality.py [--checkpoint DIR] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

PROMPT = "a photo of a {}."


def _features(model, paths: list[Path], transform, batch: int = 256) -> torch.Tensor:
    from PIL import Image

    out = []
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[i : i + batch]])
            out.append(model.encode_image(x))
    return torch.cat(out) if out else torch.zeros(0)


def _array_features(model, images: list[np.ndarray], transform) -> torch.Tensor:
    from PIL import Image

    with torch.no_grad():
        x = torch.stack([transform(Image.fromarray(im)) for im in images])
        return model.encode_image(x)


def _norm(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="tiny CLIP folder (default: shipped)")
    ap.add_argument("--world", default=None, help="world folder (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0, help="world seed")
    ap.add_argument("--probe-seeds", type=int, default=3, help="16-shot draws per held-out style")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)

    import open_clip
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from croft.world import generate_world, load_tiny_clip, world_preset
    from croft.world.generate import iter_world
    from croft.world.render import STYLES

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    t0 = time.time()
    model, tok, ckpt = load_tiny_clip(args.checkpoint)
    pre = ckpt["preprocess_cfg"]
    transform = open_clip.image_transform(
        pre["size"],
        is_train=False,
        mean=pre["mean"],
        std=pre["std"],
        interpolation=pre["interpolation"],
        resize_mode=pre["resize_mode"],
    )
    scale = model.logit_scale.exp().item()
    seen = ckpt["training"]["config"]["styles"]
    cfg = world_preset("demo")
    tmp = None
    if args.world is None:
        tmp = tempfile.TemporaryDirectory(prefix="croft-world-")
        root = Path(tmp.name) / "world"
    else:
        root = Path(args.world)
    t_gen = time.time()
    generate_world(root, "demo", args.seed)
    gen_s = time.time() - t_gen

    classes = cfg.id_classes
    with torch.no_grad():
        text = _norm(model.encode_text(tok([PROMPT.format(c) for c in classes])))

    def logits(f: torch.Tensor) -> torch.Tensor:
        return scale * _norm(f) @ text.T

    def energy(f: torch.Tensor) -> np.ndarray:
        return torch.logsumexp(logits(f), dim=1).numpy()

    t_feat = time.time()
    feats: dict[str, torch.Tensor] = {}
    labels: dict[str, np.ndarray] = {}
    rel: dict[str, list[str]] = {}
    for d in cfg.domains:
        paths, lab = [], []
        for ci, c in enumerate(classes):
            files = sorted((root / "images" / d / c).glob("*.png"))
            paths += files
            lab += [ci] * len(files)
        feats[d] = _features(model, paths, transform)
        labels[d] = np.array(lab)
        rel[d] = [str(p.relative_to(root / "images")) for p in paths]
    ood_cls = {
        d: _features(model, sorted((root / "ood_classes" / d).rglob("*.png")), transform)
        for d in cfg.domains
    }
    tex = _features(model, sorted((root / "ood_textures").rglob("*.png")), transform)
    extra_styles = [s for s in STYLES if s not in cfg.domains]
    extra = {}
    for s in extra_styles:
        items = list(iter_world(replace(cfg, domains=(s,)), args.seed, kinds=("id",)))
        extra[s] = (
            _array_features(model, [it.image for it in items], transform),
            np.array([classes.index(it.name) for it in items]),
        )
    feat_s = time.time() - t_feat

    def auroc(id_s: np.ndarray, ood_s: np.ndarray) -> float:
        y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
        return float(roc_auc_score(y, np.r_[id_s, ood_s]))

    all_ood = torch.cat(list(ood_cls.values()))
    rows = []
    for d in cfg.domains:
        acc = float((logits(feats[d]).argmax(1).numpy() == labels[d]).mean())
        e = energy(feats[d])
        rows.append(
            {
                "style": d,
                "seen_in_pretraining": d in seen,
                "zs_acc": acc,
                "auroc_classes_same_style": auroc(e, energy(ood_cls[d])),
                "auroc_classes_all_styles": auroc(e, energy(all_ood)),
                "auroc_textures": auroc(e, energy(tex)),
            }
        )
    for s, (f, lab) in extra.items():
        rows.append(
            {
                "style": s,
                "seen_in_pretraining": s in seen,
                "not_a_demo_domain": True,
                "zs_acc": float((logits(f).argmax(1).numpy() == lab).mean()),
            }
        )
    all_id = torch.cat([feats[d] for d in cfg.domains])
    pooled = {
        "auroc_classes": auroc(energy(all_id), energy(all_ood)),
        "auroc_textures": auroc(energy(all_id), energy(tex)),
    }

    # ---------------------------------------------------------------- the gap: probe vs ZS
    probe_rows = []
    grid = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
    index = {d: {r: i for i, r in enumerate(rel[d])} for d in cfg.domains}
    for held in cfg.domains:
        split = json.loads((root / f"test_on_{held}.json").read_text())

        def take(rows_: list, index=index) -> tuple[torch.Tensor, np.ndarray]:
            f = torch.stack(
                [feats[r[0].split("/")[0]][index[r[0].split("/")[0]][r[0]]] for r in rows_]
            )
            return f, np.array([r[1] for r in rows_])

        tr_f, tr_y = take(split["train"])
        va_f, va_y = take(split["val"])
        te_f, te_y = take(split["test"])
        res = {"probe_val": [], "zs_val": [], "probe_test": [], "C": []}
        for s in range(args.probe_seeds):
            rng = np.random.default_rng([args.seed, 99, s])
            shots = np.concatenate(
                [
                    rng.choice(np.flatnonzero(tr_y == c), 16, replace=False)
                    for c in range(len(classes))
                ]
            )
            perm = rng.permutation(len(va_y))
            sel, rep = perm[: len(perm) // 2], perm[len(perm) // 2 :]
            x_tr, x_va, x_te = (
                _norm(tr_f[shots]).numpy(),
                _norm(va_f).numpy(),
                _norm(te_f).numpy(),
            )
            best = max(
                grid,
                key=lambda c: (
                    LogisticRegression(C=c, max_iter=2000)
                    .fit(x_tr, tr_y[shots])
                    .score(x_va[sel], va_y[sel])
                ),
            )
            clf = LogisticRegression(C=best, max_iter=2000).fit(x_tr, tr_y[shots])
            res["C"].append(best)
            res["probe_val"].append(clf.score(x_va[rep], va_y[rep]))
            res["zs_val"].append(float((logits(va_f[rep]).argmax(1).numpy() == va_y[rep]).mean()))
            res["probe_test"].append(clf.score(x_te, te_y))
        probe_rows.append(
            {
                "held_out": held,
                "zs_val": float(np.mean(res["zs_val"])),
                "probe_val": float(np.mean(res["probe_val"])),
                "probe_test": float(np.mean(res["probe_test"])),
                "C": res["C"],
            }
        )

    # ---------------------------------------------------------------- report
    tr = ckpt["training"]
    print("# world_quality")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, python {platform.python_version()}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"checkpoint: {ckpt.get('architecture')} world v{ckpt.get('world_version')}, "
        f"logit scale {scale:.2f}, {tr.get('steps_done')} steps in {tr.get('wall_s')} s, "
        f"pre-training styles {seen}"
    )
    print(
        f"world: seed {args.seed}, generated in {gen_s:.1f} s, features in {feat_s:.1f} s; "
        f"prompt {PROMPT!r}"
    )
    print()
    print(
        "| style | in pre-training | zero-shot acc | AUROC vs held-out classes (same style) "
        "| AUROC vs held-out classes (all styles) | AUROC vs textures |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r.get("not_a_demo_domain"):
            yes = "yes" if r["seen_in_pretraining"] else "no"
            print(f"| {r['style']} (not a demo domain) | {yes} | {r['zs_acc']:.3f} | | | |")
        else:
            print(
                f"| {r['style']} | {'yes' if r['seen_in_pretraining'] else 'no'} | "
                f"{r['zs_acc']:.3f} | {r['auroc_classes_same_style']:.3f} | "
                f"{r['auroc_classes_all_styles']:.3f} | {r['auroc_textures']:.3f} |"
            )
    print(
        f"| all 4 demo styles pooled | | | | {pooled['auroc_classes']:.3f} | "
        f"{pooled['auroc_textures']:.3f} |"
    )
    print()
    print(f"Probe vs zero-shot on source-domain val (16 shots/class, {args.probe_seeds} draws):")
    print("| held-out style | zero-shot (source val) | probe (source val) | probe (held-out) | C |")
    print("|---|---|---|---|---|")
    for r in probe_rows:
        print(
            f"| {r['held_out']} | {r['zs_val']:.3f} | {r['probe_val']:.3f} | "
            f"{r['probe_test']:.3f} | {r['C']} |"
        )
    print(f"\ntotal {time.time() - t0:.1f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"styles": rows, "pooled": pooled, "probe": probe_rows, "logit_scale": scale},
                indent=1,
            )
        )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
