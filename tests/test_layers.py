"""The house rule "a lower layer never imports a higher one", checked on the source.

:data:`LAYERS` is the one statement of the layering; the README's Layout section must list
the same names in the same order (checked below). A module may import its own layer and any
layer listed before it; imports inside functions count too (they are still a dependency).
Inside a package, no two modules may import each other, directly or around a loop.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "croft"

LAYERS: list[tuple[str, ...]] = [
    ("_version", "errors", "registry", "limits"),
    ("fileio", "progress", "provenance"),
    ("overrides",),
    ("metrics", "score_base", "scores_local", "detectors", "neglabel", "score_registry", "scores"),
    ("score_lists", "detector_states", "conventions", "selection"),
    ("backbones",),
    ("data",),
    ("world",),
    ("features",),
    ("methods",),
    ("evaluation", "evaluation_frame", "predict", "predict_io", "simulate", "options_doc"),
    ("diagnose",),
    ("stats", "results_csv", "tables", "plotstyle"),
    ("experiments",),
    ("figures", "verdict", "train_status", "forest", "report_tables", "report", "report_html"),
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


# ---------------------------------------------------------------- cycles between modules
def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_graph() -> dict[str, set[str]]:
    """Module -> the croft modules it imports (``__init__`` files, which only re-export,
    are left out on both ends; ``from croft.pkg import mod`` counts as ``croft.pkg.mod``)."""
    paths = {_module(p): p for p in SRC.rglob("*.py")}
    plain = {m for m, p in paths.items() if p.name != "__init__.py"}
    graph: dict[str, set[str]] = {}
    for mod in plain:
        edges = set()
        for node in ast.walk(ast.parse(paths[mod].read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    edges.add(sub if sub in paths else node.module)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
        graph[mod] = (edges & plain) - {mod}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_cycle_finder_sees_a_loop():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    cycles = _cycles(_module_graph())
    assert not cycles, "modules that import each other: " + "; ".join(map(", ".join, cycles))


# ------------------------------------------------------- the README states the same order
def _readme_layout_names() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    names = []
    for line in block.splitlines():
        lead = line[:27] if line.startswith("  ") and not line.startswith("   ") else ""
        for name in re.findall(r"([A-Za-z_]+)(?:\.py|/)", lead):
            if name not in names:
                names.append(name)
    return names


def test_readme_layout_matches_layers():
    listed = [n for n in _readme_layout_names() if n in RANK]
    unknown = [n for n in _readme_layout_names() if n not in RANK and n != "croft"]
    missing = set(RANK) - set(listed) - {"_version", "__main__", "__init__"}
    assert not unknown, f"README Layout names modules that LAYERS lacks: {unknown}"
    assert not missing, f"README Layout omits: {sorted(missing)}"
    ranks = [RANK[n] for n in listed]
    out_of_order = [n for n, r, q in zip(listed[1:], ranks[1:], ranks[:-1], strict=True) if r < q]
    assert not out_of_order, f"README Layout lists these above a lower layer: {out_of_order}"


def test_one_protocol_table():
    """Each protocol's config class is stated once (``CONFIGS``); the registry of task
    builders covers exactly the same protocols."""
    from croft.experiments.configs import CONFIGS
    from croft.experiments.protocols import PROTOCOLS

    assert sorted(CONFIGS) == sorted(PROTOCOLS.names())
    assert "config_cls" not in PROTOCOLS.get("lodo").__dataclass_fields__
