"""Array helpers of the world's renderer: smooth noise, edges, dilation, shifts, blur.

Small numpy/PIL functions on index maps and float images in [0, 1], shared by the styles
and the textures of :mod:`croft.world.render`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def _lowfreq(
    rng: np.random.Generator, size: int, cells: int | tuple[int, int], channels: int = 1
) -> np.ndarray:
    """Smooth noise in [0, 1] of shape (size, size, channels) from a coarse random grid."""
    ch, cw = (cells, cells) if isinstance(cells, int) else cells
    grid = (rng.random((ch, cw, channels)) * 255).astype(np.uint8)
    out = np.empty((size, size, channels), dtype=np.float32)
    for c in range(channels):
        im = Image.fromarray(grid[:, :, c], "L").resize((size, size), Image.BICUBIC)
        out[:, :, c] = np.asarray(im, dtype=np.float32) / 255.0
    return out


def _edges(idx: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbourhood holds another index value."""
    e = np.zeros(idx.shape, dtype=bool)
    e[1:, :] |= idx[1:, :] != idx[:-1, :]
    e[:-1, :] |= idx[1:, :] != idx[:-1, :]
    e[:, 1:] |= idx[:, 1:] != idx[:, :-1]
    e[:, :-1] |= idx[:, 1:] != idx[:, :-1]
    return e


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(r):
        m = out.copy()
        m[1:, :] |= out[:-1, :]
        m[:-1, :] |= out[1:, :]
        m[:, 1:] |= out[:, :-1]
        m[:, :-1] |= out[:, 1:]
        out = m
    return out


def _dilate_index(idx: np.ndarray) -> np.ndarray:
    """Each pixel takes the largest index of its 4-neighbourhood (parts grow into the bg)."""
    out = idx.copy()
    np.maximum(out[1:, :], idx[:-1, :], out=out[1:, :])
    np.maximum(out[:-1, :], idx[1:, :], out=out[:-1, :])
    np.maximum(out[:, 1:], idx[:, :-1], out=out[:, 1:])
    np.maximum(out[:, :-1], idx[:, 1:], out=out[:, :-1])
    out = np.where(out > 0, out, 1)  # (edge pixels always touch a part)
    return out


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


def _blur(img: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a float image in [0, 1] (2-D or RGB)."""
    u8 = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    out = np.asarray(Image.fromarray(u8).filter(ImageFilter.GaussianBlur(radius)), np.float32)
    return out / 255.0


def _jitter(rng: np.random.Generator, rgb: np.ndarray, amount: float = 0.08) -> np.ndarray:
    return np.clip(rgb + rng.uniform(-amount, amount, 3), 0, 1)


def _downsample(img: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return img
    h, w, c = img.shape
    return img.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3))
