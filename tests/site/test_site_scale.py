"""What keeps the site build linear in the number of papers, checked on a built fixture site.

The long generated lists (tables by year, concept pages, open challenges) are raw HTML, which mkdocs
neither parses nor rewrites, so their hand-computed links and their escaping are checked on the built
HTML here; the navigation lists no paper page (Material copies it into every page).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import make_kb  # tests/site/conftest.py

HOSTILE_TITLE = "Fixture <script>alert('x')</script> *depth* | pruning"  # tests/site/fixtures/records.yaml


class _Page(HTMLParser):
    """The links and ids of one HTML page, the links of its primary navigation, and the text of each link."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.nav_links: list[str] = []
        self.ids: set[str] = set()
        self.link_text: dict[str, str] = {}
        self._nav_depth = 0  # >0 inside <nav class="md-nav md-nav--primary">
        self._open: list[str] = []  # hrefs of the <a> elements being read

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "nav" and (self._nav_depth or "md-nav--primary" in (a.get("class") or "")):
            self._nav_depth += 1
        for key in ("href", "src"):
            if a.get(key):
                self.links.append(a[key])
                if self._nav_depth:
                    self.nav_links.append(a[key])
        if tag == "a" and a.get("href"):
            self._open.append(a["href"])
            self.link_text.setdefault(a["href"], "")

    def handle_endtag(self, tag):
        if tag == "nav" and self._nav_depth:
            self._nav_depth -= 1
        if tag == "a" and self._open:
            self._open.pop()

    def handle_data(self, data):
        if self._open:
            self.link_text[self._open[-1]] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _add_keyed_results(root: Path) -> None:
    """Give the wanda fixture a leaderboard's worth of results, one of them keyed, and a finding that quotes
    the keyed number: the paper page, the findings page and the leaderboard then link to its row's id."""
    import yaml

    src = {"url": "https://example.org/wanda/paper", "locator": "table 3"}

    def row(**kw):  # fresh dicts: YAML may not write shared ones as aliases
        setting = {"sparsity": 0.5}
        return {"model": "LLaMA-7B", "setting": setting, "dataset": "wikitext2", "metric": "perplexity", **kw}

    path = root / "papers" / "wanda.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["findings"] = [
        {
            "claim": "At 50% Wanda reaches 7.26 against 7.22 for SparseGPT.",
            "theme": "importance-metric",
            "result": "llama-7b-50",
            "source": {**src, "numbers": ["50%"]},
        }
    ]
    data.pop("results", None)
    data["results"] = [  # the last key, as in the records
        row(value=17.29, method="magnitude", source=dict(src)),
        row(value=7.22, method="sparsegpt", source=dict(src)),
        row(value=7.26, method="wanda", key="llama-7b-50", source=dict(src)),
    ]
    path.write_text(
        "# yaml-language-server: $schema=../schema/paper.schema.json\n"
        + yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The fixture knowledge base built by `kb build --site-only`, once for this module; wanda reports keyed
    results (`_add_keyed_results`)."""
    from kb_cli.main import main

    tmp = tmp_path_factory.mktemp("scale")
    root = make_kb(tmp / "kb")
    _add_keyed_results(root)
    mp = pytest.MonkeyPatch()
    mp.setenv("KB_ROOT", str(root))
    try:
        assert (
            main(["build", "--site-only", "--out", str(tmp / "site"), "--docs-out", str(tmp / "docs")]) == 0
        )
    finally:
        mp.undo()
    return tmp / "site"


@pytest.fixture(scope="module")
def pages(site) -> dict[Path, _Page]:
    parsed = {p: _parse(p) for p in site.rglob("*.html")}
    del parsed[site / "404.html"]  # absolute links: mkdocs cannot know where a 404 page is served from
    return parsed


def test_the_navigation_lists_no_paper_page(site, pages) -> None:
    papers = sorted(p.parent.name for p in (site / "papers").glob("*/index.html"))
    assert "wanda" in papers and "fixture-depth" in papers
    for path, page in pages.items():
        assert page.nav_links, f"{path.relative_to(site)} has no navigation"
        in_nav = [link for link in page.nav_links if re.search(r"(^|/)papers/[^/]", link)]
        assert not in_nav, f"{path.relative_to(site)} lists papers in its navigation: {in_nav[:3]}"
    # still one click away: "Papers by year" and every concept value link each paper page
    tables = pages[site / "tables" / "index.html"].links
    assert {f"../papers/{p}/" for p in papers} <= set(tables)
    assert "../../papers/wanda/" in pages[site / "concepts" / "criteria" / "index.html"].links


def test_every_internal_link_and_anchor_resolves(site, pages) -> None:
    """mkdocs validates Markdown links only; the raw HTML lists carry hand-computed addresses."""
    checked = 0
    for path, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith("mailto:"):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            where = f"{path.relative_to(site)} links to {link}"
            assert target.is_file() and site.resolve() in target.parents, f"{where}: no such page"
            if parts.fragment and target.suffix == ".html":
                assert parts.fragment in pages[target].ids, f"{where}: no such anchor"
            checked += 1
    assert checked > 500
    raw_html_lists = ("tables", "challenges", "concepts/form", "concepts/type")
    for name in raw_html_lists:  # these pages' paper links come from the raw HTML templates
        assert any("papers/" in link for link in pages[site / name / "index.html"].links), name


def test_raw_html_lists_show_hostile_text_as_text(site, pages) -> None:
    for name, href in (
        ("tables", "../papers/fixture-depth/"),
        ("concepts/type", "../../papers/fixture-depth/"),
    ):
        page = pages[site / name / "index.html"]
        assert " ".join(page.link_text[href].split()) == HOSTILE_TITLE, name
        html = (site / name / "index.html").read_text(encoding="utf-8")
        assert "<script>alert" not in html and "<img src=x" not in html, name
    challenges = (site / "challenges" / "index.html").read_text(encoding="utf-8")
    assert "<script>alert" not in challenges and "&#60;script&#62;alert" in challenges
    assert 'href="javascript' not in "".join(p.read_text(encoding="utf-8") for p in pages)


def test_citation_keys_stay_unique_when_many_papers_share_one(kb) -> None:
    """Past `z` the suffixes go on with `aa`, `ab`, ... (a 27th clash used to loop for ever)."""
    from site_builder.bibtex import cite_key, unique_keys

    wanda = next(r.paper for r in kb.records if r.paper.id == "wanda")
    papers = [wanda.model_copy(update={"id": f"wanda-{i:02d}"}) for i in range(60)]
    keys = unique_keys(papers)
    base = cite_key(wanda)
    assert len(set(keys.values())) == 60
    assert [keys[f"wanda-{i:02d}"] for i in (0, 1, 25, 26, 27, 59)] == [
        base,
        base + "b",
        base + "z",
        base + "aa",
        base + "ab",
        base + "bh",
    ]


def test_paper_pages_keep_their_headings_contents_and_search_entries(site, pages) -> None:
    """A paper page is raw HTML between Markdown headings (site_builder/rawhtml.py): the headings keep their
    ids and the table of contents, and the search index gets the title, boosted, without the badge strip
    or the sections marked `data-search-exclude`."""
    import json

    path = site / "papers" / "wanda" / "index.html"
    html = path.read_text(encoding="utf-8")
    sections = ["findings", "tags", "challenge", "links", "results", "reference-implementation"]
    sections += ["latest-reproduction", "bibtex", "sources"]
    assert re.findall(r'<a href="#([^"]+)" class="md-nav__link">', html) == sections
    assert set(sections) | {"result-llama-7b-50"} <= pages[path].ids
    # the keyed row's id is linked from the paper's own finding, the findings page and the leaderboard,
    # all raw HTML that mkdocs does not check (`test_every_internal_link_and_anchor_resolves` does)
    assert "#result-llama-7b-50" in pages[path].links
    assert "../papers/wanda/#result-llama-7b-50" in pages[site / "findings" / "index.html"].links
    board = [p for p in pages if p.parent.parent.name == "leaderboards"]
    assert any("../../papers/wanda/#result-llama-7b-50" in pages[p].links for p in board)
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))["docs"]
    entries = {e["location"]: e for e in index if e["location"].startswith("papers/wanda/")}
    assert sorted(entries) == [
        "papers/wanda/",
        "papers/wanda/#challenge",
        "papers/wanda/#findings",
        "papers/wanda/#links",
        "papers/wanda/#reference-implementation",
    ]
    top = entries["papers/wanda/"]
    assert top["title"] == "Wanda: Fixture: activation-aware magnitude pruning" and top["boost"] == 3
    assert "Take-away." in top["text"] and "Semi-structured" not in top["text"]  # no badge text
    assert 'data-search-exclude="' not in html  # the search plugin took the valued attribute off


def test_no_raw_region_marker_reaches_a_page(site) -> None:
    for path in site.rglob("*.html"):
        html = path.read_text(encoding="utf-8")
        assert "<!-- raw -->" not in html and "<!-- /raw -->" not in html, path.relative_to(site)
