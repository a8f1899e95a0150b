"""Deployable form, origin and findings on the site: badges, facets, columns, the findings page,
measured size and speed, and escaping of contributor text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import table_rows  # tests/site/conftest.py

from kb.results import Reproduction
from site_builder.build import render_all
from site_builder.keyfacts import measured_context, result_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def rendered(kb):
    return render_all(kb)


@pytest.fixture
def pages(rendered) -> dict[str, str]:
    return rendered.pages


def test_form_badge_comes_first_and_lists_forms_most_deployable_first(pages) -> None:
    page = pages["papers/wanda.md"]
    strip = page.split("## Key findings")[0]
    assert strip.index('data-axis="form"') < strip.index('data-axis="type"')
    # the record lists n-m-sparse first; the page orders by the list: N:M before unstructured
    labels = re.findall(
        r'class="kb-badge__value kb-form-[a-z-]+" href="\.\./\.\./concepts/form/#([a-z-]+)"', strip
    )
    assert labels == ["n-m-sparse", "unstructured-sparse"]
    fields = {row[0]: row[1] for row in table_rows(page) if len(row) == 2}
    assert fields["Deployable form"] == (
        '<a href="../../concepts/form/#n-m-sparse">N:M semi-structured</a>, '
        '<a href="../../concepts/form/#unstructured-sparse">Unstructured sparse</a>'
    )
    assert fields["Origin"].startswith(
        "Industry and academia: Example University, Example Labs Inc. "
        '(<a href="https://example.org/wanda/paper'
    )


def test_form_colours_and_svg_badges(rendered, kb) -> None:
    css = rendered.pages["assets/axes.css"]
    for v in kb.vocab.lists["form"].values:
        assert f".kb-form-{v.id} {{ --kb-colour: {v.colour.lower()};" in css
        assert f"docs/badges/form-{v.id}.svg" in rendered.committed
    svg = rendered.committed["docs/badges/form-fewer-layers.svg"]
    assert 'aria-label="Form: Fewer layers"' in svg


def test_tables_and_readme_have_a_form_column(rendered) -> None:
    table = rendered.pages["tables.md"]
    row = next(r for r in table.split("<tr>") if 'href="../papers/fixture-depth/"' in r)
    cells = row.split("<td>")
    assert "kb-form-fewer-layers" in cells[2] and "kb-axis-type" not in cells[2]
    section = rendered.committed["README.md"]
    assert "| Title & take-away | Form | Tags | Notes | Code |" in section
    readme_row = next(line for line in section.splitlines() if "2306.00003" in line)
    assert "[![Form: Cache policy](docs/badges/form-cache-policy.svg)](concepts/form.yaml)" in readme_row


def test_papers_json_carries_the_form_and_origin_facets(pages, kb) -> None:
    data = json.loads(pages["papers.json"])
    assert [f["id"] for f in data["forms"]] == [v.id for v in kb.vocab.lists["form"].values]
    assert [o["id"] for o in data["origins"]] == ["industry", "academia", "mixed", "unknown"]
    by_id = {p["id"]: p for p in data["papers"]}
    assert by_id["fixture-kv"]["form"] == ["cache-policy"]
    assert by_id["fixture-depth"]["origin"]["kind"] == "industry"
    assert by_id["wanda"]["findings"][0]["tested_by"] == "wanda"
    js = pages["assets/kb-filter.js"]
    assert 'id: "form"' in js and 'id: "origin"' in js


def test_findings_page_groups_papers_by_theme_side_by_side(pages) -> None:
    page = pages["findings.md"]
    sections = re.split(r"^## ", page, flags=re.M)[1:]
    titles = [s.split(" {:")[0] for s in sections]
    # themes in the list's order, empty themes left out, untagged findings last
    assert titles == [
        "Attention versus MLP",
        "Choosing what to remove",
        "Recovery by training",
        "Other findings",
    ]
    attention = sections[0]  # raw HTML, with the served addresses (the page is served at findings/)
    assert 'href="../papers/fixture-depth/"' in attention and 'href="../papers/fixture-width/"' in attention
    assert 'href="../papers/wanda/"' not in attention
    assert 'href="../papers/fixture-kv/"' in sections[-1]


def test_findings_show_our_verdict_where_a_reproduction_tests_them(pages) -> None:
    rows = table_rows(pages["findings.md"])
    row = next(r for r in rows if 'href="../papers/wanda/"' in r[0])
    assert row[3] == '<a href="../reproductions/#wanda">holds</a> <small>on fixture-model</small>'
    width = next(r for r in rows if "MLP channels are safer" in r[1])
    assert width[3] == "–"
    paper = pages["papers/wanda.md"]
    assert (
        'our reproduction on fixture-model: <a href="#reference-implementation">holds</a>' in paper
        and 'theme: <a href="../../findings/#importance-metric">Choosing what to remove</a>' in paper
    )


def test_contributor_text_in_origin_and_findings_is_escaped(pages) -> None:
    for name in ("papers/fixture-depth.md", "findings.md"):
        page = pages[name]
        assert "<script" not in page and "<b>" not in page and "<i>" not in page, name
        assert 'href="javascript' not in page
    assert "&#60;script&#62;alert(&#39;f&#39;)&#60;/script&#62;" in pages["findings.md"]
    row = next(r for r in table_rows(pages["findings.md"]) if "Deep attention" in r[1])
    assert len(row) == 4 and "&#124;" in row[1]  # a | in the claim stays text
    assert "&#60;b&#62;Evil&#60;/b&#62; Corp" in pages["papers/fixture-depth.md"]


def test_form_concept_page_lists_papers_in_priority_order(pages) -> None:
    page = pages["concepts/form.md"]
    heads = re.findall(r"^## (.+?) \{: #([a-z-]+) \}", page, flags=re.M)
    assert [h[1] for h in heads][:4] == ["fewer-layers", "smaller-dense", "n-m-sparse", "unstructured-sparse"]
    assert "| [Cache policy](#cache-policy) | 1 | [list them](../all-papers.md?form=cache-policy) |" in page


def test_measured_size_and_speed_come_from_our_own_run() -> None:
    rep = Reproduction.model_validate_json(
        (REPO / "reproductions" / "shortgpt.json").read_text(encoding="utf-8")
    )
    run = result_run(rep)
    assert run is not None and run.method == "shortgpt" and run.label == "lowest-bi"
    m = measured_context(rep)
    assert m is not None
    dense = next(r for r in rep.runs if r.kind == "dense")
    assert m["layers"] == run.metrics.size.layers < dense.metrics.size.layers == m["layers_dense"]
    assert m["params"] == f"{run.metrics.size.params_total / 1e6:.1f}M"
    assert run.metrics.speed is not None
    assert m["prefill"] == f"{run.metrics.speed.prefill_speedup:.2f}x"
    # a run without a dense baseline shows nothing rather than a made-up comparison
    no_dense = rep.model_copy(update={"runs": [r for r in rep.runs if r.kind != "dense"]})
    assert measured_context(no_dense) is None


def test_real_catalogue_pages_show_measured_results_for_runnable_papers() -> None:
    from kb.store import load_kb

    pages = render_all(load_kb(REPO)).pages
    shortgpt = pages["papers/shortgpt.md"]
    assert "<strong>Measured here.</strong>" in shortgpt and "CPU prefill" in shortgpt
    assert "no CPU speed-up measured" in pages["papers/wanda.md"]
    for page, text in pages.items():  # measured exactly where a reproduction is committed
        if page.startswith("papers/") and page.endswith(".md"):
            paper = page.removeprefix("papers/").removesuffix(".md")
            assert ("<strong>Measured here.</strong>" in text) == (
                REPO / "reproductions" / f"{paper}.json"
            ).is_file(), paper


def test_form_and_theme_colours_read_at_4_5_to_1(kb) -> None:
    from site_builder.badges import contrast, text_colour

    for closed in kb.vocab.lists.values():
        for colour in [closed.colour, *(v.colour for v in closed.values)]:
            c = colour.lower()
            assert contrast(c, text_colour(c)) >= 4.5, (closed.name, c)


def _rewrite(root: Path, pid: str, **fields) -> None:
    import yaml

    path = root / "papers" / f"{pid}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.update(fields)
    data["results"] = data.pop("results", [])  # results stay the last key
    path.write_text(
        "# yaml-language-server: $schema=../schema/paper.schema.json\n"
        + yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )


SRC = {"url": "https://example.org/wanda/paper", "locator": "table 3"}


@pytest.fixture
def linked_pages(kb_root: Path) -> dict[str, str]:
    from kb.checks import check_all
    from kb.store import load_kb

    def row(**kw):
        base = {"model": "LLaMA-7B", "setting": {"sparsity": 0.5}, "dataset": "wikitext2"}
        return {**base, "metric": "perplexity", **kw, "source": dict(SRC)}

    _rewrite(
        kb_root,
        "wanda",
        findings=[
            {
                "claim": "At 50% the *score* reaches 7.26 | against 7.22 for <b>SparseGPT</b>.",
                "theme": "importance-metric",
                "result": "llama-7b-50",
                "source": {**SRC, "numbers": ["50%"]},
            }
        ],
        results=[
            row(value=7.22, method="sparsegpt"),
            row(value=7.26, method="wanda", key="llama-7b-50"),
        ],
    )
    loaded = load_kb(kb_root)
    problems = check_all(loaded)
    assert problems == [], [p.message for p in problems]
    return render_all(loaded).pages


def test_a_finding_links_its_number_to_the_keyed_results_row(linked_pages) -> None:
    paper = linked_pages["papers/wanda.md"]
    item = next(line for line in paper.splitlines() if line.startswith("<li>"))
    assert item.startswith(
        '<li>At 50% the &#42;score&#42; reaches <a href="#result-llama-7b-50" title="the reported result this'
        ' number comes from">7.26</a> &#124; against 7.22 for &#60;b&#62;SparseGPT&#60;/b&#62;. <small>'
    )
    rows = [r for r in table_rows(paper) if "result-" in r[0]]
    assert len(rows) == 1  # only the keyed row carries an anchor
    assert rows[0][:2] == ['<span id="result-llama-7b-50"></span>LLaMA-7B', "50% unstructured"]
    assert rows[0][5] == "7.26"
    row = next(r for r in table_rows(linked_pages["findings.md"]) if "7.26" in r[1])
    assert '<a href="../papers/wanda/#result-llama-7b-50" title="' in row[1]
    assert "7.22 for" in row[1] and ">7.22<" not in row[1]  # only the linked number is a link


def test_findings_without_a_result_stay_plain_text(linked_pages) -> None:
    paper = linked_pages["papers/fixture-depth.md"]
    assert 'href="#result-' not in paper and "result-" not in paper


def test_claim_html_keeps_spaces_and_refuses_odd_pages() -> None:
    from site_builder.keyfacts import claim_html

    title = 'title="the reported result this number comes from"'
    f = {
        "claim": "x 2.1x y",
        "link": {"before": "x ", "number": "2.1x", "after": " y", "anchor": "result-k"},
    }
    assert claim_html(f) == f'x <a href="#result-k" {title}>2.1x</a> y'
    f_end = {
        "claim": "ends 5%",
        "link": {"before": "ends ", "number": "5%", "after": "", "anchor": "result-k"},
    }
    assert claim_html(f_end, "../papers/a/") == f'ends <a href="../papers/a/#result-k" {title}>5%</a>'
    unquoted = {
        "claim": "no number",
        "link": {"before": "no number", "number": None, "after": "", "anchor": "result-k"},
    }
    assert claim_html(unquoted, "../papers/a/") == 'no number (<a href="../papers/a/#result-k">result</a>)'
    for page in ("javascript:alert(1)", "papers/a.md", '"><script>'):
        with pytest.raises(ValueError):
            claim_html(f, page)
