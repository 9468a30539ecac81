"""Object classes of the built-in world, drawn as parts in a unit box.

Every class is a function ``draw(rng) -> list[Part]`` in coordinates where ``x`` grows to the
right and ``y`` grows downwards; the renderer rotates, scales and places the parts. This
module is the catalogue (the drawing functions and the one class table that names them); a
:class:`Part` (fill, cut or line; ``role`` picks the colour: 0 main, 1 accent, 2 dark
detail) and the outline helpers are :mod:`croft.world.parts` (``Part`` re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from croft.world.parts import C, F, L, Part, U, _ellipse, _p, _rect, _regular, _star

__all__ = ["OBJECT_CLASSES", "Part", "UPRIGHT", "draw_object"]


# ----------------------------------------------------------------------------- shapes
def _circle(r: U) -> list[Part]:
    return [F(_ellipse(0, 0, 1, 1))]


def _square(r: U) -> list[Part]:
    return [F(_rect(-1, -1, 1, 1))]


def _triangle(r: U) -> list[Part]:
    return [F(_regular(3, 1.0))]


def _star5(r: U) -> list[Part]:
    return [F(_star(5, 1.0, r.uniform(0.38, 0.48)))]


def _heart(r: U) -> list[Part]:
    t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [F(np.stack([x, y], axis=1) / 16.0)]


def _cross(r: U) -> list[Part]:
    w = r.uniform(0.28, 0.38)
    return [F(_rect(-w, -1, w, 1)), F(_rect(-1, -w, 1, w))]


def _crescent(r: U) -> list[Part]:
    off = r.uniform(0.35, 0.5)
    return [F(_ellipse(0, 0, 1, 1)), C(_ellipse(off, -0.15, 0.85, 0.85))]


def _hexagon(r: U) -> list[Part]:
    return [F(_regular(6, 1.0, 0.0))]


def _diamond(r: U) -> list[Part]:
    w = r.uniform(0.55, 0.7)
    return [F(_p([(0, -1), (w, 0), (0, 1), (-w, 0)]))]


def _arrow(r: U) -> list[Part]:
    w = r.uniform(0.18, 0.26)
    return [F(_rect(-1, -w, 0.2, w)), F(_p([(0.1, -0.6), (1, 0), (0.1, 0.6)]))]


def _ring(r: U) -> list[Part]:
    k = r.uniform(0.5, 0.62)
    return [F(_ellipse(0, 0, 1, 1)), C(_ellipse(0, 0, k, k))]


def _bolt(r: U) -> list[Part]:
    return [
        F(
            _p(
                [
                    (0.2, -1),
                    (-0.55, 0.1),
                    (-0.05, 0.1),
                    (-0.3, 1),
                    (0.55, -0.2),
                    (0.05, -0.2),
                    (0.4, -1),
                ]
            )
        )
    ]


def _cloud(r: U) -> list[Part]:
    parts = [
        F(_ellipse(-0.45, 0.2, 0.5, 0.4)),
        F(_ellipse(0.45, 0.2, 0.5, 0.4)),
        F(_ellipse(0.0, -0.1, 0.55, 0.55)),
        F(_rect(-0.5, 0.1, 0.5, 0.6)),
    ]
    return parts


def _hourglass(r: U) -> list[Part]:
    return [
        F(_p([(-0.6, -0.85), (0.6, -0.85), (0.08, 0), (0.6, 0.85), (-0.6, 0.85), (-0.08, 0)])),
        F(_rect(-0.75, -1, 0.75, -0.82), 1),
        F(_rect(-0.75, 0.82, 0.75, 1), 1),
    ]


# ----------------------------------------------------------------------------- objects
def _house(r: U) -> list[Part]:
    w = r.uniform(0.6, 0.8)
    top = r.uniform(-0.95, -0.75)
    return [
        F(_rect(-w, -0.05, w, 1)),
        F(_p([(-w - 0.2, -0.05), (0, top), (w + 0.2, -0.05)]), 1),
        F(_rect(-0.16, 0.45, 0.16, 1), 2),
        F(_rect(0.3, 0.15, 0.5, 0.35), 2),
    ]


def _tree(r: U) -> list[Part]:
    tw = r.uniform(0.12, 0.18)
    return [
        F(_rect(-tw, 0.2, tw, 1), 1),
        F(_ellipse(0, -0.3, 0.7, 0.62)),
        F(_ellipse(-0.35, 0.0, 0.4, 0.35)),
        F(_ellipse(0.35, 0.0, 0.4, 0.35)),
    ]


def _fish(r: U) -> list[Part]:
    ry = r.uniform(0.35, 0.45)
    return [
        F(_ellipse(0.15, 0, 0.75, ry)),
        F(_p([(-0.45, 0), (-1, -0.45), (-1, 0.45)]), 1),
        F(_ellipse(0.55, -0.08, 0.09, 0.09), 2),
    ]


def _cup(r: U) -> list[Part]:
    return [
        F(_ellipse(0.55, 0.05, 0.38, 0.38), 1),
        C(_ellipse(0.55, 0.05, 0.2, 0.2)),
        F(_p([(-0.6, -0.7), (0.55, -0.7), (0.45, 0.8), (-0.5, 0.8)])),
        F(_rect(-0.62, -0.78, 0.57, -0.66), 1),
    ]


def _umbrella(r: U) -> list[Part]:
    canopy = np.concatenate(
        [
            _ellipse(0, -0.1, 1, 0.8, 180, 360, 24),
            _p([(0.66, 0.0), (0.33, -0.1), (0.0, 0.0), (-0.33, -0.1), (-0.66, 0.0)]),
        ]
    )
    hook = np.concatenate([_p([(0, -0.1), (0, 0.8)]), _ellipse(-0.15, 0.8, 0.15, 0.15, 0, 180, 8)])
    return [F(canopy), L(hook, 0.12, 1)]


def _boat(r: U) -> list[Part]:
    return [
        F(_p([(-1, 0.45), (1, 0.45), (0.7, 0.9), (-0.7, 0.9)]), 1),
        L(_p([(0, 0.45), (0, -1)]), 0.08, 2),
        F(_p([(0.06, -0.95), (0.06, 0.35), (0.75, 0.35)])),
        F(_p([(-0.06, -0.7), (-0.06, 0.35), (-0.55, 0.35)])),
    ]


def _car(r: U) -> list[Part]:
    return [
        F(_rect(-1, -0.15, 1, 0.45)),
        F(_p([(-0.55, -0.15), (-0.35, -0.6), (0.35, -0.6), (0.6, -0.15)]), 1),
        F(_ellipse(-0.55, 0.5, 0.24, 0.24), 2),
        F(_ellipse(0.55, 0.5, 0.24, 0.24), 2),
    ]


def _flower(r: U) -> list[Part]:
    n = int(r.integers(5, 8))
    parts = [L(_p([(0, 0), (0.05, 1)]), 0.1, 1)]
    for k in range(n):
        a = 2 * math.pi * k / n
        parts.append(F(_ellipse(0.4 * math.cos(a), -0.3 + 0.4 * math.sin(a), 0.27, 0.27, n=16)))
    parts.append(F(_ellipse(0, -0.3, 0.22, 0.22, n=16), 2))
    return parts


def _mushroom(r: U) -> list[Part]:
    cap = np.concatenate([_ellipse(0, 0.0, 1, 0.85, 180, 360, 24), _p([(1, 0.05), (-1, 0.05)])])
    return [
        F(_rect(-0.28, -0.05, 0.28, 1), 1),
        F(cap),
        F(_ellipse(-0.4, -0.4, 0.14, 0.12, n=12), 2),
        F(_ellipse(0.35, -0.5, 0.12, 0.1, n=12), 2),
    ]


def _bell(r: U) -> list[Part]:
    body = np.concatenate(
        [
            _ellipse(0, -0.35, 0.45, 0.5, 180, 360, 16),
            _p([(0.5, 0.2), (0.9, 0.65), (-0.9, 0.65), (-0.5, 0.2)]),
        ]
    )
    return [F(body), F(_ellipse(0, 0.78, 0.2, 0.2, n=12), 2), F(_rect(-0.08, -1, 0.08, -0.82), 1)]


def _rocket(r: U) -> list[Part]:
    return [
        F(_p([(-0.3, -0.4), (0, -1), (0.3, -0.4), (0.3, 0.6), (-0.3, 0.6)])),
        F(_p([(-0.3, 0.1), (-0.65, 0.75), (-0.3, 0.6)]), 1),
        F(_p([(0.3, 0.1), (0.65, 0.75), (0.3, 0.6)]), 1),
        F(_ellipse(0, -0.15, 0.13, 0.13, n=12), 2),
        F(_p([(-0.18, 0.6), (0, 1), (0.18, 0.6)]), 1),
    ]


def _apple(r: U) -> list[Part]:
    return [
        F(_ellipse(-0.3, 0.15, 0.62, 0.75)),
        F(_ellipse(0.3, 0.15, 0.62, 0.75)),
        L(_p([(0, -0.45), (0.1, -0.95)]), 0.1, 2),
        F(_ellipse(0.35, -0.8, 0.25, 0.12, n=12), 1),
    ]


def _kite(r: U) -> list[Part]:
    tail = _p([(0, 0.35), (-0.2, 0.55), (0.15, 0.75), (-0.15, 1.0)])
    return [
        F(_p([(0, -1), (0.55, -0.35), (0, 0.35), (-0.55, -0.35)])),
        L(_p([(0, -1), (0, 0.35)]), 0.05, 2),
        L(_p([(-0.55, -0.35), (0.55, -0.35)]), 0.05, 2),
        L(tail, 0.07, 1),
    ]


def _lollipop(r: U) -> list[Part]:
    return [
        L(_p([(0, 0), (0, 1)]), 0.12, 1),
        F(_ellipse(0, -0.4, 0.6, 0.6)),
        F(_ellipse(0, -0.4, 0.28, 0.28, n=16), 1),
    ]


def _bottle(r: U) -> list[Part]:
    return [
        F(
            _p(
                [
                    (-0.4, 1),
                    (0.4, 1),
                    (0.4, -0.2),
                    (0.15, -0.5),
                    (0.15, -0.85),
                    (-0.15, -0.85),
                    (-0.15, -0.5),
                    (-0.4, -0.2),
                ]
            )
        ),
        F(_rect(-0.18, -1, 0.18, -0.82), 1),
        F(_rect(-0.4, 0.1, 0.4, 0.5), 1),
    ]


def _candle(r: U) -> list[Part]:
    flame = np.concatenate(
        [_ellipse(0, -0.62, 0.17, 0.17, 0, 180, 10), _p([(-0.17, -0.62), (0, -1)])]
    )
    return [F(_rect(-0.3, -0.4, 0.3, 1)), F(flame, 1), L(_p([(0, -0.4), (0, -0.55)]), 0.05, 2)]


def _hammer(r: U) -> list[Part]:
    return [
        F(_rect(-0.1, -0.4, 0.1, 1), 1),
        F(_p([(-0.7, -1), (0.55, -1), (0.7, -0.8), (0.55, -0.45), (-0.7, -0.45)])),
    ]


def _snowman(r: U) -> list[Part]:
    return [
        F(_ellipse(0, 0.45, 0.55, 0.55)),
        F(_ellipse(0, -0.45, 0.38, 0.38)),
        F(_ellipse(-0.12, -0.5, 0.06, 0.06, n=8), 2),
        F(_ellipse(0.12, -0.5, 0.06, 0.06, n=8), 2),
        F(_rect(-0.35, -1, 0.35, -0.8), 1),
    ]


def _hat(r: U) -> list[Part]:
    return [
        F(_rect(-0.5, -0.9, 0.5, 0.4)),
        F(_rect(-0.5, 0.15, 0.5, 0.4), 1),
        F(_ellipse(0, 0.45, 1, 0.18)),
    ]


def _leaf(r: U) -> list[Part]:
    t = np.linspace(0, math.pi, 14)
    right = np.stack([0.55 * np.sin(t), -np.cos(t) * 0.85], axis=1)
    left = right[::-1] * np.array([-1, 1])
    return [F(np.concatenate([right, left])), L(_p([(0, -0.85), (0, 1.0)]), 0.07, 2)]


def _glasses(r: U) -> list[Part]:
    return [
        F(_ellipse(-0.55, 0, 0.42, 0.34)),
        C(_ellipse(-0.55, 0, 0.28, 0.22)),
        F(_ellipse(0.55, 0, 0.42, 0.34)),
        C(_ellipse(0.55, 0, 0.28, 0.22)),
        L(_p([(-0.15, -0.05), (0.15, -0.05)]), 0.1),
    ]


def _anchor(r: U) -> list[Part]:
    arc = _ellipse(0, 0.25, 0.75, 0.65, 20, 160, 14)
    return [
        L(_p([(0, -0.65), (0, 0.9)]), 0.14),
        L(arc, 0.14),
        F(_ellipse(0, -0.8, 0.22, 0.22)),
        C(_ellipse(0, -0.8, 0.1, 0.1)),
        L(_p([(-0.4, -0.4), (0.4, -0.4)]), 0.12),
    ]


OBJECT_CLASSES: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star5,
    "heart": _heart,
    "cross": _cross,
    "crescent": _crescent,
    "hexagon": _hexagon,
    "diamond": _diamond,
    "arrow": _arrow,
    "ring": _ring,
    "bolt": _bolt,
    "cloud": _cloud,
    "hourglass": _hourglass,
    "house": _house,
    "tree": _tree,
    "fish": _fish,
    "cup": _cup,
    "umbrella": _umbrella,
    "boat": _boat,
    "car": _car,
    "flower": _flower,
    "mushroom": _mushroom,
    "bell": _bell,
    "rocket": _rocket,
    "apple": _apple,
    "kite": _kite,
    "lollipop": _lollipop,
    "bottle": _bottle,
    "candle": _candle,
    "hammer": _hammer,
    "snowman": _snowman,
    "hat": _hat,
    "leaf": _leaf,
    "glasses": _glasses,
    "anchor": _anchor,
}

#: Classes with a natural "up": the renderer rotates them by at most ±25 degrees.
UPRIGHT = frozenset(
    {
        "house",
        "tree",
        "cup",
        "umbrella",
        "boat",
        "car",
        "flower",
        "mushroom",
        "bell",
        "rocket",
        "apple",
        "lollipop",
        "bottle",
        "candle",
        "snowman",
        "hat",
        "anchor",
        "cloud",
        "hourglass",
        "kite",
        "fish",
        "glasses",
        "hammer",
    }
)


def draw_object(name: str, rng: np.random.Generator) -> list[Part]:
    """The parts of one instance of class ``name``."""
    return OBJECT_CLASSES[name](rng)
