"""One BibTeX entry per paper, built from the record's bibliographic fields."""

from __future__ import annotations

import re
import unicodedata

from kb.schema import Paper

# Full proceedings or journal names for the venues the catalogue uses; a venue not listed keeps its own name.
VENUE_TITLES = {
    "AAAI": "Proceedings of the AAAI Conference on Artificial Intelligence",
    "ACL": "Proceedings of the Annual Meeting of the Association for Computational Linguistics",
    "COLM": "Conference on Language Modeling",
    "EMNLP": "Proceedings of the Conference on Empirical Methods in Natural Language Processing",
    "ICLR": "International Conference on Learning Representations",
    "ICML": "International Conference on Machine Learning",
    "MLSys": "Proceedings of Machine Learning and Systems",
    "NAACL": "Proceedings of the Conference of the North American Chapter of the Association for "
    "Computational Linguistics",
    "NeurIPS": "Advances in Neural Information Processing Systems",
    "TMLR": "Transactions on Machine Learning Research",
    "VLDB": "Proceedings of the VLDB Endowment",
}
_ACL_FAMILY = ("ACL", "EMNLP", "NAACL", "EACL")

_BIB_SPECIAL = re.compile(r"([&%$#_{}~^\\])")
_REPLACE = {"~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def bib_escape(text: str) -> str:
    """Escape LaTeX specials so a title like 'Q&A with 50% sparsity' survives BibTeX."""
    text = " ".join(text.split())
    return _BIB_SPECIAL.sub(lambda m: _REPLACE.get(m.group(1), "\\" + m.group(1)), text)


def _ascii_word(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", folded.lower())


def cite_key(p: Paper) -> str:
    """A citation key in the common author-year-word style: the first author's surname, the year of the
    venue (or of first appearance) and the paper's short name or id, e.g. `sun2024wanda`."""
    surname = _ascii_word(p.authors[0].split()[-1]) if p.authors else ""
    year = p.venue.year if p.venue.kind in ("conference", "workshop", "journal") else p.year
    word = _ascii_word((p.short_name or p.id).split()[0]) or _ascii_word(p.id)
    return f"{surname or 'anon'}{year}{word}"


def _booktitle(name: str, year: int, kind: str, track: str | None) -> str:
    """The proceedings a conference or workshop paper appeared in, by its full name: ACL-family Findings
    papers under "Findings of the ACL: <venue> <year>", workshops named after their host conference."""
    full = VENUE_TITLES.get(name, name)
    if track and "findings" in track.lower() and name in _ACL_FAMILY:
        return f"Findings of the Association for Computational Linguistics: {name} {year}"
    title = f"{full} ({name} {year})" if full != name else f"{name} {year}"
    if kind == "workshop":
        title = (f"{track}, " if track else "Workshop at ") + title
    elif track:
        title += f", {track}"
    return title


def entry(p: Paper, key: str | None = None) -> str:
    """A BibTeX entry keyed `cite_key(p)` unless told otherwise; conference and workshop papers are
    `@inproceedings` with the proceedings' full name, journals `@article`, preprints and submissions `@misc`
    with their arXiv eprint."""
    v = p.venue
    fields: list[tuple[str, str]] = [
        ("title", "{" + bib_escape(p.title) + "}"),
        ("author", " and ".join(bib_escape(a) for a in p.authors)),
    ]
    if v.kind in ("conference", "workshop"):
        kind = "inproceedings"
        fields.append(("booktitle", bib_escape(_booktitle(v.name, v.year, v.kind, v.track))))
        fields.append(("year", str(v.year)))
    elif v.kind == "journal":
        kind = "article"
        fields.append(("journal", bib_escape(VENUE_TITLES.get(v.name, v.name))))
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
    return f"@{kind}{{{key or cite_key(p)},\n{body}\n}}\n"


def _letters(n: int) -> str:
    """0 -> a, 1 -> b, ..., 25 -> z, 26 -> aa, 27 -> ab, ...: a suffix for every n."""
    out = ""
    n += 1
    while n:
        n, rest = divmod(n - 1, 26)
        out = "abcdefghijklmnopqrstuvwxyz"[rest] + out
    return out


def unique_keys(papers: list[Paper]) -> dict[str, str]:
    """Record id -> citation key, with `b`, `c`, ..., `z`, `aa`, `ab`, ... appended when several papers
    would share a key (in id order)."""
    keys: dict[str, str] = {}
    used: set[str] = set()
    last: dict[str, int] = {}  # base key -> the last suffix number tried, so many clashes stay linear
    for p in sorted(papers, key=lambda p: p.id):
        base = key = cite_key(p)
        n = last.get(base, 0)
        while key in used:
            n += 1
            key = base + _letters(n)
        last[base] = n
        used.add(key)
        keys[p.id] = key
    return keys


def bibliography(papers: list[Paper]) -> str:
    """All entries, sorted by key, separated by blank lines."""
    keys = unique_keys(papers)
    return "\n".join(entry(p, keys[p.id]) for p in sorted(papers, key=lambda p: keys[p.id]))
