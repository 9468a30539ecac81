"""Plain-text and Markdown tables with mean ± std cells."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float], percent: bool = True) -> str:
    """``"84.3 ± 1.2"`` (×100 when ``percent``); ``"-"`` for no values."""
    if not values:
        return "-"
    a = np.asarray(values, dtype=float) * (100.0 if percent else 1.0)
    return f"{a.mean():.1f} ± {a.std():.1f}"


def render(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """A column-aligned table; ``markdown`` adds pipes and the separator row."""
    cols = [list(map(str, c)) for c in zip(header, *rows, strict=True)]
    widths = [max(len(x) for x in c) for c in cols]
    lines = []
    for i, row in enumerate([header, *rows]):
        cells = [
            str(x).ljust(w) if j == 0 else str(x).rjust(w)
            for j, (x, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(cells))
        if i == 0:
            sep = ["-" * w for w in widths]
            lines.append("| " + " | ".join(sep) + " |" if markdown else "  ".join(sep))
    return "\n".join(lines)
