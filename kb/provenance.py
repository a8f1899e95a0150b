"""Provenance: which facts of a record need a source, how numbers are found in prose, and the
checks `kb validate` runs on them.

Every record must say where its venue, its identifiers and its earlier versions come from, and
where every number quoted in its take-away or notes comes from. A fact is covered by

* a `sources` entry whose `supports` names the field (or a parent of it: `identifiers` covers
  `identifiers.arxiv`), or, for a number, whose `numbers` lists it; or
* an `unverified` entry with a reason: the field path (`venue`, `identifiers.arxiv`), or for a
  number the text field with the number in brackets, e.g. `takeaway[93%]` or `notes[30,000]`.

Sourced numbers are collected by `NUMBER_PROVIDERS`, one function per part of the record that can
vouch for a number: `sources[].numbers`, and the `results:` list (paper-reported numbers, each with
its own source), whose values and setting percentages count the same way.

What counts as a number (the rule `find_numbers` implements; tests/core/test_provenance.py
pins it down):

* counted: integers and decimals (`31`, `6.51`, `30,000`), percentages (`25%`, `~99%`),
  multipliers (`2.1x`, `29×`), ranges (`20-30%`, `5.62-17.27%`, checked as one token or as both
  ends), and sizes followed by a unit noun (`50B tokens`, `100K samples`);
* not counted, because they name things rather than state results: digits inside a name, a
  version or an identifier (`Llama-2-7B`, `GPT-J`, `b1.58`, `v2`, `T5`, `2024.findings-naacl.1`,
  an arXiv id such as `2403.19135`, a DOI), bare model sizes (`7B`, `8B and 4B models`,
  `Nemotron-4 15B`), N:M patterns (`2:4`), compound adjectives (`8-bit`, `1-bit`), years
  (1990-2039 on their own), and numbers inside URLs. Write model names with hyphens
  (`Llama-3.1-8B`, not `Llama 3.1 8B`) so that their version is part of the name.

Words are never numbers: "about five hours" needs no source, but it should still be true.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .schema import Paper

TEXT_FIELDS = ("takeaway", "notes")

_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_TOKEN = re.compile(
    rf"""
    (?<![\w.'’/#@$:\-])                # not glued to a name, version, id, path or sign
    (?P<approx>[~≈])?
    (?P<a>{_NUM})
    (?:\s?[-–]\s?(?P<b>{_NUM}))?        # a range: 20-30%, 5.62-17.27%
    (?P<suffix>\s?%|[x×](?!\w)|[KMBT](?!\w))?
    (?!\w|[.,:]\d|/|\.[A-Za-z]|-[A-Za-z])  # not the start of an id, a version or a compound
    """,
    re.X,
)
_URL = re.compile(r"https?://\S+")
_UNIT_AFTER_SIZE = re.compile(
    r"\s+(?:tokens?|samples?|sequences?|examples?|parameters?|params|pairs?|instructions?|documents?|images?)\b",
    re.I,
)
_ARXIV_ID = re.compile(r"\d{4}\.\d{4,5}")
YEARS = range(1990, 2040)


@dataclass(frozen=True)
class Number:
    text: str  # as written
    canonical: str  # comparison form: no '~', commas or spaces; '×' -> 'x', '–' -> '-'
    start: int  # offset in the text

    @property
    def ends(self) -> tuple[str, ...]:
        """A range's two ends with the range's suffix, e.g. '20-30%' -> ('20%', '30%')."""
        m = re.fullmatch(rf"({_NUM.replace(',', '')})-({_NUM.replace(',', '')})(%|x|[KMBT])?", self.canonical)
        if not m:
            return ()
        suffix = m.group(3) or ""
        return (m.group(1) + suffix, m.group(2) + suffix)


def canonical(token: str) -> str:
    out = token.strip().lstrip("~≈").replace("×", "x").replace("–", "-")
    return re.sub(r"[\s,]", "", out)


def find_numbers(text: str) -> list[Number]:
    """The numbers in `text` that need a source, by the rule in the module docstring."""
    masked = _URL.sub(lambda m: " " * len(m.group()), text)
    found: list[Number] = []
    for m in _TOKEN.finditer(masked):
        a, b, suffix = m.group("a"), m.group("b"), (m.group("suffix") or "").strip()
        if suffix in ("K", "M", "B", "T") and not _UNIT_AFTER_SIZE.match(masked, m.end()):
            continue  # a model size such as 7B, part of a model's name
        if not b and not suffix:
            if _ARXIV_ID.fullmatch(a):
                continue
            if "." not in a and "," not in a and int(a) in YEARS:
                continue
        if b and not suffix and all("." not in x and "," not in x and int(x) in YEARS for x in (a, b)):
            continue  # a span of years
        raw = m.group().strip()
        found.append(Number(text=raw, canonical=canonical(raw), start=m.start()))
    return found


def is_single_number(token: str) -> bool:
    """True if `token` is exactly one number as `find_numbers` reads it (for `sources[].numbers`)."""
    probe = token + " tokens" if re.search(r"[KMBT]$", token.strip()) else token  # sizes count before a unit
    found = find_numbers(probe)
    return len(found) == 1 and found[0].canonical == canonical(token)


# ---- which numbers a record vouches for --------------------------------------------------------

NumberProvider = Callable[[Paper], Iterable[str]]


def _from_sources(p: Paper) -> Iterator[str]:
    for src in p.sources:
        yield from src.numbers


def _from_results(p: Paper) -> Iterator[str]:
    """A paper-reported result carries its own source, so its value backs the same number in prose.
    The value is offered as written in YAML (`24.55`), with a percent sign when the metric is in
    percent (`2.62%`) or a factor (`2.1x`), and, for fractions in the setting, as a percentage (`70%`)."""
    for r in p.results:
        yield from quoted_forms(r.value)
        for frac in (r.setting.sparsity, r.setting.params_removed, r.setting.kv_budget):
            if frac is not None:
                yield f"{frac * 100:g}%"


def quoted_forms(value: float) -> list[str]:
    """How prose may write a result's value: `24.55`, `24.550`, `24.55%`, `24.55x`."""
    return [f"{text}{suffix}" for text in sorted(_value_forms(value)) for suffix in ("", "%", "x")]


def quoted_value(text: str, value: float) -> Number | None:
    """The first number in `text` that writes `value` (see `quoted_forms`), or a range with it as one
    end (`5.62-17.27%` quotes 5.62), or None."""
    forms = {canonical(f) for f in quoted_forms(value)}
    return next((n for n in find_numbers(text) if n.canonical in forms or forms & set(n.ends)), None)


def _value_forms(value: float) -> set[str]:
    """`26.3` also as `26.30`: YAML drops trailing zeros that the prose keeps."""
    forms = {f"{value:g}", repr(value)}
    forms |= {f"{value:.{d}f}" for d in (1, 2, 3) if math.isclose(float(f"{value:.{d}f}"), value)}
    if value == int(value):
        forms.add(str(int(value)))
    return forms


NUMBER_PROVIDERS: list[NumberProvider] = [_from_sources, _from_results]


def sourced_numbers(p: Paper) -> set[str]:
    return {canonical(n) for provider in NUMBER_PROVIDERS for n in provider(p)}


def covered(number: Number, sourced: set[str]) -> bool:
    return number.canonical in sourced or (bool(number.ends) and all(e in sourced for e in number.ends))


# ---- field paths -------------------------------------------------------------------------------

NUMBER_KEY = re.compile(rf"^({'|'.join(TEXT_FIELDS)})\[(.+)\]$")


def quoted_texts(p: Paper) -> list[str]:
    """Every prose field whose numbers need a source: take-away, notes and each finding's claim."""
    return [*(getattr(p, f) or "" for f in TEXT_FIELDS), *(f.claim for f in p.findings)]


def required_facts(p: Paper) -> list[tuple[str, ...]]:
    """Paths (as tuples) of the facts that need a source or an unverified reason. The origin needs one
    unless it carries its own (`origin.source`); findings always carry their own (the schema says so)."""
    facts: list[tuple[str, ...]] = [("venue",)]
    if p.origin is not None and p.origin.source is None:
        facts.append(("origin",))
    facts += [("identifiers", k) for k in p.identifiers.model_dump(exclude_none=True)]
    facts += [("earlier_versions", str(i)) for i in range(len(p.earlier_versions))]
    return facts


def split_path(dotted: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[^.\[\]]+", dotted))


def dotted(path: tuple[str, ...]) -> str:
    return "".join(f"[{x}]" if x.isdigit() else f".{x}" for x in path).lstrip(".")


def covers(claim: str, fact: tuple[str, ...]) -> bool:
    """A `supports`/`unverified` path covers a fact if it names the fact or one of its parents."""
    parts = split_path(claim)
    return bool(parts) and fact[: len(parts)] == parts
