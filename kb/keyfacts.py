"""Checks of what a deployer reads first: the deployable `form`, the authors' `origin` and the key
`findings` of each record (see `kb.closedlists` for the two closed lists they draw on).

* `form`: one or more values of `concepts/form.yaml`, each once; a misspelt value gets the nearest one.
* `origin`: present; its source is checked with the other required facts (`kb.provenance`).
* `findings`: one to five; a `theme` from `concepts/theme.yaml`; every number in a claim is backed by
  the finding's own `source.numbers` or by a record source's `numbers`; every number a finding's source
  lists is quoted in its claim; `tested_by` names a paper the harness can run; `result` names the
  `key` of an entry of the same record's `results:` whose value the claim quotes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping

from . import provenance as prov
from .closedlists import ClosedList
from .store import KnowledgeBase, Problem, Record
from .vocab import Vocabulary

MAX_FINDINGS = 5


def check_key_facts(
    kb: KnowledgeBase, vocab: Vocabulary, runnable: Mapping[str, str] | None = None
) -> Iterator[Problem]:
    """`runnable` (paper id -> implementation) comes from the registry; without it, a `tested_by`
    must name a record with an `implementation`."""
    can_run = (
        set(runnable)
        if runnable is not None
        else {r.paper.id for r in kb.records if r.paper.implementation is not None}
    )
    for rec in kb.records:
        yield from check_form(rec, vocab.lists["form"])
        yield from check_origin(rec)
        yield from check_findings(rec, vocab.lists["theme"], can_run)


def _unknown(value: str, closed: ClosedList) -> str:
    near = closed.suggest(value)
    hint = f" (did you mean {near!r}?)" if near else f" (valid: {', '.join(v.id for v in closed.values)})"
    return f"{value!r} is not a {closed.name} value{hint}"


def check_form(rec: Record, forms: ClosedList) -> Iterator[Problem]:
    p = rec.paper
    if not p.form:
        yield Problem(
            rec.file,
            rec.line("form") if "form" in (rec.loaded.data or {}) else rec.line("tags"),
            "form",
            "missing: list what the method's result is deployed as (values in concepts/form.yaml)",
        )
    seen: set[str] = set()
    for i, value in enumerate(p.form):
        line = rec.line("form", i)
        if forms.value(value) is None:
            yield Problem(rec.file, line, f"form[{i}]", _unknown(value, forms))
        elif value in seen:
            yield Problem(rec.file, line, f"form[{i}]", f"{value!r} is listed twice")
        seen.add(value)


def check_origin(rec: Record) -> Iterator[Problem]:
    if rec.paper.origin is None:
        yield Problem(
            rec.file,
            rec.line("authors"),
            "origin",
            "missing: give the authors' affiliations and kind (industry, academia or mixed) with a source",
        )


def check_findings(rec: Record, themes: ClosedList, can_run: set[str]) -> Iterator[Problem]:
    p = rec.paper
    if not p.findings:
        yield Problem(
            rec.file,
            rec.line("findings") if "findings" in (rec.loaded.data or {}) else rec.line("takeaway"),
            "findings",
            f"missing: write 1-{MAX_FINDINGS} key findings, each with its source",
        )
    record_numbers = prov.sourced_numbers(p)
    for i, f in enumerate(p.findings):
        field = f"findings[{i}]"
        if f.theme is not None and themes.value(f.theme) is None:
            yield Problem(
                rec.file, rec.line("findings", i, "theme"), f"{field}.theme", _unknown(f.theme, themes)
            )
        if f.tested_by is not None and f.tested_by not in can_run:
            yield Problem(
                rec.file,
                rec.line("findings", i, "tested_by"),
                f"{field}.tested_by",
                f"{f.tested_by!r} is not a paper the harness can run"
                + (f" (runnable: {', '.join(sorted(can_run))})" if can_run else ""),
            )
        if f.result is not None:
            yield from _check_result_link(rec, i, f.result, f.claim)
        own = {prov.canonical(n) for n in f.source.numbers}
        found = prov.find_numbers(f.claim)
        for n in found:
            if not prov.covered(n, own | record_numbers):
                yield Problem(
                    rec.file,
                    rec.line("findings", i, "claim"),
                    f"{field}.claim",
                    f"number {n.text!r} has no source: list it under this finding's source.numbers",
                )
        for j, token in enumerate(f.source.numbers):
            loc = ("findings", i, "source", "numbers", j)
            if not prov.is_single_number(token):
                yield Problem(
                    rec.file,
                    rec.line(*loc),
                    f"{field}.source.numbers[{j}]",
                    f"{token!r} is not one number as the validator reads it (e.g. '6.51', '25%', '2.1x')",
                )
            elif not any(prov.canonical(token) in (n.canonical, *n.ends) for n in found):
                yield Problem(
                    rec.file,
                    rec.line(*loc),
                    f"{field}.source.numbers[{j}]",
                    f"{token!r} is not quoted in this finding's claim",
                )


def _check_result_link(rec: Record, i: int, key: str, claim: str) -> Iterator[Problem]:
    """`result: <key>` names a keyed entry of this record's `results:` whose value the claim quotes."""
    field, line = f"findings[{i}].result", rec.line("findings", i, "result")
    keyed = {r.key: r for r in rec.paper.results if r.key is not None}
    target = keyed.get(key)
    if target is None:
        near = difflib.get_close_matches(key, list(keyed), n=1, cutoff=0.0)
        hint = (
            f" (did you mean {near[0]!r}?)"
            if near
            else " (no entry has a key yet: add `key:` to the results entry the claim quotes)"
        )
        yield Problem(
            rec.file, line, field, f"{key!r} is not the key of an entry in this record's results{hint}"
        )
    elif prov.quoted_value(claim, target.value) is None:
        yield Problem(
            rec.file,
            line,
            field,
            f"the claim does not quote the value of result {key!r} ({target.value:g})",
        )
