"""A word-level tokenizer, described by its vocabulary (the tiny world CLIP uses it).

A checkpoint whose ``open_clip_config.json`` holds ``"tokenizer": {"kind": "word",
"vocab": [...], "context_length": N}`` is tokenized with this class instead of open_clip's
BPE (whose 49,408-word table would dwarf a tiny model).

Ids: ``0`` padding, ``1`` unknown word, ``2`` start of text, then the words, and the
end-of-text token last, so it holds the highest id and open_clip's ``argmax`` text pooling
finds it. Text is lower-cased and split on anything that is not a letter or digit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from croft.errors import CroftError
from croft.fileio import parse_json
from croft.limits import check_limit

if TYPE_CHECKING:
    import torch

__all__ = ["SPECIALS", "WordTokenizer"]

PAD, UNK, SOT, EOT = "<pad>", "<unk>", "<sot>", "<eot>"
SPECIALS = (PAD, UNK, SOT, EOT)
_SPLIT = re.compile(r"[^a-z0-9]+")


class WordTokenizer:
    """Maps texts to ``LongTensor (n, context_length)``: ``<sot> words… <eot> <pad>…``."""

    def __init__(self, vocab: Sequence[str], context_length: int = 12) -> None:
        """``vocab``: the full id -> token list (``<pad> <unk> <sot>`` … ``<eot>``), or plain
        words, to which the special tokens are added."""
        tokens = list(vocab)
        if tokens[:3] != [PAD, UNK, SOT] or tokens[-1] != EOT:
            tokens = [PAD, UNK, SOT, *[w for w in tokens if w not in SPECIALS], EOT]
        if len(set(tokens)) != len(tokens):
            raise CroftError("tokenizer vocabulary has duplicate words")
        if context_length < 3:
            raise CroftError(f"tokenizer context_length must be >= 3, got {context_length}")
        check_limit("context_length", context_length, "tokenizer context_length")
        self.vocab: list[str] = tokens
        self.context_length = int(context_length)
        self._ids = {w: i for i, w in enumerate(tokens)}
        self.pad_id, self.unk_id, self.sot_id = 0, 1, 2
        self.eot_id = len(tokens) - 1

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def from_json(cls, path: str | Path) -> WordTokenizer:
        """The tokenizer stored in a tiny-CLIP config JSON (key ``tokenizer``)."""
        try:
            cfg = parse_json(Path(path).read_text(), str(path))["tokenizer"]
            return cls(cfg["vocab"], int(cfg["context_length"]))
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise CroftError(f"cannot read a word tokenizer from {path}: {exc}") from exc

    def to_dict(self) -> dict[str, object]:
        return {"kind": "word", "context_length": self.context_length, "vocab": self.vocab}

    @staticmethod
    def words(text: str) -> list[str]:
        return [w for w in _SPLIT.split(text.lower()) if w]

    def encode(self, text: str) -> list[int]:
        """Ids of one text, ``<sot>`` and ``<eot>`` included, truncated, not padded."""
        ids = [self._ids.get(w, self.unk_id) for w in self.words(text)]
        return [self.sot_id, *ids[: self.context_length - 2], self.eot_id]

    def decode(self, ids: Sequence[int]) -> str:
        """The words of ``ids`` (special tokens dropped, unknown words as ``<unk>``)."""
        out = []
        for i in ids:
            i = int(i)
            if i in (self.pad_id, self.sot_id, self.eot_id):
                continue
            out.append(self.vocab[i] if 0 <= i < len(self.vocab) else UNK)
        return " ".join(out)

    def __call__(
        self, texts: str | Sequence[str], context_length: int | None = None
    ) -> torch.Tensor:
        import torch

        if isinstance(texts, str):
            texts = [texts]
        n = self.context_length if context_length is None else int(context_length)
        if n != self.context_length:
            raise CroftError(f"this tokenizer has context length {self.context_length}, not {n}")
        out = torch.zeros(len(texts), n, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out
