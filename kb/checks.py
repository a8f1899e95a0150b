"""Checks that need more than one field: tags against the vocabulary, cross references between
records, challenge notes, and the link from a record to its reference implementation."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from . import provenance as prov
from .keyfacts import check_key_facts
from .schema import Paper, sentence_count
from .store import KnowledgeBase, Problem, Record
from .vocab import AXES, NOTE_MAX, ChoiceQualifier, Vocabulary, parse_quantity
from .yamlio import Loaded, Path_

CHALLENGE_MIN_CHARS = 80
CHALLENGE_MAX_CHARS = 6000
TITLE_SIMILARITY = 0.92
_RAW_HTML = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>")


def check_all(kb: KnowledgeBase, runnable: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem in the knowledge base, sorted by file and line.

    `runnable` (paper id -> implementation file) comes from the harness registry; the command line passes
    it, so this core module never imports the harness. Without it only the files' existence is checked.
    """
    problems = list(kb.problems)
    if kb.vocab is not None:
        for rec in kb.records:
            problems.extend(check_record(rec, kb.vocab))
        for file, loaded in kb.unloadable:  # still tell the contributor about every tag
            problems.extend(check_tags(file, loaded, kb.vocab))
            problems.extend(check_results(file, loaded, kb.vocab))
    for rec in kb.records:
        problems.extend(check_provenance(rec, _raw_lines(kb, rec)))
    for file, loaded in [*((r.file, r.loaded) for r in kb.records), *kb.unloadable]:
        problems.extend(check_todos(file, loaded))
    problems.extend(check_cross(kb))
    problems.extend(check_challenges(kb))
    problems.extend(check_implementations(kb, runnable))
    if kb.vocab is not None:
        problems.extend(check_key_facts(kb, kb.vocab, runnable))
    return sorted(set(problems))


def check_record(rec: Record, vocab: Vocabulary) -> Iterator[Problem]:
    p = rec.paper
    stem = rec.file.rsplit("/", 1)[-1].removesuffix(".yaml")
    if p.id != stem:
        yield Problem(rec.file, rec.line("id"), "id", f"id {p.id!r} must equal the file name {stem!r}")
    if p.venue.year < p.year:
        yield Problem(
            rec.file,
            rec.line("venue", "year"),
            "venue.year",
            f"{p.venue.year} is before the first public year {p.year}",
        )
    n = sentence_count(p.takeaway)
    if n > 3:
        yield Problem(rec.file, rec.line("takeaway"), "takeaway", f"{n} sentences; keep it to 1-3")
    yield from check_tags(rec.file, rec.loaded, vocab)
    yield from check_results(rec.file, rec.loaded, vocab, p.id)
    for path in p.unverified:
        number_key = prov.NUMBER_KEY.match(path)
        if number_key:
            field, token = number_key.groups()
            text = getattr(p, field) or ""
            if not any(n.canonical == prov.canonical(token) for n in prov.find_numbers(text)):
                yield Problem(
                    rec.file,
                    rec.line("unverified", path),
                    f"unverified.{path}",
                    f"{token!r} is not a number quoted in {field}",
                )
        elif not _resolves(p, path):
            yield Problem(
                rec.file, rec.line("unverified", path), f"unverified.{path}", "names no field of this record"
            )
    if p.repo and not any(f"github.com/{p.repo.lower()}" in c.url.lower() for c in p.links.code):
        yield Problem(rec.file, rec.line("repo"), "repo", f"{p.repo!r} is not among links.code")
    for i, code in enumerate(p.links.code):
        if code.url == p.links.paper:
            yield Problem(
                rec.file, rec.line("links", "code", i, "url"), f"links.code[{i}].url", "same as links.paper"
            )


def _raw_lines(kb: KnowledgeBase, rec: Record) -> list[str]:
    try:
        return (kb.root / rec.file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def check_provenance(rec: Record, raw_lines: list[str]) -> Iterator[Problem]:
    """Venue, identifiers and earlier versions have a source or an unverified reason, and so has
    every number in the take-away and notes (see `kb.provenance` for what counts as a number)."""
    p = rec.paper
    for i, src in enumerate(p.sources):
        for j, claim in enumerate(src.supports):
            if not _resolves(p, claim):
                yield Problem(
                    rec.file,
                    rec.line("sources", i, "supports", j),
                    f"sources[{i}].supports[{j}]",
                    f"{claim!r} names no field of this record",
                )
        for j, token in enumerate(src.numbers):
            loc = ("sources", i, "numbers", j)
            if not prov.is_single_number(token):
                yield Problem(
                    rec.file,
                    rec.line(*loc),
                    f"sources[{i}].numbers[{j}]",
                    f"{token!r} is not one number as the validator reads it (e.g. '6.51', '25%', '2.1x', '20-30%')",
                )
            elif not any(
                prov.canonical(token) == n.canonical or prov.canonical(token) in n.ends
                for text in prov.quoted_texts(p)
                for n in prov.find_numbers(text)
            ):
                yield Problem(
                    rec.file,
                    rec.line(*loc),
                    f"sources[{i}].numbers[{j}]",
                    f"{token!r} is not quoted in the take-away, notes or findings",
                )
    claims = [c for s in p.sources for c in s.supports]
    for fact in prov.required_facts(p):
        if not any(prov.covers(c, fact) for c in [*claims, *p.unverified]):
            name = prov.dotted(fact)
            yield Problem(
                rec.file,
                rec.line(*(int(x) if x.isdigit() else x for x in fact)),
                name,
                f"no source: add a sources entry that supports {name!r}, or an unverified reason",
            )
    sourced = prov.sourced_numbers(p)
    for field in prov.TEXT_FIELDS:
        text = getattr(p, field) or ""
        excused = {
            prov.canonical(m.group(2))
            for key in p.unverified
            if (m := prov.NUMBER_KEY.match(key)) and m.group(1) == field
        }
        for n in prov.find_numbers(text):
            if prov.covered(n, sourced) or n.canonical in excused:
                continue
            yield Problem(
                rec.file,
                _text_line(rec, raw_lines, field, n.text),
                field,
                f"number {n.text!r} has no source: list it under a source's numbers, "
                f"or add unverified '{field}[{n.canonical}]' with a reason",
            )


def _text_line(rec: Record, raw_lines: list[str], field: str, token: str) -> int:
    """The line of `token` inside a (possibly folded) text field; the field's own line otherwise."""
    start = rec.line(field)
    for n in range(start, min(len(raw_lines), start + 60) + 1):
        line = raw_lines[n - 1]
        if n > start and line and not line.startswith((" ", "\t")):
            break  # the next top-level key: the token was wrapped across lines
        if token in line:
            return n
    return start


def check_todos(file: str, loaded: Loaded) -> Iterator[Problem]:
    """Template placeholders left in place (outside tags, which say more about it themselves)."""

    def walk(obj: Any, loc: Path_) -> Iterator[Problem]:
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from walk(v, (*loc, k))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from walk(v, (*loc, i))
        elif isinstance(obj, str) and "TODO" in obj and loc[:1] != ("tags",):
            field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
            yield Problem(file, loaded.line_of(loc), field, "fill in this TODO from the template")

    yield from walk(loaded.data, ())


def check_tags(file: str, loaded: Loaded, vocab: Vocabulary) -> Iterator[Problem]:
    """Tag values and qualifiers against the vocabulary, read from the parsed YAML so that this
    also runs on records whose other fields are broken. Shape errors are pydantic's business."""
    tags = loaded.data.get("tags") if isinstance(loaded.data, dict) else None
    if not isinstance(tags, dict):
        return
    for axis_name in AXES:
        axis = vocab[axis_name]
        entries = tags.get(axis_name)
        entries = [entries] if isinstance(entries, (str, dict)) else entries
        if not isinstance(entries, list):
            continue
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            where: Path_ = ("tags", axis_name, i)
            if not isinstance(tags.get(axis_name), list):
                where = ("tags", axis_name)
            field = f"tags.{axis_name}[{i}]"
            raw_value = entry.get("value") if isinstance(entry, dict) else entry
            if not isinstance(raw_value, str):
                continue
            value = axis.value(raw_value)
            if value is None:
                near = axis.suggest(raw_value)
                hint = (
                    f" (did you mean {near!r}?)"
                    if near
                    else f" (valid: {', '.join(v.id for v in axis.values)})"
                )
                yield Problem(
                    file, loaded.line_of(where), field, f"{raw_value!r} is not a {axis_name} value{hint}"
                )
                continue
            if raw_value in seen:
                yield Problem(file, loaded.line_of(where), field, f"{raw_value!r} is listed twice")
            seen.add(raw_value)
            if not isinstance(entry, dict):
                continue
            allowed = axis.qualifiers_for(raw_value)
            for key, given in entry.items():
                if key == "value":
                    continue
                qloc = (*where, key)
                qfield = f"{field}.{key}"
                if key == "note":
                    if not isinstance(given, str) or len(given) > NOTE_MAX:
                        yield Problem(
                            file,
                            loaded.line_of(qloc),
                            qfield,
                            f"note must be text of at most {NOTE_MAX} characters",
                        )
                    continue
                spec = allowed.get(key)
                if spec is None:
                    names = [*allowed, "note"]
                    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
                    hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(names)})"
                    yield Problem(
                        file, loaded.line_of(qloc), qfield, f"{raw_value!r} takes no qualifier {key!r}{hint}"
                    )
                elif isinstance(spec, ChoiceQualifier):
                    yield from _check_choice(file, loaded, qloc, qfield, spec, given)
                else:
                    yield from _check_quantity(file, loaded, qloc, qfield, spec.units, given, value.tokens)


def check_results(
    file: str, loaded: Loaded, vocab: Vocabulary, paper_id: str | None = None
) -> Iterator[Problem]:
    """Datasets and metrics of `results:` against their closed lists, a `versus` for relative metrics,
    unique `key`s, and at most one headline row (which must be the paper's own method). Read from the
    parsed YAML, like the tags, so it also runs on records whose other fields are broken."""
    rows = loaded.data.get("results") if isinstance(loaded.data, dict) else None
    if not isinstance(rows, list):
        return
    if paper_id is None and isinstance(loaded.data.get("id"), str):
        paper_id = loaded.data["id"]
    keys: dict[str, int] = {}
    headlines = 0
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            continue
        for name, terms in (("dataset", vocab.datasets), ("metric", vocab.metrics)):
            given = row.get(name)
            if isinstance(given, str) and terms.get(given) is None:
                near = terms.suggest(given)
                hint = (
                    f" (did you mean {near!r}?)"
                    if near
                    else f" (valid: {', '.join(v.id for v in terms.values)})"
                )
                yield Problem(
                    file,
                    loaded.line_of(("results", i, name)),
                    f"results[{i}].{name}",
                    f"{given!r} is not a known {name}{hint}",
                )
        metric_id = row.get("metric")
        metric = vocab.metrics.get(metric_id) if isinstance(metric_id, str) else None
        if metric is not None and metric.relative and not row.get("versus"):
            yield Problem(
                file,
                loaded.line_of(("results", i, "metric")),
                f"results[{i}].versus",
                f"{metric.id!r} compares two methods: say which one in `versus`",
            )
        key = row.get("key")
        if isinstance(key, str):
            if key in keys:
                yield Problem(
                    file,
                    loaded.line_of(("results", i, "key")),
                    f"results[{i}].key",
                    f"{key!r} is also the key of results[{keys[key]}]",
                )
            keys.setdefault(key, i)
        if row.get("headline") is True:
            if paper_id is not None and row.get("method") != paper_id:
                yield Problem(
                    file,
                    loaded.line_of(("results", i, "headline")),
                    f"results[{i}].headline",
                    f"the headline row must be this paper's own method {paper_id!r}, not {row.get('method')!r}",
                )
            elif (headlines := headlines + 1) > 1:
                yield Problem(
                    file,
                    loaded.line_of(("results", i, "headline")),
                    f"results[{i}].headline",
                    "only one row can be the headline",
                )


def _check_choice(
    file: str, loaded: Loaded, loc: Path_, field: str, spec: ChoiceQualifier, given: Any
) -> Iterator[Problem]:
    items = given if isinstance(given, list) else [given]
    if isinstance(given, list) and not spec.multiple:
        yield Problem(file, loaded.line_of(loc), field, "takes a single value, not a list")
        return
    for j, item in enumerate(items):
        if item not in spec.values:
            near = difflib.get_close_matches(str(item).lower(), spec.values, n=1, cutoff=0.5)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(spec.values)})"
            line = loaded.line_of((*loc, j)) if isinstance(given, list) else loaded.line_of(loc)
            yield Problem(file, line, field, f"{item!r} is not allowed{hint}")


def _check_quantity(
    file: str,
    loaded: Loaded,
    loc: Path_,
    field: str,
    units: list[str],
    given: Any,
    bin_tokens: tuple[int, int | None] | None,
) -> Iterator[Problem]:
    if not isinstance(given, str):
        yield Problem(file, loaded.line_of(loc), field, "write the amount as text, like '50K samples'")
        return
    try:
        q = parse_quantity(given, units)
    except ValueError as exc:
        yield Problem(file, loaded.line_of(loc), field, str(exc))
        return
    if q.unit == "tokens" and bin_tokens is not None:
        low, high = bin_tokens
        if q.amount < low or (high is not None and q.amount > high and not q.approx):
            span = f"{_human(low)}-{_human(high)}" if high is not None else f"more than {_human(low)}"
            yield Problem(file, loaded.line_of(loc), field, f"{q.text} is outside this bin ({span} tokens)")


def _human(n: int) -> str:
    for div, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= div:
            return f"{n / div:g}{suffix}"
    return str(n)


def _resolves(p: Paper, dotted: str) -> bool:
    obj: object = p.model_dump()
    for part in re.findall(r"[^.\[\]]+", dotted):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return False
    return True


def _norm_title(title: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", title.lower()).strip()


def check_cross(kb: KnowledgeBase) -> Iterator[Problem]:
    by_id: dict[str, Record] = {}
    for rec in kb.records:
        p = rec.paper
        if p.id in by_id:
            yield Problem(rec.file, rec.line("id"), "id", f"id {p.id!r} is also used by {by_id[p.id].file}")
        by_id.setdefault(p.id, rec)
    for key in ("arxiv", "openreview", "acl", "doi"):
        owner: dict[str, Record] = {}
        for rec in kb.records:
            ident = getattr(rec.paper.identifiers, key)
            if ident is None:
                continue
            if ident in owner:
                yield Problem(
                    rec.file,
                    rec.line("identifiers", key),
                    f"identifiers.{key}",
                    f"{ident} is already the {key} id of {owner[ident].file}",
                )
            owner.setdefault(ident, rec)
    for a, b in near_duplicate_titles(kb.records):
        yield Problem(
            a.file, a.line("title"), "title", f"nearly the same title as {b.file}; is it a duplicate?"
        )
    for rec in kb.records:
        for i, other in enumerate(rec.paper.related):
            if other not in by_id:
                near = difflib.get_close_matches(other, list(by_id), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                yield Problem(
                    rec.file, rec.line("related", i), f"related[{i}]", f"no record with id {other!r}{hint}"
                )
            elif other == rec.paper.id:
                yield Problem(
                    rec.file, rec.line("related", i), f"related[{i}]", "a record cannot be related to itself"
                )


def near_duplicate_titles(records: list[Record]) -> Iterator[tuple[Record, Record]]:
    """Pairs (later, earlier) whose normalised titles are at least TITLE_SIMILARITY alike.

    Not all pairs: two titles that similar share most words, so each title is compared only with
    the titles containing one of its three rarest distinctive words (words found in at most
    `cap` titles); a title made only of common words is compared with all. Near-linear in practice."""
    norms = [_norm_title(r.paper.title) for r in records]
    words = [set(n.split()) for n in norms]
    containing: dict[str, list[int]] = {}
    for i, ws in enumerate(words):
        for w in ws:
            containing.setdefault(w, []).append(i)
    cap = max(50, len(records) // 100)
    for i, ws in enumerate(words):
        distinctive = [w for w in ws if len(containing[w]) <= cap]
        if distinctive:
            rarest = sorted(distinctive, key=lambda w: (len(containing[w]), w))[:3]
            candidates = sorted({j for w in rarest for j in containing[w] if j < i})
        else:
            candidates = list(range(i))
        for j in candidates:
            m = difflib.SequenceMatcher(None, norms[i], norms[j])
            if (
                m.real_quick_ratio() >= TITLE_SIMILARITY
                and m.quick_ratio() >= TITLE_SIMILARITY
                and m.ratio() >= TITLE_SIMILARITY
            ):
                yield records[i], records[j]


def check_challenges(kb: KnowledgeBase) -> Iterator[Problem]:
    ids = set(kb.stems)
    for rec in kb.records:
        text = kb.challenges.get(rec.paper.id)
        if text is None:
            yield Problem(
                rec.file,
                rec.line("id"),
                "challenge",
                f"challenge/{rec.paper.id}.md is missing (run `kb new` for a template)",
            )
    for note_id, text in kb.challenges.items():
        file = f"challenge/{note_id}.md"
        if note_id not in ids:
            yield Problem(file, 1, "challenge", f"no record papers/{note_id}.yaml for this note")
        body = text.strip()
        if len(body) < CHALLENGE_MIN_CHARS:
            yield Problem(
                file,
                1,
                "challenge",
                f"too short ({len(body)} characters; write at least {CHALLENGE_MIN_CHARS})",
            )
        if len(body) > CHALLENGE_MAX_CHARS:
            yield Problem(
                file, 1, "challenge", f"too long ({len(body)} characters; the limit is {CHALLENGE_MAX_CHARS})"
            )
        for n, line in enumerate(text.splitlines(), 1):
            if "TODO" in line:
                yield Problem(file, n, "challenge", "fill in this TODO from the template")
            if _RAW_HTML.search(line):
                yield Problem(file, n, "challenge", "raw HTML is not allowed; use Markdown")
                break
            for url in re.findall(r"\]\(([^)\s]+)", line):
                if not url.startswith(("http://", "https://", "#", "../")):
                    yield Problem(file, n, "challenge", f"link {url!r} is not http(s)")


def check_implementations(kb: KnowledgeBase, runnable: Mapping[str, str] | None) -> Iterator[Problem]:
    """A record's `implementation` points at a real file and, given the registry, matches it."""
    for rec in kb.records:
        p = rec.paper
        expected = runnable.get(p.id) if runnable is not None else None
        if p.implementation is None:
            if expected is not None:
                yield Problem(
                    rec.file,
                    rec.line("id"),
                    "implementation",
                    f"missing; the harness runs this paper from {expected}",
                )
            continue
        line = rec.line("implementation")
        if not (kb.root / p.implementation).is_file():
            yield Problem(rec.file, line, "implementation", f"{p.implementation} does not exist")
        elif runnable is None:
            continue
        elif expected is None:
            yield Problem(
                rec.file, line, "implementation", "the harness registry has no entry for this paper"
            )
        elif expected != p.implementation:
            yield Problem(rec.file, line, "implementation", f"the registry runs this paper from {expected}")
