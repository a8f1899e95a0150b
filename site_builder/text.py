"""Turning contributor text into safe output: escaped inline text, sanitised Markdown, safe URLs.

Every string a contributor wrote reaches a page through one of these functions. Templates get
`inline` applied to every `{{ ... }}` automatically (see `render.py`); the other helpers return
`Markup`, which marks their output as already safe.
"""

from __future__ import annotations

import html
import re
from functools import cache
from urllib.parse import quote, urlsplit

from markupsafe import Markup

# Characters that mean something to Markdown (or its attr_list / tables extensions) or to HTML.
# They become numeric character references, which both Python-Markdown and GitHub show literally.
_SPECIAL = re.compile(r"[&<>\"'\\`*_\[\]{}|#]")
_SPACE = re.compile(r"\s+")


def inline(text: object) -> str:
    """`text` as one line of literal text, safe in Markdown, in a Markdown table cell and in HTML
    (element content or a quoted attribute). White space, newlines included, collapses to one space,
    so the text can never start a Markdown block of its own."""
    s = _SPACE.sub(" ", str(text)).strip()
    return _SPECIAL.sub(lambda m: f"&#{ord(m.group())};", s)


_CODE_SAFE = re.compile(r"^[^`|\x00-\x1f]*$")


def code(text: object) -> Markup:
    """`text` as an inline code span. Markdown shows code spans verbatim (entities included), so
    they cannot go through `inline`; text with a backtick or a table pipe falls back to `inline`."""
    s = _SPACE.sub(" ", str(text)).strip()
    if s and _CODE_SAFE.match(s):
        return Markup(f"`{s}`")
    return Markup(inline(s))


def code_html(text: object) -> Markup:
    """`text` as an HTML `<code>` element, for pages written as raw HTML (the paper pages): what `code`
    becomes once Markdown has read it, without the fallback, since HTML has no trouble with a backtick
    or a pipe."""
    return Markup(f"<code>{html.escape(_SPACE.sub(' ', str(text)).strip(), quote=False)}</code>")


def is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def url(value: str) -> Markup:
    """An http(s) URL made safe as a Markdown link target and as a quoted HTML attribute.

    Anything else raises ValueError: the schema only admits http(s) links, so reaching this is a bug.
    """
    if not is_http_url(value):
        raise ValueError(f"refusing a non-http(s) link: {value!r}")
    # Keep the URL's own reserved characters; percent-encode what Markdown or HTML would read.
    return Markup(
        quote(value, safe="/:?#[]@!$&'*+,;=%~-._")
        .replace("&", "&amp;")
        .replace("'", "%27")
        .replace("(", "%28")
        .replace(")", "%29")
        .replace("[", "%5B")
        .replace("]", "%5D")
        .replace("*", "%2A")
    )


def html_text(text: object) -> Markup:
    """Plain HTML escaping, for text placed inside raw HTML blocks such as `<pre>`."""
    return Markup(html.escape(str(text), quote=True))


@cache
def _markdown():
    """One CommonMark parser with raw HTML off, images off and only http(s) links (see markdown_html)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.disable("image")
    md.validateLink = is_http_url  # type: ignore[method-assign]
    return md


def inline_markdown_html(source: str) -> Markup:
    """Like `markdown_html` for one line of text, without the surrounding paragraph."""
    return Markup(_markdown().renderInline(" ".join(source.split())))


def markdown_html(source: str) -> Markup:
    """Render contributor Markdown to HTML with raw HTML disabled and only http(s) links kept.

    A link or image with any other target (javascript:, data:, relative paths) stays literal text.
    Images are dropped to their alt text: notes are prose, and remote images would be tracked.
    """
    out = _markdown().render(source)
    # Links open the paper's world, not our site: mark them as external and without referrer.
    out = out.replace("<a href=", '<a rel="nofollow noopener" href=')
    return Markup(out)
