"""Fit time of every baseline on Setup-II-shaped synthetic features (CPU by default).

Features: 7 classes x 16 shots x 3 training domains = 336 images, 8 cached views, D = 512,
one text template; validation 7 x 4 x 3, test 7 x 50 from a held-out domain. The prompt
learners (CoOp, CoCoOp, DPLCLIP) train through a tiny random text tower (width 64,
1 layer, 77 tokens, output 512); a second table times the text encoder they really run,
a random CLIP ViT-B/16-size text transformer (width 512, 12 layers, 8 heads, 77 tokens),
forward + backward, for the sequences one training step encodes.

Usage: ``python benchmarks/baselines_fit.py [--threads N] [--device cpu] [--skip-clip-tower]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

import croft.methods as M
from croft.features.files import FeatureSet
from croft.methods.prompts.prompting import ClassPrompts, frozen


class RandomTextTower(nn.Module):
    """A random open_clip text transformer behind croft's ``TextTower`` protocol."""

    def __init__(self, width: int, layers: int, heads: int, dim: int = 512, ctx: int = 77) -> None:
        super().__init__()
        from open_clip.tokenizer import SimpleTokenizer
        from open_clip.transformer import TextTransformer

        self.model = TextTransformer(
            context_length=ctx, vocab_size=49408, width=width, heads=heads, layers=layers,
            output_dim=dim,
        ).eval()  # fmt: skip
        self._tok = SimpleTokenizer(context_length=ctx)
        self.dim, self.logit_scale = dim, 100.0

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self._tok(list(texts)).to(self.model.positional_embedding.device)

    def token_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.token_embedding(tokens)

    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.ln_final(m.transformer(embeds + m.positional_embedding, attn_mask=m.attn_mask))
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ m.text_projection

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model(self.tokenize(texts))


CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]


def setup2_world(
    tower: RandomTextTower, seed: int = 0
) -> tuple[FeatureSet, FeatureSet, FeatureSet]:
    """Class prototypes = the tower's centred ``"a photo of a {c}."`` features."""
    g = torch.Generator().manual_seed(seed)
    c, d = len(CLASSES), 512
    with torch.no_grad():
        t = tower.encode_text([f"a photo of a {n}." for n in CLASSES]).float().cpu()
    common = F.normalize(torch.randn(d, generator=g), dim=0)
    protos = F.normalize(common + 0.5 * F.normalize(t - t.mean(0), dim=-1), dim=-1)
    shifts = 0.3 * F.normalize(torch.randn(4, d, generator=g), dim=-1)
    text = (protos + 0.6 * F.normalize(torch.randn(c, d, generator=g), dim=-1))[:, None]

    def make(per: int, doms: list[int], views: int | None) -> FeatureSet:
        xs, ys, ds = [], [], []
        for dom in doms:
            for k in range(c):
                x = 10 * (protos[k] + shifts[dom] + 0.1 * torch.randn(per, d, generator=g))
                if views:
                    x = x[:, None] + 0.3 * torch.randn(per, views, d, generator=g)
                xs.append(x)
                ys += [k] * per
                ds += [dom] * per
        return FeatureSet(
            torch.cat(xs), torch.tensor(ys), list(CLASSES), torch.tensor(ds),
            ["art", "cartoon", "photo", "sketch"], text, ["a photo of a {}."], 100.0,
        )  # fmt: skip

    return make(16, [0, 1, 2], 8), make(4, [0, 1, 2], None), make(50, [3], None)


def fit_table(device: str) -> None:
    torch.manual_seed(0)
    tower = RandomTextTower(width=64, layers=1, heads=4).to(device)
    train, val, test = setup2_world(tower)
    prompt = {"text_tower": tower}
    runs: list[tuple[str, str, dict]] = [
        ("zeroshot", "zeroshot", {}),
        ("linear_probe", "linear_probe", {}),
        ("clip_adapter", "clip_adapter", {}),
        ("tip_adapter", "tip_adapter", {}),
        ("tip_adapter_f", "tip_adapter_f", {}),
        ("ce_adapter", "ce_adapter", {}),
        ("croft official", "croft", {}),
        ("croft paper", "croft", {"variant": "paper"}),
        ("wise(ce_adapter)", "wise", {}),
        ("coop*", "coop", prompt),
        ("cocoop*", "cocoop", prompt),
        ("dplclip* image", "dplclip", prompt),
        ("dplclip* train_mean", "dplclip", {**prompt, "test_prompt": "train_mean"}),
    ]
    print(f"{'method':22s} {'fit s':>8s} {'val acc':>8s} {'test acc':>9s}")
    for label, name, opts in runs:
        t0 = time.perf_counter()
        res = M.fit(name, train, val, device=device, **opts)
        sec = time.perf_counter() - t0
        with torch.no_grad():
            h = res.head
            acc_v = (h.predict(val.eval_features()).cpu() == val.labels).float().mean()
            acc_t = (h.predict(test.eval_features()).cpu() == test.labels).float().mean()
        print(f"{label:22s} {sec:8.2f} {float(acc_v):8.3f} {float(acc_t):9.3f}", flush=True)
    print("* tiny random text tower (width 64, 1 layer, 77 tokens); see the next table")


def tower_table(device: str, repeats: int = 2) -> None:
    tower = RandomTextTower(width=512, layers=12, heads=8).to(device)
    n_par = sum(p.numel() for p in tower.parameters())
    print(f"\nCLIP ViT-B/16-size random text tower ({n_par / 1e6:.1f}M params), {device}:")
    print(f"{'what':44s} {'seqs':>5s} {'s/step':>8s}")
    with frozen(tower):
        prompts = ClassPrompts(tower, CLASSES, 16, device)
        ctx = nn.Parameter(torch.randn(16, 512, device=device) * 0.02)
        cases = [
            ("CoOp train step (C prompts)", 1, True),
            ("DPLCLIP train step (3 domains x C)", 3, True),
            ("CoCoOp train step (batch 32 x C)", 32, True),
            ("CoCoOp/DPLCLIP predict, per image (C)", 1, False),
        ]
        for label, b, grad in cases:
            c = ctx if b == 1 else ctx[None].expand(b, -1, -1)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                with torch.set_grad_enabled(grad):
                    out = prompts.encode(c)
                    if grad:
                        out.sum().backward()
                if device != "cpu":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            print(f"{label:44s} {b * len(CLASSES):5d} {min(times):8.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-clip-tower", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    fit_table(args.device)
    if not args.skip_clip_tower:
        tower_table(args.device)


if __name__ == "__main__":
    main()
