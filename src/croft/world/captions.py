"""Captions of world images, and the fixed word vocabulary they (and prompts) use.

:func:`caption` names what is in an image the way the world's images are described: the
class name, or for an in-distribution object often only its alias (pre-training), a style
noun half of the time ("a painting of a star"), the colour now and then, and a generic
caption ("a photo of an object") for a share of images. :func:`describe` is the plain
caption written next to generated images ("a painting of a red cup").
"""

from __future__ import annotations

import numpy as np

from croft.world.config import ALIASES
from croft.world.render import COLOURS
from croft.world.shapes import OBJECT_CLASSES

__all__ = ["STYLE_NOUNS", "TEXTURE_WORDS", "caption", "describe", "world_vocabulary"]

STYLE_NOUNS: dict[str, tuple[str, ...]] = {
    "photo": ("photo", "picture"),
    "painting": ("painting", "picture"),
    "cartoon": ("cartoon", "drawing"),
    "sketch": ("sketch", "drawing"),
    "pixel": ("pixel art",),
    "neon": ("neon sign",),
}

#: Texture kind -> (noun, adjective) used in captions.
TEXTURE_WORDS: dict[str, tuple[str, str]] = {
    "stripes": ("stripes", "striped"),
    "checkers": ("checkers", "checkered"),
    "dots": ("dots", "dotted"),
    "noise": ("noise", "noisy"),
    "waves": ("waves", "wavy"),
    "blotches": ("blotches", "blotchy"),
}

_GENERIC = ("object", "thing", "shape", "item")
#: Words prompts commonly use; part of the vocabulary although captions rarely say them.
_PROMPT_WORDS = (
    "a an the of this that is in on with and photo picture image drawing sketch art painting "
    "cartoon pixel neon sign rendering close up bright dark good bad small big large toy "
    "itap there texture pattern object thing shape item random"
)


def world_vocabulary() -> list[str]:
    """All words of captions and common prompts, sorted (no special tokens)."""
    words: set[str] = set(_PROMPT_WORDS.split())
    words.update(OBJECT_CLASSES)
    words.update(ALIASES.values())
    words.update(COLOURS)
    words.update(_GENERIC)
    for nouns in STYLE_NOUNS.values():
        for n in nouns:
            words.update(n.split())
    for noun, adj in TEXTURE_WORDS.values():
        words.update((noun, adj))
    return sorted(words)


def describe(style: str, name: str, colour: str | None = None) -> str:
    """The plain caption of a generated object image, e.g. ``"a painting of a red cup"``."""
    noun = STYLE_NOUNS[style][0]
    what = f"{colour} {name}" if colour else name
    return f"a {noun} of a {what}"


def caption(
    rng: np.random.Generator,
    style: str,
    name: str | None,
    colour: str | None = None,
    *,
    texture: str | None = None,
    name_rate: float = 1.0,
    aliases: dict[str, str] | None = None,
    confusions: dict[str, str] | None = None,
    confusion_rate: float = 0.0,
    generic_rate: float = 0.0,
    colour_rate: float = 0.2,
    style_word_rate: float = 0.5,
) -> str:
    """A random caption of one image: an object ``name`` in ``style``, or a ``texture``.

    For a class with an alias (``aliases``, default :data:`ALIASES`) the class name is used
    with probability ``name_rate``, the name of its related class (``confusions``) with
    probability ``confusion_rate``, and the alias otherwise.
    """
    if texture is not None:
        noun, adj = TEXTURE_WORDS[texture]
        forms = (
            f"{noun}",
            f"a {adj} pattern",
            f"a {adj} texture",
            f"a texture of {noun}",
            f"a pattern of {noun}",
        )
        return forms[int(rng.integers(len(forms)))]
    assert name is not None
    noun = STYLE_NOUNS[style][int(rng.integers(len(STYLE_NOUNS[style])))]
    with_style = rng.random() < style_word_rate
    if rng.random() < generic_rate:
        generic = _GENERIC[int(rng.integers(len(_GENERIC)))]
        return f"a {noun} of an {generic}" if with_style else f"an {generic}"
    word = name
    aliases = ALIASES if aliases is None else aliases
    if name in aliases:
        u = rng.random()
        if confusions and name in confusions and name_rate <= u < name_rate + confusion_rate:
            word = confusions[name]
        elif u >= name_rate:
            word = aliases[name]
    if colour is not None and rng.random() < colour_rate:
        word = f"{colour} {word}"
    return f"a {noun} of a {word}" if with_style else f"a {word}"
