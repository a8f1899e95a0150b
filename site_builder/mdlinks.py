"""A Python-Markdown extension (named in mkdocs.yml) that finds the end of a link's text in linear time.

To find the `]` that closes a link's `[`, Python-Markdown 3.11 maps every bracket of the text in one
pure-Python pass over all of it (`LinkInlineProcessor._findBracketEnds`), and makes the pass again
whenever the text has changed, which it has after every link it replaced. A paragraph or table cell
holding n links thus costs about n passes over the whole text, for each of the three processors that
read link text (inline links, references, short references). It was the largest single cost of
`mkdocs build` on this site.

Here each processor first scans forward from the `[` with a regex that skips everything but brackets,
and stops at the bracket that brings the nesting depth back to zero: the same `]` the library finds,
in time proportional to the link text. When no such bracket turns up within `SCAN_LIMIT` characters
(text with unbalanced brackets), it falls back to the library's own method, so the result never differs.
"""

from __future__ import annotations

import re
import types

from markdown import Markdown
from markdown.extensions import Extension
from markdown.inlinepatterns import LinkInlineProcessor

_BRACKET = re.compile(r"[\[\]]")
SCAN_LIMIT = 4096


def link_text(proc: LinkInlineProcessor, data: str, index: int) -> tuple[str, int, bool]:
    """`LinkInlineProcessor.getText`: the text from `index` (just after a `[`) up to its closing `]`,
    the index just past that `]`, and whether there was one."""
    depth = 1
    for m in _BRACKET.finditer(data, index, min(len(data), index + SCAN_LIMIT)):
        depth += 1 if m.group() == "[" else -1
        if depth == 0:
            return data[index : m.start()], m.end(), True
    return LinkInlineProcessor.getText(proc, data, index)


class LinearLinkText(Extension):
    """Gives every link-reading inline processor (links, images, references) the forward scan."""

    def extendMarkdown(self, md: Markdown) -> None:
        for proc in md.inlinePatterns:
            if isinstance(proc, LinkInlineProcessor):
                proc.getText = types.MethodType(link_text, proc)


def makeExtension(**kwargs) -> LinearLinkText:
    return LinearLinkText(**kwargs)
