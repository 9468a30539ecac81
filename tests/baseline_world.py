"""Test helpers for the baselines: a tiny random CLIP text tower and a feature simulator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from croft.features.files import FeatureSet


class TinyTextTower(nn.Module):
    """A tiny random open_clip text transformer behind croft's ``TextTower`` protocol.

    CLIP's BPE tokenizer (bundled with open_clip), width 32, 1 layer, context 32.
    """

    def __init__(self, dim: int = 32, width: int = 32, layers: int = 1, seed: int = 0) -> None:
        super().__init__()
        from open_clip.tokenizer import SimpleTokenizer
        from open_clip.transformer import TextTransformer

        torch.manual_seed(seed)
        model = TextTransformer(
            context_length=32, vocab_size=49408, width=width, heads=4, layers=layers, output_dim=dim
        )
        with torch.no_grad():  # make class names matter: larger token embeddings
            model.token_embedding.weight.normal_(0.0, 1.0)
        self.model = model.eval()
        self._tokenizer = SimpleTokenizer(context_length=32)
        self.dim = dim
        self.logit_scale = 100.0

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self._tokenizer(list(texts)).to(self.model.positional_embedding.device)

    def token_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.token_embedding(tokens)

    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = embeds + m.positional_embedding
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
        x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
        return x @ m.text_projection

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model(self.tokenize(texts))


CLASSES = ["dog", "guitar", "house", "elephant", "giraffe"]


@dataclass
class World:
    train: FeatureSet  # domains 0-2, (N, V, D)
    val: FeatureSet  # domains 0-2, (N, D)
    test: FeatureSet  # held-out domain 3, (N, D)
    ood: FeatureSet  # unknown classes, labels -1


def make_world(
    tower: TinyTextTower | None = None,
    dim: int = 32,
    shots: int = 6,
    views: int = 2,
    noise: float = 0.25,
    text_noise: float = 0.15,
    seed: int = 0,
) -> World:
    """Class prototypes + domain shift + noise; text features near the prototypes.

    With ``tower`` the prototypes are the tower's ``"a photo of a {class}."`` features
    (centred), so prompt learners can align with them.
    """
    g = torch.Generator().manual_seed(seed)
    c = len(CLASSES)
    if tower is not None:
        with torch.no_grad():
            t = tower.encode_text([f"a photo of a {n}." for n in CLASSES]).float()
        dim = t.shape[1]
        protos = nn.functional.normalize(t - t.mean(0), dim=-1)
    else:
        protos = nn.functional.normalize(torch.randn(c, dim, generator=g), dim=-1)
    unknown = nn.functional.normalize(torch.randn(3, dim, generator=g), dim=-1)
    shifts = 0.3 * nn.functional.normalize(torch.randn(4, dim, generator=g), dim=-1)
    text = protos[:, None] + text_noise * torch.randn(c, 2, dim, generator=g)  # 2 templates

    def sample(centres: torch.Tensor, per: int, doms: list[int], v: int | None):
        xs, ys, ds = [], [], []
        for d in doms:
            for k in range(centres.shape[0]):
                base = 3.0 * (centres[k] + shifts[d] + noise * torch.randn(per, dim, generator=g))
                if v is not None:
                    base = base[:, None] + 0.3 * torch.randn(per, v, dim, generator=g)
                xs.append(base)
                ys += [k] * per
                ds += [d] * per
        return torch.cat(xs), torch.tensor(ys), torch.tensor(ds)

    def fs(x: torch.Tensor, y: torch.Tensor, d: torch.Tensor) -> FeatureSet:
        return FeatureSet(
            features=x,
            labels=y,
            class_names=list(CLASSES),
            domains=d,
            domain_names=["a", "b", "c", "held"],
            text_features=text,
            templates=["a photo of a {}.", "a {}."],
            logit_scale=100.0,
        )

    train = fs(*sample(protos, shots, [0, 1, 2], views))
    val = fs(*sample(protos, 3, [0, 1, 2], None))
    test = fs(*sample(protos, 10, [3], None))
    xo, _, do = sample(unknown, 10, [3], None)
    ood = fs(xo, torch.full((xo.shape[0],), -1), do)
    return World(train, val, test, ood)
