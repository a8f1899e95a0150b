"""`kb list`, `kb show`, `kb new`: read and scaffold records."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from kb.errors import KBError
from kb.paths import repo_root
from kb.schema import ORIGIN_KINDS

if TYPE_CHECKING:
    from kb.store import KnowledgeBase, Record


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "list",
        help="list papers, optionally filtered by tags",
        description="List papers. Filters combine with AND; repeat --tag for several.",
    )
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="AXIS=VALUE",
        help="keep papers carrying VALUE on AXIS (e.g. type=structured, form=fewer-layers, "
        "origin=industry); repeatable",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of records (each with its id)")
    p.set_defaults(func=_list)

    s = sub.add_parser("show", help="show one paper record")
    s.add_argument("id")
    s.add_argument("--json", action="store_true", help="print the record as JSON")
    s.set_defaults(func=_show)

    n = sub.add_parser(
        "new",
        help="scaffold papers/<id>.yaml and challenge/<id>.md",
        description="Create a record and its challenge note from the template. Never overwrites.",
    )
    n.add_argument("id")
    n.add_argument("--arxiv", metavar="ARXIV_ID", help="fill title, authors and year from the arXiv API")
    n.set_defaults(func=_new)


def load_valid() -> KnowledgeBase:
    """The knowledge base, or a one-line error if any record fails to load."""
    from kb.store import load_kb

    kb = load_kb(repo_root())
    if kb.vocab is None or kb.problems:
        first = kb.problems[0]
        raise KBError(
            f"{first} (and {len(kb.problems) - 1} more; run `kb validate`)"
            if len(kb.problems) > 1
            else str(first),
            code=1,
        )
    return kb


def _values(rec: Record, axis: str) -> list[str]:
    """The record's values on a tag axis, or on `form` / `origin` (its kind)."""
    p = rec.paper
    if axis == "form":
        return list(p.form)
    if axis == "origin":
        return [p.origin.kind] if p.origin else []
    return [e.value for e in getattr(p.tags, axis)]


def _parse_filters(kb: KnowledgeBase, raw: list[str]) -> list[tuple[str, str]]:
    import difflib

    from kb.vocab import AXES

    assert kb.vocab is not None  # load_valid() refuses a knowledge base without one
    filters = []
    for item in raw:
        axis, sep, value = item.partition("=")
        axis, value = axis.strip(), value.strip()
        if not sep or not axis or not value:
            raise KBError(f"--tag expects AXIS=VALUE, got {item!r}")
        if axis == "form":
            forms = kb.vocab.lists["form"]
            if forms.value(value) is None:
                near = forms.suggest(value)
                raise KBError(
                    f"{value!r} is not a form value" + (f" (did you mean {near!r}?)" if near else "")
                )
        elif axis == "origin":
            if value not in ORIGIN_KINDS:
                close = difflib.get_close_matches(value, ORIGIN_KINDS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (one of {', '.join(ORIGIN_KINDS)})"
                raise KBError(f"{value!r} is not an origin kind{hint}")
        elif axis not in AXES:
            raise KBError(f"unknown axis {axis!r}; axes are {', '.join(AXES)}, form, origin")
        elif kb.vocab[axis].value(value) is None:
            near = kb.vocab[axis].suggest(value)
            raise KBError(f"{value!r} is not a {axis} value" + (f" (did you mean {near!r}?)" if near else ""))
        filters.append((axis, value))
    return filters


def _list(args: argparse.Namespace) -> int:
    from kb.store import record_json

    kb = load_valid()
    filters = _parse_filters(kb, args.tag)
    chosen = [r for r in kb.records if all(v in _values(r, a) for a, v in filters)]
    chosen.sort(key=lambda r: (-r.paper.venue.year, r.paper.id))
    if args.json:
        print(json.dumps([record_json(r) for r in chosen], indent=2, ensure_ascii=False))
        return 0
    for r in chosen:
        p = r.paper
        venue = f"{p.venue.name}'{p.venue.year % 100:02d}"
        print(f"{p.id:28} {venue:18} {p.short_name or p.title}")
    return 0


def _show(args: argparse.Namespace) -> int:
    import difflib

    from kb.store import record_json

    kb = load_valid()
    rec = kb.get(args.id)
    if rec is None:
        near = difflib.get_close_matches(args.id, [r.paper.id for r in kb.records], n=1)
        raise KBError(f"no paper {args.id!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    data = record_json(rec)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    p = rec.paper
    print(f"{p.title}  [{p.id}]")
    print(f"{', '.join(p.authors)}")
    if p.origin is not None:
        names = ", ".join(p.origin.affiliations)
        print(f"origin: {p.origin.kind}" + (f" ({names})" if names else ""))
    print(f"{p.venue.name} {p.venue.year} ({p.venue.kind}); first public {p.year}")
    print(f"paper: {p.links.paper}")
    for c in p.links.code:
        print(f"code:  {c.url} ({'official' if c.official else 'community'}, {c.framework})")
    assert kb.vocab is not None
    for axis in kb.vocab.ordered():
        entries = getattr(p.tags, axis.axis)
        shown = []
        for e in entries:
            quals = ", ".join(
                f"{k}: {'/'.join(v) if isinstance(v, list) else v}" for k, v in e.qualifiers.items()
            )
            shown.append(f"{e.value} ({quals})" if quals else e.value)
        print(f"{axis.label:9} {'; '.join(shown)}")
    if p.form:
        forms = kb.vocab.lists["form"]
        print(f"{'Form':9} {'; '.join(sorted(p.form, key=forms.rank))}")
    print(f"takeaway: {p.takeaway}")
    for i, f in enumerate(p.findings, 1):
        theme = f" [{f.theme}]" if f.theme else ""
        print(f"finding {i}{theme}: {f.claim} ({f.source.locator}, {f.source.url})")
    if kb.challenges.get(p.id):
        print(f"challenge: {kb.challenges[p.id].strip()}")
    print(f"reproduce: {data['reproduce'] or 'no reference implementation yet'}")
    return 0


def _new(args: argparse.Namespace) -> int:
    import sys

    from kb.scaffold import Draft, scaffold, target_paths

    root = repo_root()
    draft = Draft()
    if args.arxiv:
        target_paths(root, args.id)  # refuse a bad id or an existing file before any network request
        try:
            from kb.arxiv import draft_from_arxiv
        except ImportError:
            raise KBError("--arxiv is not available in this installation") from None
        draft = draft_from_arxiv(args.arxiv)
    for path in scaffold(root, args.id, draft):
        print(f"created {path.relative_to(root)}", file=sys.stderr)
    print("next: fill in the TODOs, then run `kb validate`", file=sys.stderr)
    return 0
