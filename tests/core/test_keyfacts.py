"""Deployable form, origin and key findings: closed lists, validator messages, sources, schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kb.closedlists import ClosedListError, load_closed_list
from kb.jsonschema import build_schema
from kb.store import load_kb
from kb.vocab import load_vocabulary
from kb_cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
BASE = (DATA / "base.yaml").read_text(encoding="utf-8")
NOTE = (DATA / "base.md").read_text(encoding="utf-8")
F = "papers/demo-method.yaml"
FINDING = """findings:
  - claim: A made-up finding that nothing was pruned and nothing was lost.
    theme: importance-metric
    source: {url: "https://example.org/demo-method/paper", locator: table 1}
"""
ORIGIN = """origin:
  kind: academia
  affiliations: [Example University]
  source: {url: "https://example.org/demo-method/paper", locator: "first page, author block"}
"""


def _validate(tmp_kb: Path, capsys, record: str) -> tuple[int, list[str]]:
    (tmp_kb / "papers" / "demo-method.yaml").write_text(record, encoding="utf-8")
    (tmp_kb / "challenge" / "demo-method.md").write_text(NOTE, encoding="utf-8")
    code = main(["validate"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out.splitlines()


def _line(record: str, text: str) -> int:
    return next(i for i, line in enumerate(record.splitlines(), 1) if text in line)


def test_the_base_record_with_all_three_fields_is_valid(tmp_kb, capsys):
    assert _validate(tmp_kb, capsys, BASE) == (0, [])


def test_form_order_follows_the_seed_note_priority():
    form = load_vocabulary(ROOT / "concepts").lists["form"]
    ids = [v.id for v in form.values]
    assert ids[:4] == ["fewer-layers", "smaller-dense", "n-m-sparse", "unstructured-sparse"]
    assert form.rank("fewer-layers") < form.rank("smaller-dense") < form.rank("unstructured-sparse")
    assert len({v.colour for v in form.values}) == len(ids)


def test_misspelt_form_and_theme_get_the_nearest_value(tmp_kb, capsys):
    record = BASE.replace("form: [unstructured-sparse, n-m-sparse]", "form: [unstructured-sparse, '2:4']")
    record = record.replace("theme: importance-metric", "theme: lora")
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert lines == [
        f"{F}:{_line(record, 'form:')}: form[1]: '2:4' is not a form value (did you mean 'n-m-sparse'?)",
        f"{F}:{_line(record, 'theme:')}: findings[0].theme: 'lora' is not a theme value (did you mean 'recovery'?)",
    ]


def test_unknown_form_without_a_near_value_lists_the_valid_ones(tmp_kb, capsys):
    record = BASE.replace(
        "form: [unstructured-sparse, n-m-sparse]", "form: [zzzzzz, fewer-layers, fewer-layers]"
    )
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert lines[0].startswith(
        f"{F}:{_line(record, 'form:')}: form[0]: 'zzzzzz' is not a form value (valid: "
    )
    assert "fewer-layers, smaller-dense" in lines[0]
    assert lines[1] == f"{F}:{_line(record, 'form:')}: form[2]: 'fewer-layers' is listed twice"


def test_missing_form_origin_and_findings_are_each_reported(tmp_kb, capsys):
    record = (
        BASE.replace(ORIGIN, "").replace("form: [unstructured-sparse, n-m-sparse]\n", "").replace(FINDING, "")
    )
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert [line.split(": ", 2)[1] for line in lines] == ["origin", "form", "findings"]
    assert all("missing" in line for line in lines)


def test_origin_needs_a_source_or_an_unverified_reason(tmp_kb, capsys):
    bare = BASE.replace(
        '  source: {url: "https://example.org/demo-method/paper", locator: "first page, author block"}\n', ""
    )
    code, lines = _validate(tmp_kb, capsys, bare)
    assert code == 1
    assert lines == [
        (
            f"{F}:{_line(bare, 'origin:')}: origin: no source: add a sources entry that supports 'origin', "
            "or an unverified reason"
        )
    ]
    via_sources = bare.replace(
        "    supports: [venue, identifiers]", "    supports: [venue, identifiers, origin]"
    )
    assert _validate(tmp_kb, capsys, via_sources) == (0, [])
    excused = bare + "unverified:\n  origin: only the seed list names the authors\n"
    assert _validate(tmp_kb, capsys, excused) == (0, [])


def test_origin_kind_is_closed(tmp_kb, capsys):
    record = BASE.replace("  kind: academia\n  affiliations", "  kind: academy\n  affiliations")
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert lines == [
        (
            f"{F}:{_line(record, 'kind: academy')}: origin.kind: 'academy' is not one of industry, academia, mixed, "
            "unknown "
            "(did you mean 'academia'?)"
        )
    ]


def test_a_finding_needs_its_source(tmp_kb, capsys):
    record = BASE.replace(
        '    source: {url: "https://example.org/demo-method/paper", locator: table 1}\n', ""
    )
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert f"{F}:{_line(record, '- claim:')}: findings[0].source: required field is missing" in lines


def test_numbers_in_findings_need_a_source(tmp_kb, capsys):
    claim = "  - claim: A made-up finding that pruning 30% of the rows costs 1.5 perplexity.\n"
    record = BASE.replace(
        "  - claim: A made-up finding that nothing was pruned and nothing was lost.\n", claim
    )
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    line = _line(record, "- claim:")
    assert lines == [
        f"{F}:{line}: findings[0].claim: number '1.5' has no source: list it under this finding's source.numbers",
        f"{F}:{line}: findings[0].claim: number '30%' has no source: list it under this finding's source.numbers",
    ]
    own = record.replace("locator: table 1}", 'locator: table 1, numbers: ["30%", "1.5"]}')
    assert _validate(tmp_kb, capsys, own) == (0, [])
    # a record-level source's numbers count too, and may name a number quoted only in a finding
    shared = (
        record
        + '  - url: https://example.org/demo-method/readme\n    locator: README table\n    numbers: ["30%", "1.5"]\n'
    )
    assert _validate(tmp_kb, capsys, shared) == (0, [])


def test_a_finding_source_number_must_be_quoted_in_its_claim(tmp_kb, capsys):
    record = BASE.replace("locator: table 1}", 'locator: table 1, numbers: ["9.99", "7B model"]}')
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert [line.split(": ", 2)[1:] for line in lines] == [
        ["findings[0].source.numbers[0]", "'9.99' is not quoted in this finding's claim"],
        [
            "findings[0].source.numbers[1]",
            "'7B model' is not one number as the validator reads it (e.g. '6.51', '25%', '2.1x')",
        ],
    ]


def test_tested_by_must_name_a_runnable_paper(tmp_kb, capsys):
    record = BASE.replace(
        "    theme: importance-metric\n", "    theme: importance-metric\n    tested_by: shortgtp\n"
    )
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(
        f"{F}:{_line(record, 'tested_by')}: findings[0].tested_by: 'shortgtp' is not a paper the harness can run"
    )
    assert "shortgpt" in lines[0]  # the registry's runnable papers are listed


def test_at_most_five_findings(tmp_kb, capsys):
    extra = "".join(
        f'  - claim: Another made-up finding number {w} of this record.\n    source: {{url: "https://example.org/x", locator: table 1}}\n'
        for w in ("two", "three", "four", "five", "six")
    )
    record = BASE.replace(FINDING, FINDING + extra)
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert lines == [
        f"{F}:{_line(record, 'findings:')}: findings: List should have at most 5 items after validation, not 6"
    ]


def test_schema_carries_the_closed_lists():
    vocab = load_vocabulary(ROOT / "concepts")
    schema = build_schema(vocab)
    form = schema["properties"]["form"]
    assert form["anyOf"][0]["enum"][0] == "fewer-layers"
    assert form["anyOf"][1]["items"]["enum"] == [v.id for v in vocab.lists["form"].values]
    theme = schema["$defs"]["Finding"]["properties"]["theme"]
    assert {"type": "null"} in theme["anyOf"] and "recovery" in theme["anyOf"][0]["enum"]
    assert schema["$defs"]["Origin"]["properties"]["kind"]["enum"] == [
        "industry",
        "academia",
        "mixed",
        "unknown",
    ]
    assert "source" in schema["$defs"]["Finding"]["required"]
    committed = json.loads((ROOT / "schema" / "paper.schema.json").read_text(encoding="utf-8"))
    assert committed == json.loads(json.dumps(schema))


def test_a_broken_closed_list_is_one_problem_with_file_and_line(tmp_path):
    shutil.copytree(ROOT / "concepts", tmp_path / "concepts")
    path = tmp_path / "concepts" / "form.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace('colour: "#1b7f3b"', 'colour: "green"'), encoding="utf-8"
    )
    with pytest.raises(ClosedListError) as info:
        load_closed_list(tmp_path / "concepts", "form")
    assert info.value.where.startswith("concepts/form.yaml:")
    (tmp_path / "papers").mkdir()
    kb = load_kb(tmp_path)
    assert kb.vocab is None and kb.problems[0].file == "concepts/form.yaml"


def test_every_record_is_filled_in():
    kb = load_kb(ROOT)
    assert len(kb.records) == len(list((ROOT / "papers").glob("*.yaml"))) >= 50
    for rec in kb.records:
        p = rec.paper
        assert p.form and p.origin and 1 <= len(p.findings) <= 5, p.id
        assert p.origin.source is not None or "origin" in p.unverified, p.id


def test_new_records_start_with_the_three_fields(tmp_kb, capsys):
    assert main(["new", "demo-new"]) == 0
    capsys.readouterr()
    text = (tmp_kb / "papers" / "demo-new.yaml").read_text(encoding="utf-8")
    assert text.index("origin:") < text.index("year:")
    assert text.index("form:") < text.index("takeaway:") < text.index("findings:")
    main(["validate"])
    out = capsys.readouterr().out
    assert "demo-new.yaml" in out and "origin.kind" in out


def test_show_prints_origin_forms_in_priority_order_and_findings(tmp_kb, capsys):
    assert _validate(tmp_kb, capsys, BASE) == (0, [])
    assert main(["show", "demo-method"]) == 0
    out = capsys.readouterr().out
    assert "origin: academia (Example University)" in out
    assert "Form      n-m-sparse; unstructured-sparse" in out  # the record lists unstructured first
    assert (
        "finding 1 [importance-metric]: A made-up finding" in out and "(table 1, https://example.org/" in out
    )


def test_list_filters_on_form_and_origin(tmp_kb, capsys):
    assert _validate(tmp_kb, capsys, BASE) == (0, [])
    assert main(["list", "--tag", "form=n-m-sparse", "--tag", "origin=academia"]) == 0
    assert capsys.readouterr().out.startswith("demo-method")
    assert main(["list", "--tag", "form=fewer-layers"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["list", "--tag", "form=2:4"]) == 2
    assert "'2:4' is not a form value (did you mean 'n-m-sparse'?)" in capsys.readouterr().err
    assert main(["list", "--tag", "origin=industri"]) == 2
    assert "(did you mean 'industry'?)" in capsys.readouterr().err


RESULTS = """results:
  - model: Demo-7B
    setting: {sparsity: 0.5}
    dataset: wikitext2
    metric: perplexity
    value: 6.42
    method: demo-method
    key: demo-7b-50
    source: {url: "https://example.org/demo-method/paper", locator: table 2}
  - model: Demo-7B
    setting: {sparsity: 0.5}
    dataset: wikitext2
    metric: perplexity
    value: 5.8
    method: demo-method
    key: demo-7b-50-tuned
    source: {url: "https://example.org/demo-method/paper", locator: table 3}
"""
LINKED = """findings:
  - claim: A made-up finding that reaches 6.42 perplexity at half sparsity.
    theme: importance-metric
    result: demo-7b-50
    source: {url: "https://example.org/demo-method/paper", locator: table 1}
"""


def _with_result_link(finding: str) -> str:
    return BASE.replace(FINDING, finding).rstrip("\n") + "\n" + RESULTS


def test_a_finding_links_a_keyed_result_it_quotes(tmp_kb, capsys):
    assert _validate(tmp_kb, capsys, _with_result_link(LINKED)) == (0, [])


def test_an_unknown_result_key_gets_the_nearest_key(tmp_kb, capsys):
    record = _with_result_link(LINKED.replace("result: demo-7b-50", "result: demo-7b-05"))
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert lines == [
        (
            f"{F}:{_line(record, 'result: demo-7b-05')}: findings[0].result: 'demo-7b-05' is not the key of an "
            "entry in this record's results (did you mean 'demo-7b-50'?)"
        )
    ]


def test_a_result_key_without_any_keyed_results_says_to_add_one(tmp_kb, capsys):
    record = BASE.replace(FINDING, LINKED)
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert len(lines) == 2  # 6.42 now has no source, and the unknown key
    assert lines[1] == (
        f"{F}:{_line(record, 'result:')}: findings[0].result: 'demo-7b-50' is not the key of an entry in this "
        "record's results (no entry has a key yet: add `key:` to the results entry the claim quotes)"
    )


def test_the_linked_result_must_be_quoted_in_the_claim(tmp_kb, capsys):
    record = _with_result_link(LINKED.replace("result: demo-7b-50", "result: demo-7b-50-tuned"))
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert lines == [
        (
            f"{F}:{_line(record, 'result:')}: findings[0].result: the claim does not quote the value of result "
            "'demo-7b-50-tuned' (5.8)"
        )
    ]


def test_quoted_value_reads_percentages_factors_and_range_ends():
    from kb.provenance import quoted_value

    assert quoted_value("from 26.30 down to 19.49", 26.3).text == "26.30"
    assert quoted_value("it saves 52.6% of memory", 52.6).text == "52.6%"
    assert quoted_value("up to 2.1x faster", 2.1).text == "2.1x"
    assert quoted_value("gains of 5.62-17.27% over", 17.27).text == "5.62-17.27%"
    assert quoted_value("Llama-2-7B at 50%", 7.0) is None
    assert quoted_value("6.421 is not 6.42", 6.42).start == len("6.421 is not ")


def test_every_real_finding_link_names_a_quoted_keyed_result():
    kb = load_kb(ROOT)
    linked = [(r.paper, f) for r in kb.records for f in r.paper.findings if f.result]
    assert len(linked) >= 20
    from kb.provenance import quoted_value

    for paper, f in linked:
        target = next(x for x in paper.results if x.key == f.result)
        assert quoted_value(f.claim, target.value) is not None, (paper.id, f.result)


def test_an_unknown_origin_lists_no_affiliations_and_a_known_one_needs_them(tmp_kb, capsys):
    assert ORIGIN in BASE
    source = '  source: {url: "https://example.org/demo-method/paper", locator: "first page, author block"}\n'
    unknown = BASE.replace(ORIGIN, "origin:\n  kind: unknown\n" + source)
    assert _validate(tmp_kb, capsys, unknown) == (0, [])
    named = BASE.replace(ORIGIN, "origin:\n  kind: unknown\n  affiliations: [Example University]\n" + source)
    code, lines = _validate(tmp_kb, capsys, named)
    assert code == 1 and len(lines) == 1 and "an unknown origin lists no affiliations" in lines[0]
    empty = BASE.replace(ORIGIN, "origin:\n  kind: academia\n" + source)
    code, lines = _validate(tmp_kb, capsys, empty)
    assert code == 1 and len(lines) == 1 and "an origin of kind academia needs the affiliations" in lines[0]
