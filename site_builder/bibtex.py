"""One BibTeX entry per paper, built from the record's bibliographic fields."""

from __future__ import annotations

import re

from kb.schema import Paper

_BIB_SPECIAL = re.compile(r"([&%$#_{}~^\\])")
_REPLACE = {"~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def bib_escape(text: str) -> str:
    """Escape LaTeX specials so a title like 'Q&A with 50% sparsity' survives BibTeX."""
    text = " ".join(text.split())
    return _BIB_SPECIAL.sub(lambda m: _REPLACE.get(m.group(1), "\\" + m.group(1)), text)


def entry(p: Paper) -> str:
    """A BibTeX entry keyed by the record id; conference and workshop papers are `@inproceedings`,
    journals `@article`, preprints and submissions `@misc` with their arXiv eprint."""
    v = p.venue
    fields: list[tuple[str, str]] = [
        ("title", "{" + bib_escape(p.title) + "}"),
        ("author", " and ".join(bib_escape(a) for a in p.authors)),
    ]
    if v.kind in ("conference", "workshop"):
        kind = "inproceedings"
        venue = f"{v.name} {v.year}" + (
            " Workshop" if v.kind == "workshop" and "workshop" not in v.name.lower() else ""
        )
        fields.append(("booktitle", bib_escape(venue + (f" ({v.track})" if v.track else ""))))
        fields.append(("year", str(v.year)))
    elif v.kind == "journal":
        kind = "article"
        fields.append(("journal", bib_escape(v.name)))
        fields.append(("year", str(v.year)))
    else:
        kind = "misc"
        fields.append(("year", str(p.year)))
        if v.kind == "under-review":
            fields.append(("note", bib_escape(f"Under review at {v.name} {v.year}")))
    ids = p.identifiers
    if ids.arxiv:
        fields += [("eprint", ids.arxiv), ("archivePrefix", "arXiv")]
    if ids.doi:
        fields.append(("doi", bib_escape(ids.doi)))
    fields.append(("url", p.links.paper))
    width = max(len(k) for k, _ in fields)
    body = ",\n".join(f"  {k.ljust(width)} = {{{val}}}" for k, val in fields)
    return f"@{kind}{{{p.id},\n{body}\n}}\n"


def bibliography(papers: list[Paper]) -> str:
    """All entries, sorted by key, separated by blank lines."""
    return "\n".join(entry(p) for p in sorted(papers, key=lambda p: p.id))
