"""Render template data to file contents: Markdown pages, exports, CSS, the README section.

Returns `{relative path: text}` mappings and writes nothing; `site_builder.build` does the writing.
Templates are files in `templates/`, loaded with StrictUndefined so a missing field fails loudly.
Every `{{ value }}` is escaped as inline text (`text.inline`: HTML and Markdown specials) unless it
is `Markup`; macros and the `url`/`html`/`code`/`code_html`/`md_inline`/`claim_html` filters return
Markup. The pages with the most content (paper pages, leaderboards, key findings) are raw HTML between
Markdown headings, in regions that `site_builder.rawhtml` passes through mkdocs unparsed.
"""

from __future__ import annotations

import html
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from markupsafe import Markup

from . import bibtex
from .badges import badge_files
from .keyfacts import claim_html
from .svgcache import drawn
from .text import code, code_html, html_text, inline, inline_markdown_html, url

ASSETS = ("kb.css", "kb.js", "kb-filter.js")
_HERE = Path(__file__).resolve().parent


def _finalize(value: Any) -> Markup:
    if isinstance(value, Markup):
        return value
    if value is None:
        raise ValueError("a template printed None; guard the field with {% if %}")
    if isinstance(value, bool):
        raise ValueError("a template printed a boolean; format it explicitly")
    return Markup(inline(value))


def _join(items: Any, sep: str = "") -> Markup:
    """Jinja's `join`, but each item escaped as inline text (the separator is template text)."""
    return Markup(sep).join(Markup(inline(x)) if not isinstance(x, Markup) else x for x in items)


def _colour(value: str) -> Markup:
    """A `#rrggbb` colour for CSS; anything else is a bug (the vocabulary schema checks colours)."""
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        raise ValueError(f"not a #rrggbb colour: {value!r}")
    return Markup(value)


def _front_title(text: str) -> Markup:
    """A page title for YAML front matter. mkdocs-material prints `page.meta.title` unescaped (and a
    title taken from the H1 through `striptags`, which un-escapes it), so the title goes in as HTML
    text with entities, quoted as a JSON string (which YAML reads as a double-quoted scalar)."""
    return Markup(json.dumps(html.escape(" ".join(text.split()), quote=True), ensure_ascii=False))


@cache
def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_HERE / "templates")),
        undefined=jinja2.StrictUndefined,
        autoescape=True,  # macros return Markup; `_finalize` escapes every other value
        finalize=_finalize,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["url"] = url
    env.filters["join"] = _join
    env.filters["colour"] = _colour
    env.filters["front_title"] = _front_title
    env.filters["html"] = html_text
    env.filters["code"] = code
    env.filters["md_inline"] = inline_markdown_html
    env.filters["claim_html"] = claim_html
    env.filters["code_html"] = code_html
    return env


def _render(name: str, **data: Any) -> str:
    text = environment().get_template(name).render(**data)
    # Tidy: at most one blank line in a row, exactly one newline at the end.
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip("\n") + "\n"


def render_pages(ctx: dict[str, Any], export: dict[str, Any], bib: str) -> dict[str, str]:
    """Every file of the generated docs folder, keyed by path relative to it."""
    pages: dict[str, str] = {
        "index.md": _render("index.md.j2", **ctx),
        "tables.md": _render("tables.md.j2", **ctx),
        "all-papers.md": _render("all_papers.md.j2", **ctx),
        "challenges.md": _render("challenges.md.j2", **ctx),
        "reproductions.md": _render("reproductions.md.j2", **ctx),
        "findings.md": _render("findings.md.j2", **ctx),
        "concepts/form.md": _render("form.md.j2", **ctx),
        "assets/axes.css": _render("axes.css.j2", **ctx),
        "papers.json": json.dumps(export, indent=1, ensure_ascii=False, sort_keys=False) + "\n",
        "papers.bib": bib,
        "results.csv": ctx["results_csv"],
        "leaderboards/index.md": _render("leaderboards.md.j2", **ctx),
    }
    for board in ctx["leaderboards"]:
        pages[f"leaderboards/{board['id']}.md"] = _render("leaderboard.md.j2", s=board)
        if board["figure"]:  # best over time, when numbers came in more than one year
            from .plots import render_year_svg

            pages[f"leaderboards/{board['id']}.svg"] = drawn(render_year_svg, board["figure"])
            pages[f"leaderboards/{board['id']}.dark.svg"] = drawn(render_year_svg, board["figure"], dark=True)
    for a in ctx["axes"]:
        pages[f"concepts/{a['id']}.md"] = _render("concept.md.j2", a=a)
    for p in ctx["papers"]:
        pages[f"papers/{p['id']}.md"] = _render("paper.md.j2", p=p)
    for name in ASSETS:
        pages[f"assets/{name}"] = (_HERE / "assets" / name).read_text(encoding="utf-8")
    if ctx["svg_figures"]:
        from .plots import render_svg  # matplotlib is imported only when there is something to draw

        for fig in ctx["svg_figures"]:
            pages[f"plots/{fig.key}.svg"] = drawn(render_svg, fig)
            pages[f"plots/{fig.key}.dark.svg"] = drawn(
                render_svg, fig, dark=True
            )  # shown in the slate scheme
    return dict(sorted(pages.items()))


def render_readme_section(ctx: dict[str, Any]) -> str:
    return _render("readme.md.j2", **ctx)


def render_badges(ctx: dict[str, Any]) -> dict[str, str]:
    return badge_files(ctx["axes"], ctx["form"])


def render_bibliography(papers) -> str:
    return bibtex.bibliography(papers)
