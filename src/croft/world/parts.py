"""Drawing primitives of the world's object classes: parts and the outlines they are made of.

A :class:`Part` is a filled polygon (:func:`F`), a polygon cut out of what was drawn before
(a hole, :func:`C`), or a polyline with a width (:func:`L`), in unit-box coordinates (``x``
right, ``y`` down); ``role`` picks the colour: 0 main, 1 accent, 2 dark detail. The outline
helpers (``_ellipse``, ``_rect``, ``_regular``, ``_star``, ``_p``) return ``(k, 2)``
point arrays; they are shared with :mod:`croft.world.shapes`, the class catalogue, which
re-exports :class:`Part`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["C", "F", "L", "Part", "U"]


@dataclass(frozen=True)
class Part:
    """One drawing primitive: ``kind`` is ``"fill"``, ``"cut"`` or ``"line"``."""

    kind: str
    pts: np.ndarray  # (k, 2) float
    role: int = 0
    width: float = 0.0  # line width in unit-box units (lines only)


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, a0: float = 0.0, a1: float = 360.0, n: int = 28
) -> np.ndarray:
    t = np.radians(np.linspace(a0, a1, n, endpoint=(a1 - a0) < 360))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=float)


def _regular(n: int, r: float, rot: float = -90.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    return _ellipse(cx, cy, r, r, rot, rot + 360.0, n)


def _star(n: int, r_out: float, r_in: float) -> np.ndarray:
    ang = np.radians(-90.0 + np.arange(2 * n) * 180.0 / n)
    rad = np.where(np.arange(2 * n) % 2 == 0, r_out, r_in)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)


def _p(pts: list[tuple[float, float]]) -> np.ndarray:
    return np.array(pts, dtype=float)


def F(pts: np.ndarray, role: int = 0) -> Part:  # noqa: N802 - short constructor names
    return Part("fill", pts, role)


def C(pts: np.ndarray) -> Part:  # noqa: N802
    return Part("cut", pts, 0)


def L(pts: np.ndarray, width: float, role: int = 0) -> Part:  # noqa: N802
    return Part("line", pts, role, width)


U = np.random.Generator  # alias for annotations
