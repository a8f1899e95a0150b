"""Rendering to Markdown and exports (no mkdocs): pages, badges, escaping, README section."""

from __future__ import annotations

import re

import pytest

from site_builder.build import render_all
from site_builder.readme import BEGIN, END, splice


@pytest.fixture
def pages(kb) -> dict[str, str]:
    return render_all(kb).pages


def test_every_page_and_export_is_rendered(pages, kb) -> None:
    expected = {"index.md", "tables.md", "all-papers.md", "challenges.md", "reproductions.md", "about.md",
                "papers.json", "papers.bib", "assets/axes.css", "assets/kb.css", "assets/kb-filter.js"}
    expected |= {f"concepts/{a}.md" for a in ("type", "criteria", "budget", "data", "retrain", "weight")}
    expected |= {f"papers/{r.paper.id}.md" for r in kb.records}
    assert set(pages) == expected


def test_paper_page_shows_six_badges_in_axis_order_linking_to_value_anchors(pages) -> None:
    page = pages["papers/wanda.md"]
    axes = re.findall(r'<span class="kb-badge kb-axis-([a-z]+)" data-axis=', page.split("## Tags")[0])
    assert axes == ["type", "criteria", "budget", "data", "retrain", "weight"]
    assert "](../concepts/type.md#semi-structured){.kb-badge__value}" in page
    assert '<span class="kb-sr">Type: </span>Unstructured' in page


def test_paper_page_carries_links_bibtex_implementation_and_reproduction(pages) -> None:
    page = pages["papers/wanda.md"]
    assert "- Blog: [https://example.org/blog/wanda](https://example.org/blog/wanda)" in page
    assert "@inproceedings{wanda," in page
    assert "`kb reproduce wanda --model tiny-llama`" in page
    assert "### Latest reproduction" in page and "| wanda | 50% | 50.0% | 42.25 | 0.4 |" in page
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
    assert "| Title & take-away | Tags | Notes | Code |" in table
    assert re.findall(r"^## (\d{4})$", table, flags=re.M) == ["2024", "2023"]
    row = next(line for line in table.splitlines() if "papers/fixture-width.md" in line)
    assert "[PyTorch](https://github.com/example/width) <small>(unofficial)</small>" in row
    assert row.count('class="kb-badge kb-axis-') == 6


def test_exports(pages, kb) -> None:
    import json

    data = json.loads(pages["papers.json"])
    assert data["schema_version"] >= 1 and len(data["papers"]) == len(kb.records)
    bib = pages["papers.bib"]
    assert len(re.findall(r"^@\w+\{", bib, flags=re.M)) == len(kb.records)
    assert "@misc{fixture-depth," in bib and "eprint        = {2401.00001}" in bib


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


def test_every_badge_colour_pairs_with_a_text_colour_of_at_least_4_5_to_1(kb) -> None:
    from site_builder.badges import AXIS_LABEL_BG, contrast, text_colour

    for axis in kb.vocab.ordered():
        colour = axis.colour.lower()
        assert contrast(colour, text_colour(colour)) >= 4.5, f"{axis.axis}: {colour}"
    assert contrast(AXIS_LABEL_BG, "#ffffff") >= 4.5
