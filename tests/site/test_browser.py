"""The built site in a real browser: Debian's Chromium, headless, driven by Playwright.

Builds the repository's own knowledge base (expected counts come from the records, not constants),
serves it on 127.0.0.1 and checks the all-papers filter and a paper page. Skips with the reason when
Chromium or Playwright is missing (CI installs the `chromium` apt package; see .ci/run).
"""

from __future__ import annotations

import shutil
from pathlib import Path

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
    from kb.cli import main

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


@pytest.fixture
def page(browser, site):
    """A page that records console errors and uncaught exceptions; asserts none at the end."""
    errors: list[str] = []
    with serve(site) as base:
        pg = browser.new_page()
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.base = base  # type: ignore[attr-defined]
        yield pg
        pg.close()
    assert errors == []


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
        for value in {e.value for r in records if r.paper.id in structured for e in getattr(r.paper.tags, axis)}:
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
    expected = {r.paper.id for r in records if _has(r, "type", "structured") or _has(r, "type", "unstructured")}
    assert set(_rows(page)) == expected


def test_sorting_by_year_both_ways(page, records) -> None:
    _open_filter(page)
    page.click("th[data-sort='year'] button")  # currently year descending -> ascending
    years = [page.inner_text(f"#kb-filter tbody tr:nth-child({i}) td:nth-child(3)") for i in (1, len(records))]
    assert int(years[0]) <= int(years[1])
    assert page.get_attribute("th[data-sort='year']", "aria-sort") == "ascending"
    assert "sort=year&dir=asc" in page.url


def test_a_paper_page_shows_its_six_badges(page, records) -> None:
    rec = next((r for r in records if r.paper.id == "wanda"), records[0])
    page.goto(page.base + f"papers/{rec.paper.id}/")
    axes = page.eval_on_selector_all(".kb-paper-badges .kb-badge", "els => els.map(e => e.dataset.axis)")
    assert axes == list(AXES)
    first = page.eval_on_selector(".kb-paper-badges .kb-badge__value", "a => a.getAttribute('href')")
    assert first.startswith("../../concepts/type/#")
    page.click(".kb-paper-badges .kb-badge[data-axis=type] .kb-badge__value")
    assert page.url.split("#")[0].endswith("/concepts/type/")


def test_home_page_search_and_dark_mode_toggle(page) -> None:
    page.goto(page.base)
    assert page.locator("table .kb-badge").count() > 20
    scheme = page.get_attribute("body", "data-md-color-scheme")
    page.click("label.md-header__button[for^='__palette']")
    assert page.get_attribute("body", "data-md-color-scheme") != scheme
