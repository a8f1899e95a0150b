"""A corpus of malformed records: each is rejected with exactly the expected one-line message,
exit code 1, no traceback, and nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kb_cli.main import main

DATA = Path(__file__).parent / "data"
BASE = (DATA / "base.yaml").read_text(encoding="utf-8")
NOTE = (DATA / "base.md").read_text(encoding="utf-8")
F = "papers/demo-method.yaml"


def sub(old: str, new: str):
    def apply(text: str) -> str:
        assert old in text, f"fixture text {old!r} not found"
        return text.replace(old, new, 1)

    return apply


def raw(data: bytes):
    return lambda _text: data


# (case id, mutation of the base record, the exact expected line)
CASES = [
    (
        "tag-typo",
        sub("criteria: [wanda]", "criteria: [wandaa]"),
        f"{F}:28: tags.criteria[0]: 'wandaa' is not a criteria value (did you mean 'wanda'?)",
    ),
    (
        "seed-typo-samll",
        sub("{value: calibration, size: 128 sequences}", "{value: Samll, size: 50K samples}"),
        f"{F}:32: tags.data[0]: 'Samll' is not a data value (did you mean 'small'?)",
    ),
    (
        "packed-seed-value",
        sub("type: [unstructured, semi-structured]", "type: [Un/Semi-structured]"),
        f"{F}:27: tags.type[0]: 'Un/Semi-structured' is not a type value (did you mean 'semi-structured'?)",
    ),
    (
        "unknown-qualifier",
        sub("scope: layer", "scop: layer"),
        f"{F}:30: tags.budget[0].scop: 'sparsity' takes no qualifier 'scop' (did you mean 'scope'?)",
    ),
    (
        "bad-qualifier-choice",
        sub("scope: layer", "scope: layr"),
        f"{F}:30: tags.budget[0].scope: 'layr' is not allowed (did you mean 'layer'?)",
    ),
    (
        "bad-quantity-unit",
        sub("size: 128 sequences", "size: 128 sequencs"),
        f"{F}:32: tags.data[0].size: unit 'sequencs' is not one of samples, tokens, tasks, sequences (did you mean 'sequences'?)",
    ),
    (
        "quantity-out-of-bin",
        sub("size: 128 sequences", "size: 50B tokens"),
        f"{F}:32: tags.data[0].size: 50B tokens is outside this bin (1-2M tokens)",
    ),
    ("missing-axis", sub("  weight: [frozen]\n", ""), f"{F}:26: tags.weight: required field is missing"),
    (
        "empty-axis",
        sub("weight: [frozen]", "weight: []"),
        f"{F}:34: tags.weight: Value should have at least 1 item after validation, not 0",
    ),
    (
        "duplicate-value",
        sub("retrain: [without]", "retrain: [without, without]"),
        f"{F}:33: tags.retrain[1]: 'without' is listed twice",
    ),
    (
        "unknown-field",
        sub("short_name: Demo", "shortname: Demo"),
        f"{F}:4: shortname: unknown field 'shortname' (did you mean 'short_name'?)",
    ),
    (
        "unknown-nested-field",
        sub("  kind: conference", "  kind: conference\n  city: Vienna"),
        f"{F}:13: venue.city: unknown field 'city' (allowed: name, year, kind, track)",
    ),
    (
        "missing-title",
        sub("title: A Demonstration Record Used by the Validator Tests\n", ""),
        f"{F}:2: title: required field is missing",
    ),
    (
        "id-not-file-name",
        sub("id: demo-method", "id: demo-other"),
        f"{F}:2: id: id 'demo-other' must equal the file name 'demo-method'",
    ),
    (
        "bad-id-format",
        sub("id: demo-method", "id: Demo_Method"),
        f"{F}:2: id: 'Demo_Method' does not match the expected format ^[a-z0-9]+(?:-[a-z0-9]+)*$",
    ),
    (
        "venue-kind-typo",
        sub("kind: conference", "kind: conferense"),
        f"{F}:12: venue.kind: 'conferense' is not one of conference, workshop, journal, preprint, under-review (did you mean 'conference'?)",
    ),
    (
        "year-insane",
        sub("year: 2023", "year: 1066"),
        f"{F}:8: year: year 1066 is outside 1980..{__import__('datetime').date.today().year + 1}",
    ),
    (
        "venue-before-paper",
        sub("  year: 2024", "  year: 2022"),
        f"{F}:11: venue.year: 2022 is before the first public year 2023",
    ),
    (
        "javascript-link",
        sub("https://example.org/blog/demo", "javascript:alert(1)"),
        f"{F}:24: links.blog[0]: only http(s) links are allowed, got scheme 'javascript'",
    ),
    (
        "ftp-paper-link",
        sub("paper: https://arxiv.org/abs/2399.00001", "paper: ftp://arxiv.org/abs/2399.00001"),
        f"{F}:18: links.paper: only http(s) links are allowed, got scheme 'ftp'",
    ),
    (
        "arxiv-with-version",
        sub('arxiv: "2399.00001"', 'arxiv: "2399.00001v2"'),
        f"{F}:15: identifiers.arxiv: '2399.00001v2' does not match the expected format ^\\d{{4}}\\.\\d{{4,5}}$",
    ),
    (
        "arxiv-as-number",
        sub('arxiv: "2399.00001"', "arxiv: 2399.00001"),
        f"{F}:15: identifiers.arxiv: Input should be a valid string",
    ),
    (
        "takeaway-too-long",
        sub("It prunes nothing and claims nothing.", "One. Two. Three. Four sentences now."),
        f"{F}:35: takeaway: 5 sentences; keep it to 1-3",
    ),
    (
        "repo-not-in-code",
        sub("repo: example/demo-method", "repo: example/other"),
        f"{F}:25: repo: 'example/other' is not among links.code",
    ),
    ("duplicate-key", sub("year: 2023", "year: 2023\nyear: 2024"), f"{F}:9: yaml: duplicate key 'year'"),
    (
        "python-tag",
        sub("year: 2023", "year: !!python/object/apply:os.system [id]"),
        f"{F}:8: yaml: tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed",
    ),
    (
        "alias",
        sub("  - Bo Sample", "  - &who Bo Sample\n  - *who"),
        f"{F}:7: yaml: anchors and aliases are not allowed",
    ),
    (
        "not-utf8",
        None,  # bytes built in _bytes_for
        f"{F}:6: yaml: not valid UTF-8 (byte 166)",
    ),
    (
        "not-a-mapping",
        raw(b"- just\n- a list\n"),
        f"{F}:1: modeline: the first line must be `# yaml-language-server: $schema=../schema/paper.schema.json` (editor support)",
    ),
    ("empty-file", raw(b""), f"{F}:1: record: expected a mapping of fields, got empty"),
    (
        "broken-syntax",
        sub("  name: ICLR", "  name: [ICLR"),
        f"{F}:11: yaml: invalid YAML: ",
    ),  # the parser's own wording follows (libyaml or pure Python)
    (
        "unverified-unknown-path",
        sub("takeaway: >-", "unverified: {venue.city: not confirmed}\ntakeaway: >-"),
        f"{F}:35: unverified.venue.city: names no field of this record",
    ),
    (
        "related-unknown",
        sub("takeaway: >-", "related: [sparsgpt]\ntakeaway: >-"),
        f"{F}:35: related[0]: no record with id 'sparsgpt'",
    ),
    (
        "note-too-long",
        sub("retrain: [without]", "retrain: [{value: without, note: " + "x" * 90 + "}]"),
        f"{F}:33: tags.retrain[0].note: note must be text of at most 80 characters",
    ),
]


def _bytes_for(case_id: str, mutate) -> bytes:
    if case_id == "not-utf8":
        return BASE.encode("utf-8").replace(b"Ada Example", b"Ad\xe9 Example")
    out = mutate(BASE)
    return out if isinstance(out, bytes) else out.encode("utf-8")


def test_corpus_is_large_enough():
    assert len(CASES) >= 25
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("case_id", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_malformed_record_is_rejected_with_one_line(tmp_kb: Path, capsys, case_id, mutate, expected):
    (tmp_kb / "papers" / "demo-method.yaml").write_bytes(_bytes_for(case_id, mutate))
    (tmp_kb / "challenge" / "demo-method.md").write_text(NOTE, encoding="utf-8")
    before = sorted(p.relative_to(tmp_kb) for p in tmp_kb.rglob("*"))

    code = main(["validate"])

    out, err = capsys.readouterr()
    assert code == 1
    lines = out.splitlines()
    if expected.endswith(": "):
        assert any(line.startswith(expected) for line in lines), f"got:\n{out}"
    else:
        assert expected in lines, f"got:\n{out}"
    assert "Traceback" not in out + err
    for line in out.splitlines():
        assert re.match(r"^(papers|challenge|concepts)/[\w.-]+:\d+: [\w.\[\]-]+: \S", line), line
    assert sorted(p.relative_to(tmp_kb) for p in tmp_kb.rglob("*")) == before


def test_base_record_is_valid(tmp_kb: Path, capsys):
    (tmp_kb / "papers" / "demo-method.yaml").write_text(BASE, encoding="utf-8")
    (tmp_kb / "challenge" / "demo-method.md").write_text(NOTE, encoding="utf-8")
    assert main(["validate"]) == 0, capsys.readouterr().out


def test_crlf_record_is_valid(tmp_kb: Path, capsys):
    (tmp_kb / "papers" / "demo-method.yaml").write_bytes(BASE.replace("\n", "\r\n").encode())
    (tmp_kb / "challenge" / "demo-method.md").write_bytes(NOTE.replace("\n", "\r\n").encode())
    assert main(["validate"]) == 0, capsys.readouterr().out


def test_missing_challenge_note_and_orphan_note(tmp_kb: Path, capsys):
    (tmp_kb / "papers" / "demo-method.yaml").write_text(BASE, encoding="utf-8")
    (tmp_kb / "challenge" / "other.md").write_text(NOTE, encoding="utf-8")
    assert main(["validate"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"{F}:2: challenge: challenge/demo-method.md is missing (run `kb new` for a template)" in out
    assert "challenge/other.md:1: challenge: no record papers/other.yaml for this note" in out


def test_duplicates_across_records(tmp_kb: Path, capsys):
    twin = BASE.replace("id: demo-method", "id: demo-twin").replace(
        "Used by the Validator Tests", "Used by the Validator Test"
    )
    (tmp_kb / "papers" / "demo-method.yaml").write_text(BASE, encoding="utf-8")
    (tmp_kb / "papers" / "demo-twin.yaml").write_text(twin, encoding="utf-8")
    for stem in ("demo-method", "demo-twin"):
        (tmp_kb / "challenge" / f"{stem}.md").write_text(NOTE, encoding="utf-8")
    assert main(["validate"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert (
        "papers/demo-twin.yaml:15: identifiers.arxiv: 2399.00001 is already the arxiv id of papers/demo-method.yaml"
        in out
    )
    assert (
        "papers/demo-twin.yaml:3: title: nearly the same title as papers/demo-method.yaml; is it a duplicate?"
        in out
    )


def test_challenge_note_with_raw_html_is_rejected(tmp_kb: Path, capsys):
    (tmp_kb / "papers" / "demo-method.yaml").write_text(BASE, encoding="utf-8")
    (tmp_kb / "challenge" / "demo-method.md").write_text(
        NOTE + "\nSee <script>alert(1)</script> here.\n", encoding="utf-8"
    )
    assert main(["validate"]) == 1
    assert (
        "challenge/demo-method.md:4: challenge: raw HTML is not allowed; use Markdown"
        in capsys.readouterr().out
    )


def test_an_unknown_key_named_like_a_type_is_one_line(tmp_path):
    """Found by the fuzz test: a top-level key called `str` used to crash the error formatter."""
    from kb.store import load_kb

    root = tmp_path
    for d in ("papers", "concepts", "challenge"):
        (root / d).mkdir()
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for f in (repo / "concepts").glob("*.yaml"):
        shutil.copy(f, root / "concepts" / f.name)
    base = (Path(__file__).parent / "data" / "base.yaml").read_text(encoding="utf-8")
    (root / "papers" / "demo-method.yaml").write_text(base + "str: 1\n", encoding="utf-8")
    kb = load_kb(root)
    assert any("unknown field 'str'" in str(p) for p in kb.problems), [str(p) for p in kb.problems]
