"""`kb new`: write a record and its challenge note from the templates, never overwriting."""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

from .errors import KBError
from .fsutil import check_writable, write_text_atomic
from .schema import ID_PATTERN


@dataclass
class Draft:
    """What is known about a paper before a contributor fills in the rest."""

    title: str = "TODO full title"
    authors: list[str] = field(default_factory=lambda: ["TODO First Author"])
    year: int = field(default_factory=lambda: _dt.date.today().year)
    arxiv: str | None = None
    venue_name: str = "arXiv"
    venue_kind: str = "preprint"
    paper_url: str | None = None


def _yaml_str(text: str) -> str:
    """A YAML scalar for `text`: JSON strings are valid YAML and escape everything."""
    return json.dumps(text, ensure_ascii=False)


class _Template(Template):
    """`@name` placeholders, so the YAML modeline's `$schema` stays literal."""

    delimiter = "@"


def render(paper_id: str, draft: Draft) -> tuple[str, str]:
    tmpl = resources.files("kb") / "templates"
    paper_t = _Template((tmpl / "paper.yaml").read_text(encoding="utf-8"))
    note_t = _Template((tmpl / "challenge.md").read_text(encoding="utf-8"))
    ident = (
        f"  arxiv: {_yaml_str(draft.arxiv)}" if draft.arxiv else "  arxiv: TODO  # or openreview / acl / doi"
    )
    url = draft.paper_url or (
        f"https://arxiv.org/abs/{draft.arxiv}" if draft.arxiv else "https://TODO.example.org"
    )
    paper = paper_t.substitute(
        id=paper_id,
        title=_yaml_str(draft.title),
        authors="\n".join(f"  - {_yaml_str(a)}" for a in draft.authors),
        year=draft.year,
        venue_name=_yaml_str(draft.venue_name),
        venue_year=draft.year,
        venue_kind=draft.venue_kind,
        identifiers=ident,
        paper_url=url,
    )
    note = note_t.substitute(title=re.sub(r"\s+", " ", draft.title))
    return paper, note


def target_paths(root: Path, paper_id: str) -> tuple[Path, Path]:
    """papers/<id>.yaml and challenge/<id>.md, after checking the id, that neither file exists and that
    both can be written.

    `kb new --arxiv` calls this before any network request, and `scaffold` again before writing.
    """
    if not re.match(ID_PATTERN, paper_id) or len(paper_id) > 40:
        raise KBError(
            f"invalid id {paper_id!r}: use lowercase letters, digits and single hyphens (e.g. my-method)"
        )
    paper_path = root / "papers" / f"{paper_id}.yaml"
    note_path = root / "challenge" / f"{paper_id}.md"
    for path in (paper_path, note_path):
        if path.exists():
            raise KBError(f"{path.relative_to(root)} already exists; not overwriting")
    for path in (paper_path, note_path):
        check_writable(path, what="new file")
    return paper_path, note_path


def scaffold(root: Path, paper_id: str, draft: Draft | None = None) -> list[Path]:
    """Create papers/<id>.yaml and challenge/<id>.md; refuse if either exists. Returns the paths."""
    paper_path, note_path = target_paths(root, paper_id)
    paper, note = render(paper_id, draft or Draft())
    write_text_atomic(paper_path, paper)
    try:
        write_text_atomic(note_path, note)
    except BaseException:
        paper_path.unlink(missing_ok=True)
        raise
    return [paper_path, note_path]
