"""The raw-region Markdown extension (site_builder/rawhtml.py): a marked region of raw HTML reaches the page
as it is, the page reads the same as without the extension, and the region ends at its marker."""

from __future__ import annotations

import markdown

from site_builder.rawhtml import CLOSE, OPEN

# The extensions mkdocs.yml names, less the link-text one (no links to read here).
EXTENSIONS = ["attr_list", "md_in_html", "tables", "admonition", "toc"]

PAGE = f"""# Title

{OPEN}
<table>
<thead>
<tr><th>Name</th><th style="text-align: right;">Value</th></tr>
</thead>
<tbody>
<tr><td><span id="result-a"></span>a &#42;b&#42;</td><td><a href="../x/#y" title="t">1.5</a></td></tr>
</tbody>
</table>

<ul>
<li>after a blank line, still the same region</li>
</ul>
{CLOSE}

## Next {{: #next }}

Some *Markdown* and a [link](#result-a).
"""


def _html(text: str, *, raw: bool) -> str:
    extensions = EXTENSIONS + (["site_builder.rawhtml"] if raw else [])
    return markdown.markdown(text, extensions=extensions)


def _lines(html: str) -> list[str]:
    """The non-blank lines, the marker comments left out (they are all the extension removes)."""
    return [line for line in html.splitlines() if line.strip() and line not in (OPEN, CLOSE)]


def test_a_region_renders_as_it_would_without_the_extension() -> None:
    with_ext, without = _html(PAGE, raw=True), _html(PAGE, raw=False)
    assert OPEN not in with_ext and CLOSE not in with_ext
    assert OPEN in without  # Markdown keeps the comments as raw HTML of their own
    assert _lines(with_ext) == _lines(without)
    # the region's HTML is in the page byte for byte, and the Markdown around it is still Markdown
    region = PAGE.split(OPEN + "\n")[1].split("\n" + CLOSE)[0]
    assert region in with_ext
    assert '<h2 id="next">Next</h2>' in with_ext and "<em>Markdown</em>" in with_ext


def test_the_region_ends_at_its_marker_not_where_html_parser_would_end_it() -> None:
    """Nothing inside a region is parsed: an element left open there (a template bug) stays inside the
    region, where without the extension it would swallow the heading after it."""
    page = f'# Title\n\n{OPEN}\n<div class="open">\n<p>never closed</p>\n{CLOSE}\n\n## Next\n'
    assert '<h2 id="next">Next</h2>' in _html(page, raw=True)
    assert '<h2 id="next">' not in _html(page, raw=False)


def test_an_unclosed_region_is_left_to_markdown() -> None:
    page = PAGE.replace(CLOSE + "\n", "")
    assert _html(page, raw=True) == _html(page, raw=False)


def test_a_page_without_regions_is_untouched() -> None:
    page = "# Title\n\n<div>\n<p>raw</p>\n</div>\n\n| a | b |\n|--|--|\n| 1 | 2 |\n"
    assert _html(page, raw=True) == _html(page, raw=False)
