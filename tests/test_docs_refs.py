"""Every reference the code makes to documentation resolves inside the repository.

Code, configs and the README cite ``docs/<page>.md#<anchor>`` and the ids B1–B22, D1–D7,
X1–X7 (behaviours of the authors' code, defined in docs/deviations.md). Nothing may point
outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    *sorted((ROOT / "src").rglob("*.py")),
    *sorted((ROOT / "configs").glob("*.yaml")),
    *sorted((ROOT / "benchmarks").glob("*.py")),
    ROOT / "README.md",
    ROOT / "BENCHMARKS.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
DOC_REF = re.compile(r"docs/([a-z0-9_-]+\.md)(?:#([a-z0-9_-]+))?")
ANCHOR = re.compile(r'<a id="([a-z0-9_-]+)"></a>|^#+ .*$', re.M)
ID_REF = re.compile(r"\b([BDX])(\d{1,2})\b")


def _anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    ids = set(re.findall(r'<a id="([a-z0-9_-]+)"', text))
    for title in re.findall(r"^#+ (.*)$", text, re.M):  # GitHub-style heading slugs
        ids.add(re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-"))
    return ids


def test_doc_references_resolve():
    missing = []
    for src in SOURCES:
        for page, anchor in DOC_REF.findall(src.read_text(encoding="utf-8")):
            target = ROOT / "docs" / page
            if not target.is_file():
                missing.append(f"{src.relative_to(ROOT)}: docs/{page}")
            elif anchor and anchor not in _anchors(target):
                missing.append(f"{src.relative_to(ROOT)}: docs/{page}#{anchor}")
    assert not missing, "unresolved documentation references:\n" + "\n".join(sorted(set(missing)))


def test_deviation_ids_cited_in_code_are_defined():
    defined = _anchors(ROOT / "docs" / "deviations.md")
    cited = set()
    for src in SOURCES:
        if src.suffix == ".py" or src.suffix == ".yaml":
            cited |= {f"{k.lower()}{n}" for k, n in ID_REF.findall(src.read_text(encoding="utf-8"))}
    ours = {
        c for c in cited if (c[0] == "b" and int(c[1:]) <= 22) or (c[0] in "dx" and int(c[1:]) <= 7)
    }
    assert ours <= defined, f"ids cited but not defined in docs/deviations.md: {ours - defined}"


def test_nothing_points_outside_the_repository():
    bad = [
        str(src.relative_to(ROOT))
        for src in SOURCES
        if re.search(r"\.\./shared|CROFT_SPEC|WORLD_NOTES", src.read_text(encoding="utf-8"))
    ]
    assert not bad, f"references to material outside the repository: {bad}"
