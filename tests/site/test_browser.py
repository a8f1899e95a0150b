"""The built site in a real browser: Debian's Chromium, headless, driven by Playwright.

Builds the repository's own knowledge base (expected counts come from the records, not constants),
serves it on 127.0.0.1 and checks the all-papers filter, search, paper pages, and the site as
phone and keyboard users meet it: no sideways scrolling at 390 px, a visible focus ring on every
control, badge text contrast in both colour schemes. Skips with the reason when Chromium or
Playwright is missing (CI installs the `chromium` apt package; see .ci/run).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urljoin

import pytest

from site_builder.screenshots import CHROMIUM, CHROMIUM_ARGS
from site_builder.serve import serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
AXES = ("type", "criteria", "budget", "data", "retrain", "weight")


def _require_browser() -> None:
    if not Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (dev extra)")


def _has(rec, axis: str, value: str) -> bool:
    return any(e.value == value for e in getattr(rec.paper.tags, axis))


@pytest.fixture(scope="module")
def records():
    from kb.store import load_kb

    return load_kb(REPO).records


@pytest.fixture(scope="module")
def site(tmp_path_factory, records) -> Path:
    _require_browser()
    from kb_cli.main import main

    out = tmp_path_factory.mktemp("browser")
    mp = pytest.MonkeyPatch()
    mp.setenv("KB_ROOT", str(REPO))
    try:
        code = main(["build", "--site-only", "--out", str(out / "site"), "--docs-out", str(out / "docs")])
    finally:
        mp.undo()
    assert code == 0
    return out / "site"


@pytest.fixture(scope="module")
def browser(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def base(site):
    with serve(site) as url:
        yield url


@pytest.fixture
def open_page(browser, base):
    """A factory for pages (viewport and colour scheme of choice) that record console errors,
    uncaught exceptions and requests to any other host; asserts none of them at the end."""
    errors: list[str] = []
    pages = []

    def make(width: int = 1400, height: int = 900, scheme: str = "light"):
        pg = browser.new_page(viewport={"width": width, "height": height}, color_scheme=scheme)
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.on(
            "request",
            lambda r: None if r.url.startswith(base) else errors.append(f"outside request: {r.url}"),
        )
        pg.base = base  # type: ignore[attr-defined]
        pages.append(pg)
        return pg

    yield make
    for pg in pages:
        pg.close()
    assert errors == []


@pytest.fixture
def page(open_page):
    return open_page()


def _rows(pg) -> list[str]:
    return pg.eval_on_selector_all("#kb-filter tbody tr", "rows => rows.map(r => r.dataset.id)")


def _open_filter(pg, query: str = "") -> None:
    pg.goto(pg.base + "all-papers/" + query)
    pg.wait_for_selector("#kb-filter[data-ready]")


def test_all_papers_page_lists_every_record(page, records) -> None:
    _open_filter(page)
    assert sorted(_rows(page)) == sorted(r.paper.id for r in records)
    assert page.inner_text("#kb-count") == f"Showing {len(records)} of {len(records)} papers"


def test_filter_on_one_axis_then_two(page, records) -> None:
    _open_filter(page)
    structured = {r.paper.id for r in records if _has(r, "type", "structured")}
    assert structured, "no structured paper to filter on"
    page.check("#kb-f-type-structured")
    assert set(_rows(page)) == structured
    assert "type=structured" in page.url

    # A second axis narrows further: pick the value that splits the structured papers most evenly.
    candidates = []
    for axis in AXES[1:]:
        for value in {
            e.value for r in records if r.paper.id in structured for e in getattr(r.paper.tags, axis)
        }:
            both = {r.paper.id for r in records if r.paper.id in structured and _has(r, axis, value)}
            if 0 < len(both) < len(structured):
                candidates.append((abs(2 * len(both) - len(structured)), axis, value, both))
    assert candidates, "no second-axis value narrows the structured papers"
    _, axis, value, both = min(candidates, key=lambda c: (c[0], c[1], c[2]))
    page.check(f"#kb-f-{axis}-{value}")
    assert set(_rows(page)) == both
    assert page.get_attribute("#kb-filter", "data-count") == str(len(both))

    # The address is shareable: opening it restores the same filter.
    shared = page.url
    page.goto(shared)
    page.wait_for_selector("#kb-filter[data-ready]")
    assert set(_rows(page)) == both
    assert page.is_checked("#kb-f-type-structured")


def test_or_within_an_axis(page, records) -> None:
    _open_filter(page, "?type=structured,unstructured")
    expected = {
        r.paper.id for r in records if _has(r, "type", "structured") or _has(r, "type", "unstructured")
    }
    assert set(_rows(page)) == expected


def test_sorting_by_year_both_ways(page, records) -> None:
    _open_filter(page)
    page.click("th[data-sort='year'] button")  # currently year descending -> ascending
    years = [
        page.inner_text(f"#kb-filter tbody tr:nth-child({i}) td:nth-child(3)") for i in (1, len(records))
    ]
    assert int(years[0]) <= int(years[1])
    assert page.get_attribute("th[data-sort='year']", "aria-sort") == "ascending"
    assert "sort=year&dir=asc" in page.url


def test_a_paper_page_shows_its_form_and_six_badges(page, records) -> None:
    rec = next((r for r in records if r.paper.id == "wanda"), records[0])
    page.goto(page.base + f"papers/{rec.paper.id}/")
    axes = page.eval_on_selector_all(".kb-paper-badges .kb-badge", "els => els.map(e => e.dataset.axis)")
    assert axes == ["form", *AXES]  # the deployable form first, then the six axes
    first = page.eval_on_selector(
        ".kb-paper-badges .kb-badge[data-axis=type] .kb-badge__value", "a => a.getAttribute('href')"
    )
    assert first.startswith("../../concepts/type/#")
    page.click(".kb-paper-badges .kb-badge[data-axis=type] .kb-badge__value")
    assert page.url.split("#")[0].endswith("/concepts/type/")


def test_paper_page_tables_align_text_left_and_numbers_right(page) -> None:
    """The paper page's tables are raw HTML: names left (the theme's default for a cell without
    alignment), numbers right, as the Markdown tables were; the theme still wraps them for scrolling."""
    page.goto(page.base + "papers/wanda/")
    align = page.eval_on_selector(  # the first table after the heading: the reported results
        "#results ~ .md-typeset__scrollwrap table",
        "t => [...t.querySelectorAll('tbody tr:first-child td')].map(td => getComputedStyle(td).textAlign)",
    )
    assert align == ["left", "left", "left", "left", "left", "right", "left"]
    fields = page.eval_on_selector_all(
        ".md-typeset__scrollwrap table", "ts => ts.map(t => t.querySelector('th').textContent)"
    )
    assert fields[:3] == ["Field", "Axis", "Model"]


def test_home_page_search_and_dark_mode_toggle(page) -> None:
    page.goto(page.base)
    assert page.locator("table .kb-badge").count() > 20
    scheme = page.get_attribute("body", "data-md-color-scheme")
    page.click("label.md-header__button[for^='__palette']")
    assert page.get_attribute("body", "data-md-color-scheme") != scheme


# ---------------------------------------------------------------------------------------------
# The filter's facets, computed from the records the way the page should compute them.


def _facets(records, vocab) -> dict[str, dict[str, set[str]]]:
    """facet id -> paper id -> the facet's values on that paper (axes, choice qualifiers such as
    `type-granularity`, deployable form, venue, origin, code, status, year)."""
    from kb.vocab import ChoiceQualifier

    out: dict[str, dict[str, set[str]]] = {"form": {r.paper.id: set(r.paper.form) for r in records}}
    for axis in vocab.ordered():
        out[axis.axis] = {r.paper.id: {e.value for e in getattr(r.paper.tags, axis.axis)} for r in records}
        names = sorted(
            {
                n
                for v in axis.values
                for n, q in axis.qualifiers_for(v.id).items()
                if isinstance(q, ChoiceQualifier)
            }
        )
        for name in names:
            values: dict[str, set[str]] = {}
            for r in records:
                got: set[str] = set()
                for e in getattr(r.paper.tags, axis.axis):
                    q = axis.qualifiers_for(e.value).get(name)
                    raw = e.qualifiers.get(name)
                    if isinstance(q, ChoiceQualifier) and raw is not None:
                        got |= set(raw if isinstance(raw, list) else [raw])
                values[r.paper.id] = got
            out[f"{axis.axis}-{name}"] = values
    out["venue"] = {r.paper.id: {r.paper.venue.name} for r in records}
    out["origin"] = {r.paper.id: {r.paper.origin.kind} if r.paper.origin else set() for r in records}
    out["code"] = {
        r.paper.id: ({"official"} if any(c.official for c in r.paper.links.code) else set())
        | ({"any"} if r.paper.links.code else set())
        | ({"runnable"} if r.paper.implementation else set())
        for r in records
    }
    out["status"] = {r.paper.id: {r.paper.venue.kind} for r in records}
    out["year"] = {r.paper.id: {str(r.paper.venue.year)} for r in records}
    return out


def _select(facets, selected: dict[str, set[str]], skip: str | None = None) -> set[str]:
    ids = set(next(iter(facets.values())))
    return {
        i for i in ids if all(f == skip or not want or facets[f][i] & want for f, want in selected.items())
    }


def _counts_on_page(pg) -> dict[tuple[str, str], int]:
    rows = pg.eval_on_selector_all(
        "#kb-filter label[data-n]",
        "ls => ls.map(l => { const b = l.querySelector('input'); return [b.dataset.facet, b.value, +l.dataset.n]; })",
    )
    return {(f, v): n for f, v, n in rows}


def _expected_counts(facets, selected) -> dict[tuple[str, str], int]:
    out = {}
    for f, per_paper in facets.items():
        pool = _select(facets, selected, skip=f)
        for v in sorted(set().union(*per_paper.values())):
            out[(f, v)] = sum(1 for i in pool if v in per_paper[i])
    return out


@pytest.fixture(scope="module")
def vocab():
    from kb.store import load_kb

    return load_kb(REPO).vocab


def test_facet_counts_follow_the_filter_state(page, records, vocab) -> None:
    facets = _facets(records, vocab)
    _open_filter(page)
    assert _counts_on_page(page) == _expected_counts(facets, {})
    page.check("#kb-f-type-structured")
    selected = {"type": {"structured"}}
    assert _counts_on_page(page) == _expected_counts(facets, selected)
    # A second facet: the retrain value that leaves the fewest (but some) structured papers.
    pool = _select(facets, selected)
    value = min(
        (
            v
            for v in set().union(*facets["retrain"].values())
            if 0 < sum(1 for i in pool if v in facets["retrain"][i]) < len(pool)
        ),
        key=lambda v: (sum(1 for i in pool if v in facets["retrain"][i]), v),
    )
    page.check(f"#kb-f-retrain-{value}")
    selected["retrain"] = {value}
    counts = _counts_on_page(page)
    assert counts == _expected_counts(facets, selected)
    assert any(n == 0 for n in counts.values()), "expected some value to drop to zero"
    assert set(_rows(page)) == _select(facets, selected)


def test_an_empty_combination_says_so_and_recovers(page, records, vocab) -> None:
    facets = _facets(records, vocab)
    # Two values of different facets that no single paper carries together.
    pair = None
    for f1 in ("type", "criteria", "budget"):
        for f2 in ("retrain", "weight", "status"):
            for v1 in sorted(set().union(*facets[f1].values())):
                for v2 in sorted(set().union(*facets[f2].values())):
                    if not _select(facets, {f1: {v1}, f2: {v2}}):
                        pair = (f1, v1, f2, v2)
                        break
                if pair:
                    break
            if pair:
                break
        if pair:
            break
    assert pair, "every pair of values co-occurs; cannot build an empty combination"
    f1, v1, f2, v2 = pair
    _open_filter(page, f"?{f1}={v1}&{f2}={v2}")
    assert page.is_visible("#kb-empty")
    assert not page.is_visible("#kb-filter table")
    assert page.get_attribute("#kb-filter", "data-count") == "0"
    page.uncheck(f"#kb-f-{f2}-{v2}")
    assert not page.is_visible("#kb-empty")
    assert set(_rows(page)) == _select(facets, {f1: {v1}})
    # Unticked, the value now matches no paper under the other box: it is hidden rather than offered.
    assert not page.is_visible(f"#kb-f-{f2}-{v2}")
    _open_filter(page, f"?{f1}={v1}&{f2}={v2}")  # a shared address can still hold an empty combination
    page.click("#kb-empty button")
    assert set(_rows(page)) == {r.paper.id for r in records}


def test_granularity_and_status_facets_select_the_right_papers(page, records, vocab) -> None:
    facets = _facets(records, vocab)
    gran = facets["type-granularity"]
    for value in ("depth", "head"):
        expected = {i for i, vs in gran.items() if value in vs}
        assert expected, f"no record has granularity {value}"
        _open_filter(page, f"?type-granularity={value}")
        assert set(_rows(page)) == expected
    status = facets["status"]
    for value in sorted(set().union(*status.values())):
        _open_filter(page)
        page.check(f"#kb-f-status-{value}")
        assert set(_rows(page)) == {i for i, vs in status.items() if value in vs}
    assert "status=" in page.url


def test_filter_search_looks_at_tags_and_take_aways(page, records) -> None:
    import json

    from kb.store import record_json

    _open_filter(page)
    page.fill("#kb-search", "cosine")
    shown = set(_rows(page))
    tagged = {r.paper.id for r in records if _has(r, "criteria", "cosine-similarity")}
    assert tagged and tagged <= shown
    assert all("cosine" in json.dumps(record_json(r)).lower() for r in records if r.paper.id in shown)


def test_searching_a_short_name_ranks_its_paper_first(page, records) -> None:
    named = [r for r in records if r.paper.short_name]
    assert named
    page.goto(page.base)
    box = "input.md-search__input"
    for rec in named:
        first = None
        for _ in range(20):  # the search worker may still be loading the index
            page.eval_on_selector(".md-search-result__list", "l => l.replaceChildren()")
            page.fill(box, rec.paper.short_name)
            page.press(box, "End")  # mkdocs-material searches on key events
            try:
                first = page.wait_for_function(
                    "() => { const a = document.querySelector('.md-search-result__item > a');"
                    " return a && a.getAttribute('href'); }",
                    timeout=1500,
                ).json_value()
                break
            except Exception:  # noqa: BLE001 - Playwright's timeout; try again
                continue
        assert first and f"/papers/{rec.paper.id}/" in first, (rec.paper.short_name, first)
    # Result snippets carry no badge or screen-reader text run together.
    text = page.inner_text(".md-search-result")
    assert not re.search(r"(Type|Criteria|Budget|Data|Retrain|Weight)\1", text)


def _search_hrefs(page, query: str) -> list[str]:
    """The result links mkdocs-material lists for `query`, best first (the worker may still be loading)."""
    box = "input.md-search__input"
    for _ in range(20):
        page.eval_on_selector(".md-search-result__list", "l => l.replaceChildren()")
        page.fill(box, query)
        page.press(box, "End")
        try:
            page.wait_for_function("() => document.querySelectorAll('.md-search-result__item > a').length > 0",
                                   timeout=1500)  # fmt: skip
            break
        except Exception:  # noqa: BLE001 - Playwright's timeout; try again
            continue
    return page.eval_on_selector_all(
        ".md-search-result__item > a", "as => as.map(a => a.getAttribute('href'))"
    )


@pytest.mark.parametrize(
    ("query", "concept"),
    [
        ("layer pruning", "concepts/form/"),
        ("kv cache", "concepts/form/"),
        ("magnitude", "concepts/criteria/"),
    ],
)
def test_a_tag_value_query_ranks_its_concept_page_above_papers_that_mention_it(page, query, concept) -> None:
    page.goto(page.base)
    hrefs = [h.split("?")[0] for h in _search_hrefs(page, query)]
    pages = list(dict.fromkeys(h.replace(page.base, "").lstrip("/") for h in hrefs))  # one entry per page
    assert concept in pages[:3], (query, pages[:6])


def test_a_paper_name_query_ranks_the_paper_then_its_concept_not_the_board(page) -> None:
    page.goto(page.base)
    pages = list(
        dict.fromkeys(
            h.split("?")[0].replace(page.base, "").lstrip("/") for h in _search_hrefs(page, "wanda")
        )
    )
    assert pages[0] == "papers/wanda/" and "reproductions/" not in pages[:3], pages[:6]
    assert "tables/" not in pages and "challenges/" not in pages  # excluded from the index: they repeat pages


def _site_pages(site: Path) -> list[str]:
    return sorted(
        str(p.parent.relative_to(site)) + "/" if p.parent != site else "" for p in site.rglob("index.html")
    )


def test_no_page_scrolls_sideways_at_phone_width(open_page, site) -> None:
    pg = open_page(390, 844)
    paths = _site_pages(site)
    kinds = {p.split("/")[0] for p in paths}
    assert {"", "papers", "concepts", "tables", "all-papers", "challenges"} <= kinds
    for path in paths:
        pg.goto(pg.base + path)
        if path == "all-papers/":
            pg.wait_for_selector("#kb-filter[data-ready]")
        width = pg.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"/{path} is {width} px wide at 390 px"
        off = pg.evaluate("""() => Array.from(document.querySelectorAll('body *')).filter(e => {
            if (getComputedStyle(e).position !== 'fixed') return false;
            const r = e.getBoundingClientRect();
            return r.width > 0 && r.height > 0 && r.right > innerWidth + 1;  // drawers wait off-screen to the left
        }).map(e => e.className)""")
        assert off == [], f"/{path}: fixed elements off screen: {off}"


def test_all_papers_on_a_phone_shows_results_first_and_whole_badges(open_page, records) -> None:
    pg = open_page(390, 844)
    _open_filter(pg)
    assert not pg.eval_on_selector(".kb-filter__panel", "d => d.open")  # facets folded
    top = pg.eval_on_selector("#kb-filter tbody tr", "r => r.getBoundingClientRect().top")
    assert top < 844, f"first result at {top} px"
    split = pg.eval_on_selector_all(
        "#kb-filter tbody .kb-badge",
        """bs => bs.filter(b => {
        const [axis, first] = b.children; return Math.abs(axis.getBoundingClientRect().top - first.getBoundingClientRect().top) > 2;
    }).length""",
    )
    assert split == 0
    broken = pg.eval_on_selector_all(
        "#kb-filter td.kb-title > a, #kb-filter td.kb-title > small",
        """els => {
        const out = [];
        els.forEach(el => { const node = el.firstChild; let at = 0;
          node.textContent.split(/(\\s+|(?<=-))/).forEach(part => {  // spaces and hyphens may break a line
            if (part.trim()) { const r = document.createRange(); r.setStart(node, at); r.setEnd(node, at + part.length);
              if (r.getClientRects().length > 1) out.push(part); }
            at += part.length; }); });
        return out; }""",
    )
    assert broken == []  # no word of a title is split across two lines
    pg.click(".kb-filter__panel > summary")
    pg.check("#kb-f-type-structured")
    assert set(_rows(pg)) == {r.paper.id for r in records if _has(r, "type", "structured")}
    desk = open_page(1400, 900)
    _open_filter(desk)
    assert desk.eval_on_selector(".kb-filter__panel", "d => d.open")
    assert desk.eval_on_selector("#kb-filter tbody tr", "r => r.getBoundingClientRect().top") < 900


_FOCUS_JS = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const ring = x => { const s = getComputedStyle(x);
    return (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 1) || s.boxShadow !== 'none'; };
  // A visually hidden input (mkdocs-material's palette toggle) shows its focus on its label.
  const next = e.nextElementSibling;
  const label = next && next.tagName === 'LABEL' ? next : null;
  const shown = ring(e) || (label !== null && ring(label));
  return {key: e.tagName + '#' + e.id + '.' + e.className + ':' + (e.textContent || '').trim().slice(0, 40) + '@' + (e.getAttribute('href') || ''), shown};
}"""


@pytest.mark.parametrize("path", ["", "all-papers/", "papers/wanda/", "challenges/", "concepts/type/"])
def test_every_control_shows_a_focus_ring(open_page, path) -> None:
    pg = open_page()
    pg.goto(pg.base + path)
    if path == "all-papers/":
        pg.wait_for_selector("#kb-filter[data-ready]")
    seen: dict[str, bool] = {}
    for _ in range(1500):
        pg.keyboard.press("Tab")
        info = pg.evaluate(_FOCUS_JS)
        if info is None or info["key"] in seen:
            break
        seen[info["key"]] = info["shown"]
    assert len(seen) > 10
    missing = [k for k, shown in seen.items() if not shown]
    assert missing == [], missing
    if path == "all-papers/":
        assert any(k.startswith("INPUT#kb-f-") for k in seen)  # the checkboxes were reached


_CONTRAST_JS = """() => {
  const parse = c => { const p = c.match(/[\\d.]+/g).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const lum = c => { const f = v => { v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const out = [];
  document.querySelectorAll('.kb-badge *, .kb-badge').forEach(el => {
    if (el.closest('.kb-sr')) return;
    const text = Array.from(el.childNodes).filter(n => n.nodeType === 3 && n.textContent.trim()).map(n => n.textContent).join('');
    if (!text.trim() || el.getBoundingClientRect().width === 0) return;
    const chain = []; for (let e = el; e; e = e.parentElement) chain.unshift(e);
    let bg = [255, 255, 255, 1], opacity = 1;
    chain.forEach(e => { const s = getComputedStyle(e); const c = parse(s.backgroundColor);
      if (c[3] > 0) bg = over(c, bg); opacity *= parseFloat(s.opacity); });
    const fg = parse(getComputedStyle(el).color); fg[3] *= opacity;
    const shown = over(fg, bg);
    const [a, b] = [lum(shown), lum(bg)].sort((x, y) => y - x);
    out.push({text: text.trim(), ratio: (a + 0.05) / (b + 0.05)});
  });
  return out;
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_badge_text_contrast_is_at_least_4_5(open_page, scheme) -> None:
    pg = open_page(scheme=scheme)
    checked = 0
    for path in ("", "tables/", "all-papers/", "papers/wanda/", "concepts/data/"):
        pg.goto(pg.base + path)
        if path == "all-papers/":
            pg.wait_for_selector("#kb-filter[data-ready]")
        expected = "slate" if scheme == "dark" else "default"
        assert pg.get_attribute("body", "data-md-color-scheme") == expected
        found = pg.evaluate(_CONTRAST_JS)
        low = sorted({(f["text"], round(f["ratio"], 2)) for f in found if f["ratio"] < 4.5})
        assert low == [], f"/{path} ({scheme}): {low[:10]}"
        checked += len(found)
    assert checked > 100


def test_paper_page_links_both_ways_and_copies_its_bibtex(browser, base, records) -> None:
    ctx = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    try:
        pg = ctx.new_page()
        named_by = sorted(r.paper.id for r in records if "wanda" in r.paper.related)
        assert named_by
        pg.goto(base + "papers/wanda/")
        hrefs = set(pg.eval_on_selector_all(".md-content a", "as => as.map(a => a.getAttribute('href'))"))
        resolved = {urljoin("/papers/wanda/", h) for h in hrefs}  # the same page, however the link is written
        assert {f"/papers/{i}/" for i in named_by} <= resolved
        assert "https://arxiv.org/abs/2306.11695" in hrefs
        assert "../../all-papers/?criteria=wanda" in hrefs
        nav = set(pg.eval_on_selector_all(".md-nav a", "as => as.map(a => a.getAttribute('href'))"))
        assert not {f"../{r.paper.id}/" for r in records} & nav  # papers are reached from tables, not the nav
        pg.click(".kb-copyable:has(pre.kb-bibtex) button.kb-copy")
        copied = pg.evaluate("navigator.clipboard.readText()")
        assert copied.startswith("@inproceedings{sun2024wanda,") and copied == pg.inner_text("pre.kb-bibtex")
    finally:
        ctx.close()


def test_challenge_links_open_the_folded_note(page) -> None:
    page.goto(page.base + "challenges/#wanda")
    assert page.eval_on_selector("details#wanda", "d => d.open")
    assert not page.eval_on_selector("details#sparsegpt", "d => d.open")


def _arm_runs(rep: dict, label: str) -> list[dict]:
    """The committed runs an arm label on the board stands for: one run by its label, or the draws of one
    arm ("random, mean of 3 draws" -> random-0, random-1, random-2)."""
    m = re.fullmatch(r"(.+), mean of (\d+) draws", label)
    if m is None:
        return [r for r in rep["runs"] if r["label"] == label]
    stem, k = m.group(1), int(m.group(2))
    runs = [r for r in rep["runs"] if re.fullmatch(re.escape(stem) + r"-\d+", r["label"])]
    assert len(runs) == k, (label, [r["label"] for r in runs])
    return runs


def test_every_number_on_the_board_is_one_runs_metric_or_a_labelled_mean(page) -> None:
    import json

    from site_builder.board import number

    page.goto(page.base + "reproductions/")
    rows = page.eval_on_selector_all(
        "tr[id^='row-']",
        "rs => rs.map(r => [r.id.slice(4), Array.from(r.querySelectorAll('.kb-board__arm')).map(s => s.textContent)])",
    )
    assert rows
    checked = 0
    for paper, arms in rows:
        rep = json.loads((REPO / "reproductions" / f"{paper}.json").read_text(encoding="utf-8"))
        for text in arms:
            label, _, values = text.partition(": ")
            runs = _arm_runs(rep, label)
            assert runs, (paper, text)
            metric = {"cont. ppl": lambda r: (r["metrics"].get("cache") or {}).get("ppl"),
                      "ppl": lambda r: r["metrics"].get("ppl"),
                      "acc": lambda r: (r["metrics"].get("probe") or {}).get("acc_norm")}  # fmt: skip
            for name, shown in re.findall(r"(cont\. ppl|ppl|acc) ([^,(]+)", values):
                got = [metric[name](r) for r in runs]
                want = got[0] if len(runs) == 1 else sum(got) / len(got)
                assert shown.strip() == number(want), (paper, text, name)
                checked += 1
    assert checked >= 2 * len(rows)


@pytest.mark.parametrize(("width", "height"), [(1400, 900), (390, 844)])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_verdict_is_visible_without_scrolling_sideways(open_page, width, height, scheme) -> None:
    pg = open_page(width, height, scheme)
    pg.goto(pg.base + "reproductions/")
    boxes = pg.eval_on_selector_all(
        "td[data-label='Verdict'] .kb-verdict",
        "vs => vs.map(v => { const b = v.getBoundingClientRect(); const s = getComputedStyle(v);"
        " return [v.textContent, b.left, b.right, s.visibility, s.display]; })",
    )
    assert boxes
    for word, left, right, visibility, display in boxes:
        assert word in ("holds", "does not hold", "inconclusive", "not run")
        assert left >= 0 and right <= width and visibility == "visible" and display != "none", (
            word,
            left,
            right,
        )
    assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
