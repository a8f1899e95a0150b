"""Leaderboards from paper-reported results: grouping, sorting, the three-method threshold, the CSV
export and escaping on the pages."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import yaml

from site_builder.build import LEADERBOARDS_INDEX, render_all, with_leaderboard_nav
from site_builder.leaderboards import CSV_COLUMNS, build_slices, result_rows, results_csv

MODELINE = "# yaml-language-server: $schema=../schema/paper.schema.json\n"
SRC = {"url": "https://example.org/table?a=1&b=2", "locator": "Table 3"}


def _r(model, method, value, *, setting=None, dataset="wikitext2", metric="perplexity", **kw):
    return {
        "model": model,
        "setting": {"sparsity": 0.5} if setting is None else setting,
        "dataset": dataset,
        "metric": metric,
        "value": value,
        "method": method,
        "source": dict(SRC),
        **kw,
    }


RESULTS = {
    "wanda": [
        _r("LLaMA-7B", "dense", 5.68, setting={}),
        _r("LLaMA-7B", "magnitude", 17.29),
        _r("LLaMA-7B", "sparsegpt", 7.22),
        _r("LLaMA-7B", "wanda", 7.26, headline=True, key="main"),
        _r("LLaMA-7B", "wanda", 7.26, seqlen=4096),  # another window: another slice
        _r("LLaMA-7B", "wanda", 8.0, setting={"pattern": "2:4"}),  # only two methods at 2:4
        _r("LLaMA-7B", "magnitude", 20.0, setting={"pattern": "2:4"}),
        _r("OPT-1.3B", "wanda", 61.0, dataset="boolq", metric="accuracy"),
        _r("OPT-1.3B", "magnitude", 55.5, dataset="boolq", metric="accuracy"),
        _r("OPT-1.3B", "sparsegpt", 60.0, dataset="boolq", metric="accuracy", shots=5),  # few-shot: apart
    ],
    "fixture-depth": [
        _r("LLaMA-7B", "sparsegpt", 7.22, note="re-run <script>alert(1)</script> | =SUM(A1)"),
        _r("LLaMA-7B", "fixture-depth", 7.22),
        _r("LLaMA-7B", "dense", 5.68, setting={}),
        _r("OPT-1.3B", "fixture-depth", 61.0, dataset="boolq", metric="accuracy", headline=True),
    ],
}


@pytest.fixture
def results_kb(kb_root: Path):
    from kb.checks import check_all
    from kb.store import load_kb

    root = kb_root
    for pid, rows in RESULTS.items():
        path = root / "papers" / f"{pid}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["results"] = rows
        path.write_text(
            MODELINE + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
    kb = load_kb(root)
    assert check_all(kb) == []
    return kb


def test_slices_group_across_papers_and_need_three_methods(results_kb):
    slices = build_slices(result_rows(results_kb))
    titles = [s.title for s in slices]
    assert titles == [
        "LLaMA-7B · WikiText-2 perplexity · 50% unstructured",
        "OPT-1.3B · BoolQ accuracy · 50% unstructured",
    ]
    main = slices[0]
    # one row per (method, reporting paper): SparseGPT's 7.22 from both papers, each named
    assert [(r.result.method, r.paper) for r in main.rows] == [
        ("fixture-depth", "fixture-depth"),
        ("sparsegpt", "fixture-depth"),
        ("sparsegpt", "wanda"),
        ("wanda", "wanda"),
        ("magnitude", "wanda"),
    ]
    assert main.methods == ["fixture-depth", "magnitude", "sparsegpt", "wanda"]
    # dense numbers are references, not ranked rows; the 4096-token and 2:4 rows stay out
    assert [r.paper for r in main.dense] == ["fixture-depth", "wanda"]
    assert all(r.result.seqlen is None and r.result.setting.pattern is None for r in main.rows)


def test_sorting_follows_the_metric_direction_and_ties_share_a_rank(results_kb):
    slices = {s.title: s.context() for s in build_slices(result_rows(results_kb))}
    ppl = slices["LLaMA-7B · WikiText-2 perplexity · 50% unstructured"]
    assert [r["value"] for r in ppl["rows"]] == ["7.22", "7.22", "7.22", "7.26", "17.29"]
    assert [r["rank"] for r in ppl["rows"]] == [1, 1, 1, 4, 5]
    assert ppl["better"] == "lower is better"
    acc = slices["OPT-1.3B · BoolQ accuracy · 50% unstructured"]
    assert [r["value"] for r in acc["rows"]] == ["61%", "61%", "55.5%"]  # higher first; the 5-shot row apart
    assert acc["better"] == "higher is better"


def test_threshold_is_a_parameter(results_kb):
    rows = result_rows(results_kb)
    two = {s.title for s in build_slices(rows, min_methods=2)}
    assert "LLaMA-7B · WikiText-2 perplexity · 2:4" in two
    assert not build_slices(rows, min_methods=5)


def test_pages_link_values_to_papers_and_sources_and_escape_notes(results_kb):
    pages = render_all(results_kb).pages
    index = pages[LEADERBOARDS_INDEX]
    slug = "llama-7b-wikitext-2-perplexity-50pct-unstructured"
    assert f"]({slug}.md)" in index
    page = pages[f"leaderboards/{slug}.md"]
    # a plain-name baseline, its value linking to the source, and who reported it
    assert (
        "| 5 | magnitude | [17.29](https://example.org/table?a=1&amp;b=2) | [Wanda](../papers/wanda.md#results) |"
        in page
    )
    # a keyed row links straight to its row on the reporting paper's page
    row = next(line for line in page.splitlines() if "**headline**" in line)
    assert "| [Wanda](../papers/wanda.md#result-main) |" in row
    assert '<span id="result-main"></span>' in pages["papers/wanda.md"]
    assert "[7.26](https://example.org/table?a=1&amp;b=2) **headline**" in page
    assert "[Wanda](../papers/wanda.md)" in page  # a method that names a record links to it
    assert "<script>" not in page and "&#60;script&#62;" in page
    assert "&#124; =SUM" in page  # a table pipe in a note cannot split the row
    paper = pages["papers/wanda.md"]
    assert "## Reported results" in paper
    assert f"(../leaderboards/{slug}.md)" in paper
    assert "**7.26**" in paper  # the headline row stands out


def test_csv_has_one_row_per_number_and_is_safe_for_spreadsheets(results_kb):
    pages = render_all(results_kb).pages
    text = pages["results.csv"]
    assert text == results_csv(result_rows(results_kb))  # reproducible
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == sum(len(v) for v in RESULTS.values())
    first = next(r for r in rows if r["paper"] == "wanda" and r["key"] == "main")
    assert first["value"] == "7.26" and first["sparsity"] == "0.5" and first["headline"] == "true"
    assert first["direction"] == "lower" and first["setting"] == "50% unstructured"
    assert first["source_url"] == SRC["url"]
    noted = next(r for r in rows if r["note"])
    assert noted["note"].startswith("re-run <script>")  # CSV is data: quoted, not HTML-escaped


def test_a_note_that_starts_like_a_formula_is_defused(results_kb):
    rows = result_rows(results_kb)
    row = next(r for r in rows if r.result.note)
    row.result = row.result.model_copy(update={"note": "=HYPERLINK(1)"})
    parsed = list(csv.DictReader(io.StringIO(results_csv([row]))))
    assert parsed[0]["note"] == "'=HYPERLINK(1)"


def test_papers_json_carries_results(results_kb):
    import json

    data = json.loads(render_all(results_kb).pages["papers.json"])
    wanda = next(p for p in data["papers"] if p["id"] == "wanda")
    assert len(wanda["results"]) == len(RESULTS["wanda"])
    assert wanda["results"][3]["headline"] is True


def test_leaderboard_nav_becomes_a_section():
    nav = [{"Home": "index.md"}, {"Leaderboards": LEADERBOARDS_INDEX}, {"About": "about.md"}]
    pages = [LEADERBOARDS_INDEX, "leaderboards/a.md"]
    assert with_leaderboard_nav(nav, pages)[1] == {"Leaderboards": pages}
    assert with_leaderboard_nav(nav, []) == nav


def test_the_catalogue_has_five_comparable_slices_from_sourced_numbers():
    from kb.store import load_kb

    kb = load_kb(Path(__file__).resolve().parents[2])
    slices = build_slices(result_rows(kb))
    assert len(slices) >= 5
    assert all(len(s.methods) >= 3 and all(r.result.source.url for r in s.rows) for s in slices)
    # several slices compare numbers reported by different papers
    assert sum(len({r.paper for r in s.rows}) > 1 for s in slices) >= 5
