"""Rendering to Markdown and exports (no mkdocs): pages, badges, escaping, README section."""

from __future__ import annotations

import re

import pytest
from conftest import table_rows  # tests/site/conftest.py

from site_builder.build import render_all
from site_builder.readme import BEGIN, END, splice


@pytest.fixture
def pages(kb) -> dict[str, str]:
    return render_all(kb).pages


def test_every_page_and_export_is_rendered(pages, kb) -> None:
    expected = {
        "index.md",
        "tables.md",
        "all-papers.md",
        "challenges.md",
        "reproductions.md",
        "findings.md",
        "concepts/form.md",
        "about.md",
        "papers.json",
        "papers.bib",
        "results.csv",
        "leaderboards/index.md",
        "assets/axes.css",
        "assets/kb.css",
        "assets/kb.js",
        "assets/kb-filter.js",
    }
    expected |= {f"concepts/{a}.md" for a in ("type", "criteria", "budget", "data", "retrain", "weight")}
    expected |= {f"papers/{r.paper.id}.md" for r in kb.records}
    # the fixture reproduction's runs at 50% sparsity, drawn for the light and the dark scheme
    expected |= {"plots/sparsity-fixture-model.svg", "plots/sparsity-fixture-model.dark.svg"}
    assert set(pages) == expected


def test_paper_page_shows_six_badges_in_axis_order_linking_to_value_anchors(pages) -> None:
    page = pages["papers/wanda.md"]
    axes = re.findall(r'<span class="kb-badge kb-axis-([a-z]+)" data-axis=', page.split("## Tags")[0])
    assert axes == ["type", "criteria", "budget", "data", "retrain", "weight"]
    # raw HTML with the served address: the page is served at papers/wanda/
    assert '<a class="kb-badge__value" href="../../concepts/type/#semi-structured">' in page
    assert '<span class="kb-sr" data-search-exclude>Type: </span>Unstructured' in page
    # The badge strip is left out of the search index (the tag table below carries the same words): the
    # search plugin skips an element with a valued data-search-exclude, then strips the attribute.
    assert (
        '<div class="kb-paper-badges" data-paper="wanda" data-search-exclude="data-search-exclude">' in page
    )


def test_paper_page_carries_links_bibtex_implementation_and_reproduction(pages) -> None:
    page = pages["papers/wanda.md"]
    assert (
        '<li>Blog: <a href="https://example.org/blog/wanda">https://example.org/blog/wanda</a></li>' in page
    )
    assert "@inproceedings{example2024wanda," in page
    assert re.search(
        r"booktitle +\= \{International Conference on Learning Representations \(ICLR 2024\)\}", page
    )
    commands = page.split('<pre class="kb-commands" data-copy-label="Copy commands"><code>')[1].split(
        "</code>"
    )[0]
    assert commands.splitlines() == [
        "kb reproduce wanda --model tiny-llama",
        "kb prune wanda --model tiny-llama --save pruned-wanda",
    ]
    assert "### Latest reproduction" in page
    assert ["wanda", "wanda", "2", "0.0M", "50.0%", "42.25", "0.4"] in table_rows(page)
    assert "★ 1.2k" in page and "as of 2025-01-02" in page
    assert '<a rel="nofollow noopener" href="https://example.org/challenge">safe link</a>' in page


def test_contributor_text_is_escaped_and_unsafe_links_are_dropped(pages) -> None:
    page = pages["papers/fixture-depth.md"]
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&#60;script&#62;" in page
    assert "javascript:" not in page.replace("(javascript:alert(1))", "")
    assert 'href="javascript' not in page
    assert "<strong>bold</strong>" in page  # the notes field is Markdown
    table = pages["tables.md"]
    assert "&#42;depth&#42; &#124; pruning" in table  # * and | cannot break the row


def test_tables_follow_the_seed_layout(pages) -> None:
    table = pages["tables.md"]
    assert "<th>Title &amp; take-away</th><th>Form</th><th>Tags</th><th>Notes</th><th>Code</th>" in table
    assert re.findall(r"^## (\d{4})$", table, flags=re.M) == ["2024", "2023"]
    # one raw HTML row per paper, its links the served addresses (tables.md is served at tables/)
    row = next(r for r in table.split("<tr>") if 'href="../papers/fixture-width/"' in r)
    assert '<a href="https://github.com/example/width">PyTorch</a> <small>(unofficial)</small>' in row
    assert row.count('class="kb-badge kb-axis-') == 6 and 'href="../concepts/type/#structured"' in row
    assert '.md"' not in table and "](" not in row  # no Markdown link left for mkdocs to parse


def test_exports(pages, kb) -> None:
    import json

    data = json.loads(pages["papers.json"])
    assert data["schema_version"] >= 1 and len(data["papers"]) == len(kb.records)
    bib = pages["papers.bib"]
    assert len(re.findall(r"^@\w+\{", bib, flags=re.M)) == len(kb.records)
    assert (
        "@misc{bexampleb2024fixturedepth," in bib
    )  # author-year-name key and "eprint        = {2401.00001}" in bib


def test_axis_colours_come_from_the_vocabulary(pages, kb) -> None:
    css = pages["assets/axes.css"]
    for axis in kb.vocab.ordered():
        assert f".kb-axis-{axis.axis} {{ --kb-colour: {axis.colour.lower()};" in css


def test_rendering_is_deterministic(kb) -> None:
    first, second = render_all(kb), render_all(kb)
    assert first.pages == second.pages and first.committed == second.committed


def test_readme_section_uses_local_svg_badges_and_repository_links(kb) -> None:
    readme = render_all(kb).committed["README.md"]
    assert readme.startswith("# Fixture\n\nHand-written intro.\n\n" + BEGIN)
    section = readme.split(BEGIN)[1].split(END)[0]
    assert "shields.io" not in section
    assert "[![Type: Semi-structured](docs/badges/type-semi-structured.svg)](concepts/type.yaml)" in section
    assert "[Challenge](challenge/wanda.md)" in section
    assert "[★ 1.2k](https://github.com/example/wanda) <sub>as of 2025-01-02</sub>" in section


def test_badge_svgs_are_well_formed_and_name_the_axis(kb) -> None:
    import xml.etree.ElementTree as ET

    committed = render_all(kb).committed
    svg = committed["docs/badges/type-structured.svg"]
    root = ET.fromstring(svg)
    assert root.get("aria-label") == "Type: Structured"
    assert "#2f6fd0" in svg.lower() or kb.vocab["type"].colour.lower() in svg.lower()


def test_splice_replaces_only_between_markers() -> None:
    readme = f"intro\n{BEGIN}\nold\n{END}\noutro\n"
    assert splice(readme, "new\n") == f"intro\n{BEGIN}\nnew\n{END}\noutro\n"
    assert splice("intro\n", "new") == f"intro\n\n{BEGIN}\nnew\n{END}\n"


def test_splice_refuses_broken_markers() -> None:
    from kb.errors import KBError

    with pytest.raises(KBError):
        splice(f"{END}\n{BEGIN}\n", "x")
    with pytest.raises(KBError):
        splice(f"{BEGIN}\n{BEGIN}\n{END}\n", "x")


def test_earlier_titles_and_sources_are_shown_escaped_and_exported(pages) -> None:
    import json

    page = pages["papers/fixture-depth.md"]
    assert [
        "Earlier title",
        "Fixture &#60;em&#62;older&#60;/em&#62; depth title (arXiv 2024 (preprint))",
    ] in table_rows(page)
    assert "<em>older" not in page
    assert "## Sources" in page and "fixture abstract page &#60;b&#62;v1&#60;/b&#62;" in page
    assert "supports <code>venue</code>, <code>identifiers</code>, <code>earlier_versions</code>" in page
    assert "Earlier title" not in pages["papers/wanda.md"]
    # the earlier title stays findable in the export the site's filter and other tools read
    record = next(p for p in json.loads(pages["papers.json"])["papers"] if p["id"] == "fixture-depth")
    assert record["earlier_versions"][0]["title"] == "Fixture <em>older</em> depth title"
    assert record["sources"][0]["supports"] == ["venue", "identifiers", "earlier_versions"]


def test_paper_page_heading_leads_with_the_short_name_and_search_boost(pages) -> None:
    wanda = pages["papers/wanda.md"]
    assert "\n# Wanda: Fixture: activation-aware magnitude pruning\n" in wanda
    assert "search:\n  boost:" in wanda.split("---")[1]
    width = pages["papers/fixture-width.md"]
    assert "\n# Fixture structured width pruning with recovery\n" in width  # no short name: the title alone


def test_identifiers_link_out_and_related_links_go_both_ways(pages) -> None:
    wanda = table_rows(pages["papers/wanda.md"])
    assert ["arXiv", '<a href="https://arxiv.org/abs/2306.11695">2306.11695</a>'] in wanda
    assert [
        "Named as related by",
        '<a href="../../papers/fixture-width/">Fixture structured width pruning with recovery</a>',
    ] in wanda
    width = pages["papers/fixture-width.md"]
    assert ["Related", '<a href="../../papers/wanda/">Wanda</a>'] in table_rows(width)
    assert "Named as related by" not in width
    assert ["Status", "Preprint"] in table_rows(pages["papers/fixture-depth.md"])


def test_tag_values_link_to_the_filtered_list(pages) -> None:
    wanda = pages["papers/wanda.md"]
    assert (
        '<a href="../../all-papers/?criteria=wanda" title="Every paper tagged Criteria: Wanda">all</a>'
        in wanda
    )
    concept = pages["concepts/type.md"]
    assert "| [Structured](#structured) | 2 | [list them](../all-papers.md?type=structured) |" in concept
    home = pages["index.md"]
    assert "[2](all-papers.md?type=structured " in home


def test_home_page_counts_values_marks_unused_ones_and_says_how_to_cite(pages, kb) -> None:
    home = pages["index.md"]
    used = {e.value for r in kb.records for e in r.paper.tags.criteria}
    unused = [v for v in kb.vocab["criteria"].values if v.id not in used]
    assert unused, "the fixture uses every criteria value"
    assert home.count('<span class="kb-none">none yet</span>') == sum(
        1
        for a in kb.vocab.ordered()
        for v in a.values
        if not any(e.value == v.id for r in kb.records for e in getattr(r.paper.tags, a.axis))
    )
    assert (
        "the project's repository" in home and "howpublished" not in home
    )  # no address configured: none guessed
    assert "@misc{pruning-kb," in home and 'data-copy-label="Copy citation"' in home


def test_repository_url_comes_from_mkdocs_config_when_set() -> None:
    from site_builder.context import catalogue_citation, repository_url

    assert repository_url({}) is None
    assert repository_url({"repo_url": "https://example.org/kb"}) == "https://example.org/kb"
    assert repository_url({"extra": {"repository": "https://example.org/x"}}) == "https://example.org/x"
    assert repository_url({"repo_url": "javascript:alert(1)"}) is None
    assert "\\url{https://example.org/x}" in catalogue_citation("https://example.org/x", 3)


def test_challenges_are_grouped_and_folded_one_per_paper(pages, kb) -> None:
    page = pages["challenges.md"]
    ids = re.findall(r'<details class="kb-challenge" id="([a-z0-9-]+)">', page)
    assert sorted(ids) == sorted(r.paper.id for r in kb.records)
    assert "## Weight pruning {: #scope-weight-pruning }" in page
    assert "<summary><strong>Wanda: Fixture: activation-aware magnitude pruning</strong>" in page
    assert (
        '<a href="../papers/wanda/">Paper page</a> · <a href="../reproductions/#wanda">reproduction</a>'
        in page
    )


def test_stars_are_promised_only_when_there_are_stars(kb_root) -> None:
    from kb.store import load_kb

    (kb_root / "data" / "meta" / "github.json").unlink()
    rendered = render_all(load_kb(kb_root))
    assert "stars" not in rendered.pages["tables.md"].split("## ")[0].lower()
    assert "Stars as of" not in rendered.committed["README.md"]


def test_every_badge_colour_pairs_with_a_text_colour_of_at_least_4_5_to_1(kb) -> None:
    from site_builder.badges import AXIS_LABEL_BG, contrast, text_colour

    for axis in kb.vocab.ordered():
        colour = axis.colour.lower()
        assert contrast(colour, text_colour(colour)) >= 4.5, f"{axis.axis}: {colour}"
    assert contrast(AXIS_LABEL_BG, "#ffffff") >= 4.5
