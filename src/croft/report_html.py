"""One report document, rendered twice: Markdown (``report.md``) and a self-contained
HTML file (``report.html``, figures embedded as base64 PNG, no external resources).

HTML sections carry ids and a contents list of links to them follows the title; blocks
written inside :meth:`Doc.details` fold into one ``<details>`` element (shown in full in
Markdown). Result tables bold every row tied for a column's best
(:func:`croft.tables.best_cells`, the rule of the Markdown and LaTeX tables too).
"""

from __future__ import annotations

import base64
import contextlib
import html
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from croft.tables import Table, render, to_markdown

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0;font-size:0.9em}
th,td{border-bottom:1px solid #ccc;padding:0.2em 0.6em;text-align:right}
th:first-child,td:first-child{text-align:left}
thead tr:first-child th{border-bottom:1px solid #888}
td.best{font-weight:bold}
img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:0.9em;color:#555}
ul.notes{font-size:0.9em;color:#444}
div.beside{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
div.beside figure{flex:1 1 520px;margin:0}
nav.contents{font-size:0.9em;border:1px solid #ddd;padding:0.2em 1em;margin:1em 0}
details summary{cursor:pointer;color:#444}
"""


def _inline(text: str) -> str:
    """Escape, then turn ``**bold**`` pairs into <strong>."""
    parts = html.escape(text).split("**")
    return "".join(p if i % 2 == 0 else f"<strong>{p}</strong>" for i, p in enumerate(parts))


class Doc:
    """An ordered list of blocks: headings, paragraphs, bullet lists, tables, figures."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.blocks: list[tuple[str, Any]] = []
        self._ids: list[str] = []

    def h2(self, text: str) -> str:
        """A section heading; returns its HTML id (unique in the document)."""
        base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].strip("-") or "section"
        anchor, k = base, 2
        while anchor in self._ids:
            anchor, k = f"{base}-{k}", k + 1
        self._ids.append(anchor)
        self.blocks.append(("h2", (text, anchor)))
        return anchor

    @contextlib.contextmanager
    def details(self, summary: str) -> Iterator[None]:
        """Blocks written inside fold into one collapsed ``<details>`` (HTML)."""
        outer, self.blocks = self.blocks, []
        try:
            yield
        finally:
            inner, self.blocks = self.blocks, outer
            self.blocks.append(("details", (summary, inner)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def items(self, lines: Sequence[str]) -> None:
        self.blocks.append(("ul", [x[2:] if x.startswith("- ") else x for x in lines]))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows])))

    def result_table(self, table: Table) -> None:
        self.blocks.append(("result", table))

    def figure(self, png: Path, rel: str, caption: str) -> None:
        self.blocks.append(("figure", (png, rel, caption)))

    def beside(
        self,
        png: Path,
        rel: str,
        caption: str,
        header: Sequence[str],
        rows: Sequence[Sequence[str]],
    ) -> None:
        """A figure with a table beside it (HTML); one after the other in Markdown."""
        self.blocks.append(("beside", (png, rel, caption, list(header), [list(r) for r in rows])))

    def markdown(self) -> str:
        return "\n".join([f"# {self.title}", "", *self._markdown(self.blocks)])

    def _markdown(self, blocks: Sequence[tuple[str, Any]]) -> list[str]:
        out: list[str] = []
        for kind, x in blocks:
            if kind == "h2":
                out += [f"## {x[0]}", ""]
            elif kind == "details":
                out += self._markdown(x[1])
            elif kind == "p":
                out += [x, ""]
            elif kind == "ul":
                out += [f"- {line}" for line in x] + [""]
            elif kind == "table":
                out += [render(x[0], x[1], markdown=True), ""]
            elif kind == "result":
                out += [to_markdown(x), ""]
            elif kind == "figure":
                out += [f"![{x[2]}]({x[1]})", "", f"*{x[2]}*", ""]
            elif kind == "beside":
                out += [f"![{x[2]}]({x[1]})", "", f"*{x[2]}*", ""]
                out += [render(x[3], x[4], markdown=True), ""]
        return out

    def contents(self) -> list[tuple[str, str]]:
        """``[(heading, id)]`` of every section, in order."""
        return [x for kind, x in self.blocks if kind == "h2"]

    def html(self) -> str:
        links = "".join(
            f'<li><a href="#{a}">{html.escape(_short(t))}</a></li>' for t, a in self.contents()
        )
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        if links:
            body.append(f'<nav class="contents"><strong>Contents</strong><ul>{links}</ul></nav>')
        body += self._html(self.blocks)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n"
        )

    def _html(self, blocks: Sequence[tuple[str, Any]]) -> list[str]:
        body: list[str] = []
        for kind, x in blocks:
            if kind == "h2":
                body.append(f'<h2 id="{x[1]}">{html.escape(x[0])}</h2>')
            elif kind == "details":
                inner = "\n".join(self._html(x[1]))
                body.append(f"<details><summary>{html.escape(x[0])}</summary>\n{inner}\n</details>")
            elif kind == "p":
                body.append(f"<p>{_inline(x)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(s)}</li>" for s in x) + "</ul>")
            elif kind == "table":
                body.append(_html_table([("", x[0])], x[1], flat_header=True))
            elif kind == "result":
                body.append(_result_html(x))
            elif kind == "figure":
                body.append(_figure_html(x[0], x[2]))
            elif kind == "beside":
                table = _html_table([("", x[3])], x[4], flat_header=True)
                body.append(f'<div class="beside">{_figure_html(x[0], x[2])}{table}</div>')
        return body


def _short(title: str, width: int = 90) -> str:
    """A heading for the contents list: up to its first ``;``, cut at a word."""
    head = title.split(";", 1)[0]
    return head if len(head) <= width else head[:width].rsplit(" ", 1)[0] + " …"


def _figure_html(png: Path, caption: str) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
        f'{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def _html_table(
    groups: Sequence[tuple[str, Sequence[str]]],
    rows: Sequence[Sequence[str]],
    *,
    flat_header: bool = False,
    best: Sequence[frozenset[int]] = (),
) -> str:
    head = []
    if flat_header:
        head.append(
            "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for _, hs in groups for h in hs) + "</tr>"
        )
    else:
        if any(g for g, _ in groups):
            top = '<tr><th rowspan="2">method</th>' + "".join(
                f'<th colspan="{len(cols)}">{html.escape(g)}</th>' for g, cols in groups
            )
            head.append(top + "</tr>")
            head.append(
                "<tr>"
                + "".join(f"<th>{html.escape(c)}</th>" for _, cols in groups for c in cols)
                + "</tr>"
            )
        else:
            cols = [c for _, cs in groups for c in cs]
            head.append(
                "<tr><th>method</th>"
                + "".join(f"<th>{html.escape(c)}</th>" for c in cols)
                + "</tr>"
            )
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, text in enumerate(row):
            cls = ' class="best"' if 0 < j <= len(best) and i in best[j - 1] else ""
            cells.append(f"<td{cls}>{html.escape(str(text))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead>{''.join(head)}</thead><tbody>{''.join(body)}</tbody></table>"


def _result_html(table: Table) -> str:
    from croft.tables import best_cells

    out = _html_table(table.groups, table.text_rows(), best=best_cells(table))
    if table.notes:
        out += (
            '<ul class="notes">'
            + "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
            + "</ul>"
        )
    return out
