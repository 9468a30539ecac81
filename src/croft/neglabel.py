"""NegLabel (Jiang et al., ICLR 2024): negative labels mined from a word list.

Fit (no training): every candidate word ``w`` of a large word list becomes the prompt
``template.format(w)``, encoded once by the frozen text tower (the caller's
``encode_text``; :mod:`croft.evaluation` loads it from the head's backbone and caches the
result per backbone and list), and so do the ``C`` ID class names. NegMining keeps the
``n_negatives`` words *farthest* from the ID classes: a word's distance is the
``eta``-quantile of its negative cosine similarities to the ID class prompts
(``eta = 0.05``: close to the similarity to its nearest class). Scoring reads the
head's own ID similarities; for heads that adapt the image embedding (CRoFT's adapters)
the negatives stay in the frozen tower's space, so NegLabel is the paper's score only
on zero-shot-like heads. The kept negatives are
shuffled (``seed``) into ``groups`` groups of near-equal size.

Score (higher = more in-distribution), per image with ID cosines ``s`` ``(C,)`` and
negative cosines ``n_g`` of group ``g``, temperature ``τ``::

    S_g = Σ_c e^{s_c/τ} / (Σ_c e^{s_c/τ} + Σ_{j∈g} e^{n_j/τ}),    score = mean_g S_g

(the paper's sum of ID softmax mass among ID + negative labels, with its grouping
strategy). The paper's defaults: ``n_negatives = 10000``, ``eta = 0.05``, ``groups = 100``,
``τ = 0.01``.

Word lists: ``words: wordfreq`` takes the ``n_words`` most frequent English words of the
`wordfreq` package (optional extra ``croft[neglabel]``; its data ship with it, nothing is
downloaded). The paper mines WordNet's nouns and adjectives; wordfreq has no
part-of-speech tags, so its list mixes in verbs and function words (a deviation; pass a
file of WordNet nouns and adjectives to follow the paper). ``words: PATH`` reads one word
per line (``#`` comments and blank lines skipped). ID class names are never negatives.
Candidates that encode identically (a small vocabulary's unknown-word token) count once.
The mined words and their unit text features are the detector's saved state.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from croft.errors import CroftError
from croft.score_base import DetectorState, ScoreInputs, _matrix, _positive

log = logging.getLogger(__name__)

__all__ = ["load_words", "mine_negatives", "neglabel", "words_digest"]

MAX_WORDS = 1_000_000
MAX_WORD_FILE_BYTES = 64 << 20


def load_words(source: str, n_words: int = 70_000) -> list[str]:
    """Candidate words: ``wordfreq`` (the ``n_words`` most frequent English words) or a
    text file path (one word or phrase per line). Deduplicated, order kept."""
    if source == "wordfreq":
        try:
            import wordfreq  # type: ignore[import-not-found]
        except ImportError:
            raise CroftError(
                "neglabel: words: wordfreq needs the wordfreq package (pip install "
                "'croft-ood[neglabel]'), or pass words: FILE with one word per line"
            ) from None
        raw = [w for w in wordfreq.top_n_list("en", int(n_words)) if w.isalpha()]
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise CroftError(
                f"neglabel: word list {source!r} is neither 'wordfreq' nor a file; "
                "pass a text file with one word per line"
            )
        if path.stat().st_size > MAX_WORD_FILE_BYTES:
            raise CroftError(f"neglabel: {path} is over {MAX_WORD_FILE_BYTES >> 20} MiB")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CroftError(f"neglabel: cannot read word list {path}: {exc}") from None
        raw = [ln.strip() for ln in text.splitlines()]
        raw = [w for w in raw if w and not w.startswith("#")]
    words = list(dict.fromkeys(raw))
    if len(words) > MAX_WORDS:
        raise CroftError(f"neglabel: {len(words)} words, more than {MAX_WORDS}")
    if not words:
        raise CroftError(f"neglabel: the word list {source!r} holds no word")
    return words


def words_digest(words: Sequence[str], template: str) -> str:
    """A short digest of a word list and prompt template (the text-feature cache key)."""
    h = hashlib.sha256(template.encode())
    for w in words:
        h.update(b"\0" + w.encode())
    return h.hexdigest()[:16]


def mine_negatives(
    class_text: Tensor, word_text: Tensor, n_negatives: int, eta: float = 0.05
) -> Tensor:
    """Indices of the ``n_negatives`` candidates farthest from the ID classes (NegMining).

    ``class_text`` ``(C, D)``, ``word_text`` ``(W, D)`` (normalised here); a candidate's
    distance is ``quantile_eta(-cos(word, class_c))`` over the ``C`` classes. Returns
    ``(min(n_negatives, W),)`` indices, farthest first (ties: lower index first)."""
    t = F.normalize(_matrix(class_text, "class_text", "neglabel").double(), dim=1)
    w = F.normalize(_matrix(word_text, "word_text", "neglabel").double(), dim=1)
    if not 0.0 <= float(eta) <= 1.0:
        raise CroftError(f"neglabel: eta={eta!r} must lie in [0, 1]")
    dist = torch.cat([torch.quantile(-(c @ t.T), float(eta), dim=1) for c in w.split(8192)])
    order = torch.sort(dist, descending=True, stable=True).indices
    return order[: int(n_negatives)]


def neglabel(
    similarities: Tensor,
    embeddings: Tensor,
    negatives: Tensor,
    groups: Tensor,
    temperature: float = 0.01,
    chunk_size: int = 4096,
) -> Tensor:
    """The grouped NegLabel score (module docstring): ID cosines ``(N, C)``, embeddings
    ``(N, D)``, unit negative text features ``(M, D)``, group index per negative ``(M,)``
    -> ``(N,)`` in ``(0, 1]``."""
    s = _matrix(similarities, "similarities", "neglabel")
    x = _matrix(embeddings, "embeddings", "neglabel", "(N, D)")
    t = _positive(temperature, "temperature", "neglabel")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    neg = negatives.to(device=x.device, dtype=dtype)
    g = groups.to(device=x.device).long()
    n_groups = int(g.max()) + 1 if g.numel() else 0
    out = torch.empty(x.shape[0], dtype=dtype, device=x.device)
    with torch.no_grad():
        for a in range(0, x.shape[0], max(1, int(chunk_size))):
            pos = s[a : a + chunk_size].to(dtype) / t
            lse_pos = torch.logsumexp(pos, dim=1)
            nz = F.normalize(x[a : a + chunk_size].to(dtype), dim=1) @ neg.T / t
            if n_groups == 0:
                out[a : a + pos.shape[0]] = 1.0
                continue
            # logsumexp of each group's negatives: max-shifted sum, scattered by group
            m = nz.amax(dim=1, keepdim=True)
            sums = torch.zeros(pos.shape[0], n_groups, dtype=dtype, device=x.device)
            sums.index_add_(1, g, torch.exp(nz - m))
            lse_neg = m + torch.log(sums)
            both = torch.logaddexp(lse_pos[:, None], lse_neg)
            out[a : a + pos.shape[0]] = torch.exp(lse_pos[:, None] - both).mean(dim=1)
    return out


def _fit_neglabel(
    id_inputs: ScoreInputs,
    labels: Tensor | None,
    text_features: Tensor | None,
    head: Any,
    *,
    words: str = "wordfreq",
    n_words: int = 70_000,
    n_negatives: int = 10_000,
    eta: float = 0.05,
    groups: int = 100,
    template: str = "a photo of a {}.",
    seed: int = 0,
    encode_text: Callable[[list[str]], Tensor] | None = None,
) -> DetectorState:
    """Mine the negatives (module docstring) with the text tower ``encode_text``: the words
    and the ID class names, both through ``template``."""
    if encode_text is None:
        raise CroftError(
            "neglabel needs the backbone's text tower (encode_text) to mine words; the head "
            "records no backbone_spec"
        )
    if "{}" not in template:
        raise CroftError(f"neglabel: template {template!r} has no '{{}}' for the word")
    names = list(getattr(head, "class_names", []) or [])
    if not names:
        raise CroftError("neglabel needs the head's class names")
    ids = {c.lower() for c in names}
    cand = [w for w in load_words(words, n_words) if w.lower() not in ids]
    feats = encode_text([template.format(w) for w in cand]).double()
    _, inverse = torch.unique(feats, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(cand), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(cand)), reduce="amin")
    keep = first.sort().values
    if keep.numel() < len(cand):
        log.info(
            "neglabel: %d of %d words encode alike; kept once", len(cand) - keep.numel(), len(cand)
        )
    cand, feats = [cand[i] for i in keep.tolist()], feats[keep]
    n = int(n_negatives)
    if n < 1 or int(groups) < 1:
        raise CroftError("neglabel: n_negatives and groups must be positive integers")
    class_text = encode_text([template.format(c) for c in names]).double()
    idx = mine_negatives(class_text, feats, n, eta)
    gen = torch.Generator().manual_seed(int(seed))
    idx = idx[torch.randperm(idx.numel(), generator=gen)]
    n_groups = min(int(groups), idx.numel())
    group = torch.arange(idx.numel()) * n_groups // max(1, idx.numel())
    chosen = [cand[i] for i in idx.tolist()]
    return DetectorState(
        {"negatives": F.normalize(feats[idx], dim=1).float(), "groups": group},
        {"words": chosen, "source": words, "template": template, "candidates": len(cand)},
    )
