"""Fit and scoring time of the fitted feature-space scores on a CPU (issue 23).

Synthetic CLIP-like features: ``--fit`` ID rows (default 50,000) of ``--dim`` (768) unit
vectors around ``--classes`` (100) text directions, then ``--score`` (100,000) rows to
score; logits are ``100 · cos`` to the text directions (CLIP's text head, ``b = 0``).
Times Mahalanobis and ViM (fit and score, interleaved repeats, the best of ``--repeat``)
and, for scale, energy on the same rows.

Usage: ``python benchmarks/detectors.py [--threads 1] [--fit 50000] [--score 100000]``
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from croft.scores import SCORES, ScoreInputs


class TextHead:
    """CLIP's text head on unit embeddings: ``logits = 100 · x tᵀ``."""

    def __init__(self, text: torch.Tensor) -> None:
        self.text = text

    def classifier(self) -> tuple[torch.Tensor, torch.Tensor]:
        return 100.0 * self.text, torch.zeros(self.text.shape[0])

    def inputs(self, x: torch.Tensor) -> ScoreInputs:
        logits = 100.0 * x @ self.text.T
        return ScoreInputs(logits=logits, similarities=logits / 100.0, embeddings=x)


def data(text: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` unit rows around the text directions ``(C, D)`` and their labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(text.shape[0], (n,), generator=g)
    x = F.normalize(text[y] + 0.5 * torch.randn(n, text.shape[1], generator=g), dim=1)
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fit", type=int, default=50_000)
    ap.add_argument("--score", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(args.classes, args.dim, generator=g), dim=1)
    head = TextHead(text)
    x_fit, y_fit = data(text, args.fit, 1)
    x_score = data(text, args.score, 2)[0]
    fit_in, score_in = head.inputs(x_fit), head.inputs(x_score)
    best: dict[str, float] = {}
    for _ in range(args.repeat):  # interleaved repeats: each row sees the same load
        for name in ("mahalanobis", "vim"):
            det = SCORES.get(name).detector()
            t0 = time.perf_counter()
            det.fit(fit_in, y_fit, text, head)
            t1 = time.perf_counter()
            s = det.score(score_in)
            t2 = time.perf_counter()
            assert s.shape == (args.score,) and bool(torch.isfinite(s).all())
            for key, value in ((f"{name} fit", t1 - t0), (f"{name} score", t2 - t1)):
                best[key] = min(best.get(key, float("inf")), value)
        t0 = time.perf_counter()
        SCORES.get("energy").detector().score(score_in)
        best["energy score"] = min(best.get("energy score", float("inf")), time.perf_counter() - t0)
    print(
        f"fit {args.fit} x {args.dim}, score {args.score} rows, {args.classes} classes, "
        f"{args.threads} thread(s), best of {args.repeat}"
    )
    print("| step | seconds |\n|---|---|")
    for key, value in best.items():
        print(f"| {key} | {value:.2f} |")


if __name__ == "__main__":
    main()
