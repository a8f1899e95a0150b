"""Provenance: which tokens count as numbers, and `kb validate` failing on facts without a source."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb import provenance
from kb_cli.main import main

DATA = Path(__file__).parent / "data"
BASE = (DATA / "base.yaml").read_text(encoding="utf-8")
NOTE = (DATA / "base.md").read_text(encoding="utf-8")
F = "papers/demo-method.yaml"
TAKEAWAY = """takeaway: >-
  A made-up method that exists only so the tests have one valid record to break in
  controlled ways. It prunes nothing and claims nothing."""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cuts latency by 2.1x and raises throughput by up to 2.4x", ["2.1x", "2.4x"]),
        ("keeps ~99% of accuracy at a 50 % cache", ["~99%", "50 %"]),
        ("reaches 6.51 against 5.12 dense and 14.89 for magnitude", ["6.51", "5.12", "14.89"]),
        ("beats them by 5.62-17.27% and prunes 20–30% of rows", ["5.62-17.27%", "20–30%"]),
        ("after 31 of them are removed, using 30,000 samples", ["31", "30,000"]),
        ("trained on ~50B tokens and 100K samples", ["~50B", "100K"]),
        ("29× over FlexGen", ["29×"]),
        ("gains +2.62% on reading", ["2.62%"]),
        # names, versions, ids, years and model sizes are not results
        ("Llama-2-7B, OPT-175B, GPT-J, LLaMA2-7B, Llama-3.1-8B-Instruct, T5/C4, b1.58 and F1", []),
        ("gives 8B and 4B models from Nemotron-4 15B", []),
        ("accepted at ICLR 2025 (arXiv 2403.19135, v2), see 2024.findings-naacl.1", []),
        ("DOI 10.18653/v1/2024.findings-acl.178 and OpenReview 04Tfwy3LLC", []),
        ("2:4 and 4:8 patterns with 8-bit activations and 1-bit weights", []),
        ("the seed's `Submission-ICLR'25` badge, 2023-2024", []),
        ("see https://example.org/table/42?rows=7 for details", []),
    ],
)
def test_number_rule(text, expected):
    assert [n.text for n in provenance.find_numbers(text)] == expected


def test_ranges_are_covered_by_both_ends():
    (n,) = provenance.find_numbers("between 20-30% of rows")
    assert n.canonical == "20-30%"
    assert provenance.covered(n, {"20-30%"})
    assert provenance.covered(n, {"20%", "30%"})
    assert not provenance.covered(n, {"20%"})


@pytest.mark.parametrize(
    ("token", "ok"),
    [
        ("6.51", True),
        ("2.1x", True),
        ("50B", True),
        ("20-30%", True),
        ("7B model", False),
        ("6.51 and 7", False),
        ("Llama-2", False),
    ],
)
def test_single_number(token, ok):
    assert provenance.is_single_number(token) is ok


def _validate(tmp_kb: Path, capsys, record: str) -> tuple[int, list[str]]:
    (tmp_kb / "papers" / "demo-method.yaml").write_text(record, encoding="utf-8")
    (tmp_kb / "challenge" / "demo-method.md").write_text(NOTE, encoding="utf-8")
    code = main(["validate"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out.splitlines()


CLAIM = """takeaway: >-
  A made-up method that exists only so the tests have one valid record to break in
  controlled ways. At 50% sparsity it is 2.1x faster and keeps 6.51 perplexity."""


def test_unsourced_number_in_takeaway_fails_on_its_line(tmp_kb, capsys):
    code, lines = _validate(tmp_kb, capsys, BASE.replace(TAKEAWAY, CLAIM))
    assert code == 1
    assert lines == [
        f"{F}:37: takeaway: number '2.1x' has no source: list it under a source's numbers, "
        "or add unverified 'takeaway[2.1x]' with a reason",
        f"{F}:37: takeaway: number '50%' has no source: list it under a source's numbers, "
        "or add unverified 'takeaway[50%]' with a reason",
        f"{F}:37: takeaway: number '6.51' has no source: list it under a source's numbers, "
        "or add unverified 'takeaway[6.51]' with a reason",
    ]


def test_sourced_and_excused_numbers_pass(tmp_kb, capsys):
    record = BASE.replace(TAKEAWAY, CLAIM) + (
        "  - url: https://example.org/demo-method/readme\n"
        "    locator: README table 2, 50% row\n"
        '    numbers: ["50%", "6.51"]\n'
        "unverified:\n"
        "  takeaway[2.1x]: measured on hardware we could not identify\n"
    )
    code, lines = _validate(tmp_kb, capsys, record)
    assert (code, lines) == (0, [])


def test_a_partly_sourced_takeaway_still_fails(tmp_kb, capsys):
    record = BASE.replace(TAKEAWAY, CLAIM) + (
        "  - url: https://example.org/demo-method/readme\n"
        "    locator: README table 2\n"
        '    numbers: ["50%", "2.1x"]\n'
    )
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert [line.split(": number ")[1][:6] for line in lines] == ["'6.51'"]


def test_numbers_in_notes_are_checked_too(tmp_kb, capsys):
    record = BASE.replace("related", "related") + "notes: >-\n  The authors report 37% fewer steps.\n"
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert lines == [
        f"{F}:52: notes: number '37%' has no source: list it under a source's numbers, "
        "or add unverified 'notes[37%]' with a reason"
    ]


def test_venue_and_identifiers_need_a_source(tmp_kb, capsys):
    record = BASE.replace("    supports: [venue, identifiers]", "    supports: [identifiers.arxiv]")
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert lines == [
        f"{F}:9: venue: no source: add a sources entry that supports 'venue', or an unverified reason",
        f"{F}:16: identifiers.openreview: no source: add a sources entry that supports "
        "'identifiers.openreview', or an unverified reason",
    ]
    excused = (
        record + "unverified:\n  venue: only a secondary listing\n  identifiers.openreview: not opened\n"
    )
    assert _validate(tmp_kb, capsys, excused) == (0, [])


def test_stale_or_malformed_source_entries_are_reported(tmp_kb, capsys):
    record = BASE + (
        "  - url: https://example.org/demo-method/readme\n"
        "    locator: README\n"
        "    supports: [venue.city]\n"
        '    numbers: ["9.99", "7B model"]\n'
    )
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert lines == [
        f"{F}:53: sources[1].supports[0]: 'venue.city' names no field of this record",
        f"{F}:54: sources[1].numbers[0]: '9.99' is not quoted in the take-away, notes or findings",
        f"{F}:54: sources[1].numbers[1]: '7B model' is not one number as the validator reads it "
        "(e.g. '6.51', '25%', '2.1x', '20-30%')",
    ]


def test_unverified_number_must_be_in_the_text(tmp_kb, capsys):
    record = BASE + "unverified:\n  takeaway[93%]: from a secondary summary\n"
    code, lines = _validate(tmp_kb, capsys, record)
    assert (code, lines) == (
        1,
        [f"{F}:52: unverified.takeaway[93%]: '93%' is not a number quoted in takeaway"],
    )


def test_source_needs_something_to_support(tmp_kb, capsys):
    record = BASE.replace("    supports: [venue, identifiers]\n", "")
    code, lines = _validate(tmp_kb, capsys, record)
    assert code == 1
    assert f"{F}:48: sources[0]: a source must list the fields it supports or the numbers it backs" in lines


def test_earlier_versions_need_a_source_and_are_exported(tmp_kb, capsys):
    record = BASE.replace(
        "scope: weight-pruning",
        "earlier_versions:\n  - title: An Older Name for the Demo\n"
        "    venue: {name: arXiv, year: 2023, kind: preprint}\n"
        "scope: weight-pruning",
    )
    code, lines = _validate(tmp_kb, capsys, record)
    assert (code, lines) == (
        1,
        [
            f"{F}:14: earlier_versions[0]: no source: add a sources entry that supports "
            "'earlier_versions[0]', or an unverified reason"
        ],
    )
    fixed = record.replace(
        "supports: [venue, identifiers]", "supports: [venue, identifiers, earlier_versions]"
    )
    assert _validate(tmp_kb, capsys, fixed) == (0, [])
    assert main(["show", "demo-method", "--json"]) == 0
    assert "An Older Name for the Demo" in capsys.readouterr().out


def test_a_later_provider_of_sourced_numbers_counts(tmp_kb, capsys, monkeypatch):
    """A future `results:` list plugs in as one more provider; its numbers cover the text the same way."""
    monkeypatch.setattr(
        provenance, "NUMBER_PROVIDERS", [*provenance.NUMBER_PROVIDERS, lambda p: ["50%", "2.1x", "6.51"]]
    )
    assert _validate(tmp_kb, capsys, BASE.replace(TAKEAWAY, CLAIM)) == (0, [])


def test_real_catalogue_has_every_number_sourced_or_excused(repo_root):
    from kb.checks import check_all
    from kb.store import load_kb

    kb = load_kb(repo_root)
    assert [str(p) for p in check_all(kb)] == []
    for rec in kb.records:
        for field in provenance.TEXT_FIELDS:
            for n in provenance.find_numbers(getattr(rec.paper, field) or ""):
                excused = any(
                    (m := provenance.NUMBER_KEY.match(k))
                    and m.group(1) == field
                    and provenance.canonical(m.group(2)) == n.canonical
                    for k in rec.paper.unverified
                )
                assert excused or provenance.covered(n, provenance.sourced_numbers(rec.paper)), (rec.file, n)
