"""Escaping and sanitising contributor text."""

from __future__ import annotations

import pytest

from site_builder.text import inline, markdown_html, url


@pytest.mark.parametrize(
    "raw",
    [
        "<script>alert(1)</script>",
        "*bold* _it_ `code` [x](javascript:alert(1))",
        "a | b # c {: .cls } \\ back",
        "\"quoted\" & 'single'",
    ],
)
def test_inline_leaves_no_markup_characters(raw: str) -> None:
    import re

    out = re.sub(r"&#[0-9]+;", "", inline(raw))  # what is left besides character references
    for ch in "<>*_`[]|#{}\\\"'&":
        assert ch not in out


def test_inline_collapses_newlines_so_text_cannot_start_a_block() -> None:
    assert inline("one\n\n# two\n- three") == "one &#35; two - three"


def test_inline_round_trips_through_html_unescape() -> None:
    import html

    raw = "Q&A <b> *x* | y [z] {a} #1 `c` \\ \"d\" 'e'"
    assert html.unescape(inline(raw)) == raw


def test_url_accepts_http_and_encodes_markdown_delimiters() -> None:
    assert url("https://en.wikipedia.org/wiki/A_(b)") == "https://en.wikipedia.org/wiki/A_%28b%29"
    assert "&amp;" in url("https://example.org/?a=1&b=2")


@pytest.mark.parametrize(
    "bad", ["javascript:alert(1)", "data:text/html,hi", "ftp://example.org/x", "/relative"]
)
def test_url_refuses_other_schemes(bad: str) -> None:
    with pytest.raises(ValueError):
        url(bad)


def test_markdown_html_drops_raw_html_and_unsafe_links() -> None:
    out = markdown_html(
        "Hi <b onclick=x>there</b>\n\n[ok](https://example.org/) [bad](javascript:alert(1))"
        " [rel](../x.md) ![img](https://example.org/i.png)"
    )
    assert "<b" not in out and "&lt;b onclick=x&gt;" in out
    assert 'href="https://example.org/"' in out
    assert "javascript:" not in out.replace("(javascript:alert(1))", "")
    assert 'href="javascript' not in out and 'href="../x.md"' not in out
    assert "<img" not in out


def test_markdown_html_renders_ordinary_markdown() -> None:
    out = markdown_html("Some **bold** and a list:\n\n- one\n- two\n")
    assert "<strong>bold</strong>" in out and out.count("<li>") == 2


def test_code_spans_are_verbatim_and_safe():
    from site_builder.text import code

    assert code("reference_impls/wanda.py") == "`reference_impls/wanda.py`"
    assert code("kb  reproduce\nwanda") == "`kb reproduce wanda`"
    # a backtick or a table pipe cannot stay in a code span: fall back to escaped text
    assert "`" not in code("a`b").replace("&#96;", "")
    assert code("a|b") == "a&#124;b"


def test_code_html_is_an_escaped_code_element_for_any_text():
    from site_builder.text import code_html

    assert code_html("reference_impls/wanda.py") == "<code>reference_impls/wanda.py</code>"
    assert code_html("kb  reproduce\nwanda") == "<code>kb reproduce wanda</code>"
    # HTML needs no fallback: a backtick or a pipe stays, markup is escaped
    assert code_html("a`b|c <i>&") == "<code>a`b|c &lt;i&gt;&amp;</code>"
