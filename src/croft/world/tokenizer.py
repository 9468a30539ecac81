"""The tiny world CLIP's word-level tokenizer (defined in :mod:`croft.backbones`).

It lives with the backbones because any checkpoint whose ``open_clip_config.json``
describes a word vocabulary is tokenized with it; the world re-exports it here.
"""

from croft.backbones.word_tokenizer import EOT, PAD, SOT, SPECIALS, UNK, WordTokenizer

__all__ = ["EOT", "PAD", "SOT", "SPECIALS", "UNK", "WordTokenizer"]
