"""The house rule "a lower layer never imports a higher one", checked on the source.

The order is the README's Layout section. A module may import its own layer and any
layer listed before it; imports inside functions count too (they are still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "croft"

LAYERS: list[tuple[str, ...]] = [
    ("_version", "errors", "registry", "limits"),
    ("fileio", "progress", "provenance"),
    ("overrides",),
    ("metrics", "scores", "conventions", "selection"),
    ("backbones",),
    ("data",),
    ("world",),
    ("features",),
    ("methods",),
    ("evaluation", "predict", "predict_io", "simulate", "options_doc"),
    ("diagnose",),
    ("stats", "tables", "plotstyle"),
    ("experiments",),
    ("figures", "verdict", "report", "report_html"),
    ("protocols",),
    ("cli", "__main__", "__init__"),
]
RANK = {name: i for i, group in enumerate(LAYERS) for name in group}


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "croft":
                out += [f"croft.{a.name}" for a in node.names]
            elif node.module.startswith("croft."):
                out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("croft.")]
    return out


def _top(name: str) -> str:
    return name.split(".")[0].removesuffix(".py")


def test_every_module_has_a_layer():
    tops = {_top(p.relative_to(SRC).parts[0]) for p in SRC.rglob("*.py")}
    assert tops <= set(RANK), f"place these in LAYERS and the README: {tops - set(RANK)}"


def test_no_module_imports_a_higher_layer():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        me = _top(path.relative_to(SRC).parts[0])
        for name in _imports(path):
            other = name.split(".")[1]
            if other in RANK and RANK[other] > RANK[me]:
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert not bad, "upward imports:\n" + "\n".join(bad)
