"""Rendering: object parts -> an index map -> an RGB image in one of the world's styles.

An object is first drawn as an index map at twice the output size (0 = background, ``1 +
role`` = a part's colour role), after a random flip, rotation, scale and position. Each
style turns that map into colours, then the image is box-downsampled to the output size
(pixel art is drawn on its own coarse grid instead). Textures (the DTD-like open-set
kind) are drawn directly. Everything is numpy and PIL; one image takes about a
millisecond.

Six styles and six textures, each a short self-contained function; one module keeps the
style table next to what it names. The array helpers they share (noise, edges, dilation,
blur, downsampling) are :mod:`croft.world.pixels`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from croft.world.pixels import (
    _blur,
    _dilate,
    _dilate_index,
    _downsample,
    _edges,
    _jitter,
    _lowfreq,
    _shift,
)
from croft.world.shapes import UPRIGHT, draw_object

__all__ = [
    "COLOURS",
    "STYLES",
    "TEXTURES",
    "TINTS",
    "render_object",
    "render_texture",
]

#: Named object colours (RGB in 0..1); captions name the main colour with these words.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.16, 0.16),
    "orange": (0.95, 0.55, 0.12),
    "yellow": (0.95, 0.86, 0.16),
    "green": (0.2, 0.67, 0.24),
    "blue": (0.16, 0.35, 0.86),
    "purple": (0.55, 0.24, 0.75),
    "pink": (0.95, 0.5, 0.72),
    "brown": (0.55, 0.35, 0.16),
    "grey": (0.5, 0.5, 0.5),
    "teal": (0.12, 0.68, 0.7),
}
_COLOUR_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _COLOUR_NAMES])

#: Background tints (RGB in 0..1) of world v2's shortcut: the ``background`` argument of
#: :func:`render_object` is an index into this list. The values lie on the pixel style's
#: quarter grid, so quantised pixel art keeps them apart; no caption ever names them.
TINTS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.5, 0.5),  # rose
    (0.75, 0.75, 0.5),  # olive-sand
    (0.5, 1.0, 0.75),  # mint
    (0.5, 0.75, 1.0),  # sky
    (0.75, 0.5, 1.0),  # lilac
    (0.25, 0.25, 0.25),  # slate
    (1.0, 1.0, 0.75),  # cream
)


# ----------------------------------------------------------------------------- index map
def _index_map(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    parts = draw_object(name, rng)
    upright = name in UPRIGHT
    angle = math.radians(rng.uniform(-25, 25)) if upright else rng.uniform(0, 2 * math.pi)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    pts = [(p.pts * np.array([flip, 1.0])) @ rot.T for p in parts]
    allp = np.concatenate(pts)
    lo, hi = allp.min(0), allp.max(0)
    extent = float((hi - lo).max())
    scale = rng.uniform(0.5, 0.88) * size / extent
    span = (hi - lo) * scale
    margin = size * 0.04
    off = np.array([rng.uniform(margin, max(margin, size - margin - s)) for s in span])
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    for p, q in zip(parts, pts, strict=True):
        xy = [tuple(v) for v in (q - lo) * scale + off]
        if p.kind == "fill":
            draw.polygon(xy, fill=1 + p.role)
        elif p.kind == "cut":
            draw.polygon(xy, fill=0)
        else:
            draw.line(xy, fill=1 + p.role, width=max(1, round(p.width * scale)), joint="curve")
    return np.asarray(img, dtype=np.uint8)


def _part_colours(rng: np.random.Generator, colour: str | None = None) -> tuple[str, np.ndarray]:
    """Main colour name and an (4, 3) table: [unused, main, accent, dark detail]."""
    k = int(rng.integers(len(_COLOUR_NAMES)))
    k = k if colour is None else _COLOUR_NAMES.index(colour)
    a = int(rng.integers(len(_COLOUR_NAMES) - 1))
    a = a + 1 if a >= k else a
    main = _jitter(rng, _PALETTE[k], 0.06)
    accent = _jitter(rng, _PALETTE[a], 0.06)
    dark = main * rng.uniform(0.2, 0.4)
    return _COLOUR_NAMES[k], np.stack([np.zeros(3), main, accent, dark]).astype(np.float32)


def _contrasting_bg(rng: np.random.Generator, main: np.ndarray, lo: float, hi: float) -> np.ndarray:
    for _ in range(20):
        bg = rng.uniform(lo, hi, 3)
        if np.abs(bg - main).sum() > 0.6:
            return bg.astype(np.float32)
    return (1.0 - main).astype(np.float32)


# ----------------------------------------------------------------------------- styles
#: ``(index map, part colours, rng, tint or None) -> float RGB``; a tint (RGB in 0..1)
#: replaces the style's random background colour, each style applying it its own way.
Style = Callable[[np.ndarray, np.ndarray, np.random.Generator, "np.ndarray | None"], np.ndarray]


def _photo(
    idx: np.ndarray, cols: np.ndarray, rng: np.random.Generator, tint: np.ndarray | None = None
) -> np.ndarray:
    s = idx.shape[0]
    mask = idx > 0
    base = _contrasting_bg(rng, cols[1], 0.2, 0.85) if tint is None else _jitter(rng, tint, 0.04)
    bg = base * (0.7 + 0.55 * _lowfreq(rng, s, 3)) + 0.12 * (_lowfreq(rng, s, 12) - 0.5)
    shadow = _blur(_shift(mask.astype(np.float32), 3, 3), 1.5)[..., None]
    bg = bg * (1.0 - 0.4 * shadow)
    phi = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s - 0.5
    shade = 1.0 + 0.7 * (xx * math.cos(phi) + yy * math.sin(phi))
    obj = cols[idx] * shade[..., None]
    img = np.where(mask[..., None], obj, bg)
    img = _blur(img, 0.6)
    return img + rng.normal(0, 0.02, img.shape).astype(np.float32)


def _cartoon(
    idx: np.ndarray, cols: np.ndarray, rng: np.random.Generator, tint: np.ndarray | None = None
) -> np.ndarray:
    s = idx.shape[0]
    mask = idx > 0
    bg = np.empty((s, s, 3), np.float32)
    if tint is None:
        bg[:] = 0.55 + 0.45 * _contrasting_bg(rng, cols[1], 0.3, 1.0)
    else:  # the tint itself, flat
        bg[:] = _jitter(rng, tint, 0.04)
    if rng.random() < 0.5:  # a ground band
        bg[int(s * rng.uniform(0.65, 0.85)) :] = 0.5 + 0.4 * rng.uniform(0, 1, 3)
    mean = cols.mean(axis=1, keepdims=True)
    sat = np.clip(mean + 1.3 * (cols - mean), 0, 1)  # saturated flat colours
    img = np.where(mask[..., None], sat[idx], bg)
    line = _dilate(_edges(idx), 1)
    if rng.random() < 0.25:  # black ink lines
        img[line] = 0.06
    else:  # coloured lines: a dark shade of the part they surround
        img[line] = (sat[_dilate_index(idx)] * 0.45)[line]
    return img


def _painting(
    idx: np.ndarray, cols: np.ndarray, rng: np.random.Generator, tint: np.ndarray | None = None
) -> np.ndarray:
    s = idx.shape[0]
    mask = idx > 0
    if tint is None:
        c1 = _contrasting_bg(rng, cols[1], 0.15, 0.9)
        c2 = _contrasting_bg(rng, cols[1], 0.15, 0.9)
    else:  # two shades of the tint
        c1 = _jitter(rng, tint, 0.04)
        c2 = np.clip(tint * rng.uniform(0.75, 0.95), 0, 1).astype(np.float32)
    t = _lowfreq(rng, s, 3)
    bg = c1 * t + c2 * (1 - t)
    cells = (6, 20) if rng.random() < 0.5 else (20, 6)
    strokes = _lowfreq(rng, s, cells) - 0.5
    obj = cols[idx] * (1.0 + 0.25 * _lowfreq(rng, s, 5, 3) - 0.12)
    soft = _blur(mask.astype(np.float32), 0.8)[..., None]
    img = soft * np.where(mask[..., None], obj, bg) + (1 - soft) * bg
    img = img * (1.0 + 0.3 * strokes)
    return _blur(img, 0.7)


def _wobble(idx: np.ndarray, rng: np.random.Generator, amp: float) -> np.ndarray:
    """The index map warped by a smooth random displacement of up to ``amp`` pixels."""
    s = idx.shape[0]
    d = (_lowfreq(rng, s, 4, 2) - 0.5) * 2 * amp
    yy, xx = np.mgrid[0:s, 0:s]
    y = np.clip(np.round(yy + d[..., 0]), 0, s - 1).astype(int)
    x = np.clip(np.round(xx + d[..., 1]), 0, s - 1).astype(int)
    return idx[y, x]


def _sketch(
    idx: np.ndarray, cols: np.ndarray, rng: np.random.Generator, tint: np.ndarray | None = None
) -> np.ndarray:
    """A quick pencil sketch: wobbly, thin, broken strokes on paper, sometimes hatched."""
    s = idx.shape[0]
    idx = _wobble(idx, rng, 5.0 * s / 64)
    paper = rng.uniform(0.9, 1.0) + rng.normal(0, 0.015, (s, s)).astype(np.float32)
    ink = rng.uniform(0.25, 0.55)
    img = paper.copy()
    main = _edges(idx) & (_lowfreq(rng, s, 6)[..., 0] > rng.uniform(0.3, 0.45))
    img[main] = ink
    for _ in range(int(rng.integers(0, 3))):  # stray marks
        y0, x0 = rng.integers(0, s, 2)
        ln = np.clip(np.array([y0, x0]) + np.outer(np.arange(8), rng.normal(0, 1, 2)), 0, s - 1)
        img[ln[:, 0].astype(int), ln[:, 1].astype(int)] = ink + 0.3
    dy, dx = (int(v) for v in rng.integers(-2, 3, 2))
    ghost = _edges(_shift(idx, dy, dx)) & ~main
    img[ghost] = np.minimum(img[ghost], ink + 0.35)
    if rng.random() < 0.5:  # hatching inside the object
        yy, xx = np.mgrid[0:s, 0:s]
        period = int(rng.integers(5, 8))
        hatch = ((xx + yy) % period == 0) & (idx > 0) & ~main
        img[hatch] = np.minimum(img[hatch], ink + 0.3)
    paper_rgb = np.array([1.0, 0.98, 0.94], np.float32)
    if tint is not None:  # tinted paper: the tint mixed with white
        paper_rgb = (0.45 + 0.55 * tint).astype(np.float32)
    return img[..., None] * paper_rgb


def _pixel(
    idx: np.ndarray, cols: np.ndarray, rng: np.random.Generator, tint: np.ndarray | None = None
) -> np.ndarray:
    s = idx.shape[0]
    g = int(rng.integers(14, 19))
    pos = ((np.arange(g) + 0.5) * s / g).astype(int)
    small = idx[np.ix_(pos, pos)]
    mask = small > 0
    bg = np.empty((g, g, 3), np.float32)
    bg[:] = _contrasting_bg(rng, cols[1], 0.1, 0.9) if tint is None else _jitter(rng, tint, 0.04)
    img = np.where(mask[..., None], cols[small], bg)
    if rng.random() < 0.7:
        border = _edges(mask.astype(np.uint8)) & mask
        img[border] = cols[1] * 0.3
    img = np.round(img * 4) / 4  # a small palette
    return img


def _neon(
    idx: np.ndarray, cols: np.ndarray, rng: np.random.Generator, tint: np.ndarray | None = None
) -> np.ndarray:
    s = idx.shape[0]
    bg = np.empty((s, s, 3), np.float32)
    if tint is None:
        bg[:] = rng.uniform(0.0, 0.12, 3) * np.array([0.6, 0.6, 1.0])
    else:  # a dark shade of the tint
        bg[:] = 0.2 * tint
    light = np.clip(cols[1] * 1.3 + 0.2, 0, 1)
    tube = _dilate(_edges(idx), 1).astype(np.float32)
    glow = _blur(tube, 2.5)[..., None]
    img = bg + 0.12 * (idx > 0)[..., None] * light + glow * light * 1.2
    img = np.where(tube[..., None] > 0, light, img)
    return img


STYLES: dict[str, Style] = {
    "photo": _photo,
    "cartoon": _cartoon,
    "painting": _painting,
    "sketch": _sketch,
    "pixel": _pixel,
    "neon": _neon,
}


def render_object(
    name: str,
    style: str,
    rng: np.random.Generator,
    size: int = 32,
    colour: str | None = None,
    background: int | None = None,
) -> tuple[np.ndarray, str]:
    """One image of class ``name`` in ``style``: ``(uint8 (size, size, 3), colour name)``.

    The main colour is random unless ``colour`` (a key of :data:`COLOURS`) is given. The
    background is the style's random one unless ``background`` (an index into
    :data:`TINTS`) is given; the style then builds it from that tint its own way (photo:
    the tint with low-frequency shading and the object's shadow; painting: two shades of
    it blended by strokes; cartoon and pixel: the flat tint; sketch: paper mixed from the
    tint and white; neon: a dark shade of it). ``background=None`` draws exactly what
    world v1 draws.
    """
    ss = 2 * size
    idx = _index_map(name, rng, ss)
    colour, cols = _part_colours(rng, colour)
    tint = None
    if background is not None:
        if not 0 <= background < len(TINTS):
            raise ValueError(
                f"background tint index must be in [0, {len(TINTS)}), got {background}"
            )
        tint = np.asarray(TINTS[background], np.float32)
    img = STYLES[style](idx, cols, rng, tint)
    if img.shape[0] == ss:
        img = _downsample(img, 2)
    elif img.shape[0] != size:
        pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
        return np.asarray(pil.resize((size, size), Image.NEAREST)), colour
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), colour


# ----------------------------------------------------------------------------- textures
def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.uniform(0, 1, 3)
    b = rng.uniform(0, 1, 3)
    if np.abs(a - b).sum() < 0.6:
        b = 1.0 - a
    return a.astype(np.float32), b.astype(np.float32)


def _coords(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    t = rng.uniform(0, math.pi)
    return xx * math.cos(t) + yy * math.sin(t), -xx * math.sin(t) + yy * math.cos(t)


def _tex_stripes(rng: np.random.Generator, s: int) -> np.ndarray:
    u, _ = _coords(rng, s)
    a, b = _two_colours(rng)
    t = (np.sin(2 * math.pi * rng.uniform(3, 9) * u) > rng.uniform(-0.4, 0.4))[..., None]
    return np.where(t, a, b)


def _tex_checkers(rng: np.random.Generator, s: int) -> np.ndarray:
    u, v = _coords(rng, s)
    f = rng.uniform(2.5, 7)
    a, b = _two_colours(rng)
    t = ((np.floor(u * f) + np.floor(v * f)) % 2 == 0)[..., None]
    return np.where(t, a, b)


def _tex_dots(rng: np.random.Generator, s: int) -> np.ndarray:
    u, v = _coords(rng, s)
    f = rng.uniform(3, 7)
    a, b = _two_colours(rng)
    du, dv = (u * f) % 1 - 0.5, (v * f) % 1 - 0.5
    t = (du**2 + dv**2 < rng.uniform(0.04, 0.12))[..., None]
    return np.where(t, a, b)


def _tex_noise(rng: np.random.Generator, s: int) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:
        return rng.random((s, s, 3)).astype(np.float32)
    if kind == 1:
        return np.repeat(np.clip(rng.normal(0.5, 0.25, (s, s, 1)), 0, 1), 3, 2).astype(np.float32)
    return _lowfreq(rng, s, int(rng.integers(6, 16)), 3)


def _tex_waves(rng: np.random.Generator, s: int) -> np.ndarray:
    u, v = _coords(rng, s)
    a, b = _two_colours(rng)
    t = 0.5 + 0.5 * np.sin(
        2 * math.pi * (rng.uniform(3, 7) * u + 0.15 * np.sin(2 * math.pi * rng.uniform(1, 3) * v))
    )
    return a * t[..., None] + b * (1 - t[..., None])


def _tex_blotches(rng: np.random.Generator, s: int) -> np.ndarray:
    a, b = _two_colours(rng)
    t = (_lowfreq(rng, s, int(rng.integers(4, 9))) > 0.5).astype(np.float32)
    return a * t + b * (1 - t)


TEXTURES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "stripes": _tex_stripes,
    "checkers": _tex_checkers,
    "dots": _tex_dots,
    "noise": _tex_noise,
    "waves": _tex_waves,
    "blotches": _tex_blotches,
}


def render_texture(kind: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One texture image of ``kind``: uint8 ``(size, size, 3)``."""
    img = _downsample(TEXTURES[kind](rng, 2 * size).astype(np.float32), 2)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
