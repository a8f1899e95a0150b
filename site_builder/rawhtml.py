"""A Python-Markdown extension (named in mkdocs.yml) that passes marked regions of raw HTML through unparsed.

The generated pages with the most content (paper pages, leaderboards, key findings) are raw HTML between
Markdown headings. Python-Markdown would still read every tag of that HTML with `html.parser` to find where
each raw block ends (md_in_html's parser, which does more work per tag), and mkdocs would read the page once
more to collect its ids for the anchor checks: on a paper page the two parses cost more than everything else
Markdown does there.

A template marks such a region with a line `<!-- raw -->` before it and a line `<!-- /raw -->` after it. This
extension stores the lines between them in Markdown's HTML stash as one block before either parser runs, and
drops the two marker lines; Markdown then puts the block back, unchanged, where the region was. Without the
extension the same page renders to the same HTML, only slower (and with the two comments).

What the region holds is the template's business: it must be complete HTML (the addresses the site serves,
every value escaped), since nothing in it is read again. Contributor text can never produce a marker line:
every value the templates print is escaped, `<` included. Two consequences, both checked by the site tests
on a built site rather than by mkdocs: mkdocs does not validate the links inside a region, and it does not
see the ids inside one, so a Markdown link to such an id (`page.md#id`) fails the strict build; pages link
to those ids from raw HTML only.
"""

from __future__ import annotations

from markdown import Markdown
from markdown.extensions import Extension
from markdown.preprocessors import Preprocessor

OPEN = "<!-- raw -->"
CLOSE = "<!-- /raw -->"
# After `normalize_whitespace` (30), before mkdocs' id scan (21) and Python-Markdown's `html_block` (20).
PRIORITY = 25


class RawRegions(Preprocessor):
    """Stores each marked region as one raw HTML block and leaves its placeholder on a line of its own."""

    def run(self, lines: list[str]) -> list[str]:
        if OPEN not in lines:
            return lines
        out: list[str] = []
        i = 0
        while i < len(lines):
            if lines[i] != OPEN:
                out.append(lines[i])
                i += 1
                continue
            try:
                end = lines.index(CLOSE, i + 1)
            except ValueError:  # an unclosed region stays as it is: Markdown parses it the slow way
                out.extend(lines[i:])
                break
            block = "\n".join(lines[i + 1 : end])
            out += ["", self.md.htmlStash.store(block), ""]
            i = end + 1
        return out


class RawHtmlRegions(Extension):
    def extendMarkdown(self, md: Markdown) -> None:
        md.preprocessors.register(RawRegions(md), "kb_raw_regions", PRIORITY)


def makeExtension(**kwargs) -> RawHtmlRegions:
    return RawHtmlRegions(**kwargs)
