"""Accessibility of the built site (WCAG 2.2, levels A and AA), in headless Chromium.

- axe-core, the rule engine that ships with axe-playwright-python, finds no serious or critical violation on
  any page type (home, the all-papers filter, a paper, a concept, the reproduction board, the leaderboards
  index and one slice, findings, challenges, and the search overlay with results) in either colour scheme;
- at desktop width (1400 px) no table on any page is cut off by a box that hides or scrolls its overflow;
- at phone width (390 px) every region that scrolls can be reached and scrolled from the keyboard, and a
  table that does not fit scrolls inside such a region (or reflows).

The site is the repository's own knowledge base, built once by the fixtures of test_browser.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import test_browser  # tests/site/test_browser.py: its fixtures build, serve and open the site

# Shared fixtures: the site is built once per module that uses it, and every page records console errors.
base, browser, open_page, records, site = (
    test_browser.base,
    test_browser.browser,
    test_browser.open_page,
    test_browser.records,
    test_browser.site,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
BLOCKING = {"serious", "critical"}
DESKTOP = (1400, 900)
PHONE = (390, 844)
READY = "#kb-filter[data-ready]"
PAGE_TYPES = [
    "home",
    "filter",
    "paper",
    "concept",
    "board",
    "leaderboards",
    "leaderboard-slice",
    "findings",
    "challenges",
    "search",
]


def _pages(site: Path) -> list[str]:
    return sorted(
        str(p.parent.relative_to(site)) + "/" if p.parent != site else "" for p in site.rglob("index.html")
    )


def _address(kind: str, site: Path, records) -> str:
    if kind == "paper":
        ids = {r.paper.id for r in records}
        return f"papers/{'wanda' if 'wanda' in ids else sorted(ids)[0]}/"
    if kind == "leaderboard-slice":
        slices = sorted(p.parent.name for p in (site / "leaderboards").glob("*/index.html"))
        assert slices, "the build made no leaderboard slice page"
        return f"leaderboards/{slices[0]}/"
    return {
        "home": "",
        "search": "",
        "filter": "all-papers/",
        "concept": "concepts/type/",
        "board": "reproductions/",
        "leaderboards": "leaderboards/",
        "findings": "findings/",
        "challenges": "challenges/",
    }[kind]


def _goto(pg, path: str) -> None:
    pg.goto(pg.base + path)
    if path == "all-papers/":
        pg.wait_for_selector(READY)


def _open_search_results(pg, records) -> str:
    """Type a paper's short name into the header search and wait until the overlay lists results."""
    query = next((r.paper.short_name for r in records if r.paper.short_name), "pruning")
    box = "input.md-search__input"
    for _ in range(20):  # the search worker may still be loading its index
        pg.fill(box, query)
        pg.press(box, "End")  # mkdocs-material searches on key events
        try:
            pg.wait_for_selector(".md-search-result__item", state="visible", timeout=1500)
            return query
        except Exception:  # noqa: BLE001 - Playwright's timeout; type again
            continue
    raise AssertionError(f"the search overlay never listed results for {query!r}")


def _report(violations: list[dict]) -> str:
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v['impact']}, {len(v['nodes'])} nodes): {v['help']}")
        for node in v["nodes"][:8]:
            detail = (node.get("failureSummary") or "").replace("\n", " ")[:220]
            lines.append(f"    {' > '.join(map(str, node['target']))}  {detail}")
        if len(v["nodes"]) > 8:
            lines.append(f"    ... and {len(v['nodes']) - 8} more")
    return "\n".join(lines)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("kind", PAGE_TYPES)
def test_axe_finds_no_serious_violation(open_page, site, records, kind, scheme) -> None:
    axe_sync = pytest.importorskip(
        "axe_playwright_python.sync_playwright", reason="axe-playwright-python is not installed (dev extra)"
    )
    pg = open_page(*DESKTOP, scheme=scheme)
    path = _address(kind, site, records)
    _goto(pg, path)
    assert pg.get_attribute("body", "data-md-color-scheme") == ("slate" if scheme == "dark" else "default")
    if kind == "search":
        _open_search_results(pg, records)
    options = {"runOnly": {"type": "tag", "values": WCAG_TAGS}, "resultTypes": ["violations"]}
    response = axe_sync.Axe().run(pg, options=options).response
    if kind == "search":  # the overlay was still open while axe looked at the page
        assert pg.locator(".md-search-result__item").first.is_visible()
    blocking = [v for v in response["violations"] if v["impact"] in BLOCKING]
    assert blocking == [], f"/{path} ({kind}, {scheme}): axe {response['testEngine']['version']}\n" + _report(
        blocking
    )


# Every visible table (folded notes opened first) and the boxes between it and the article that hide or scroll
# what overflows them: each such box whose content is wider than itself, with whether the keyboard can reach it
# (it takes focus itself, or holds something that does) and how it is labelled.
_TABLE_CLIPS_JS = """async () => {
  document.querySelectorAll('.md-content details').forEach(d => { d.open = true; });
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const focusable = 'a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select, textarea, summary, [tabindex]';
  const reachable = el => (el.matches(focusable) && el.tabIndex >= 0)
    || Array.from(el.querySelectorAll(focusable)).some(f => f.tabIndex >= 0 && f.getClientRects().length > 0);
  const out = [];
  document.querySelectorAll('.md-content table').forEach((table, index) => {
    if (!table.getClientRects().length) return;
    const head = Array.from(table.querySelectorAll('th')).slice(0, 4).map(th => th.textContent.trim()).join(' | ');
    for (let el = table; el && !el.matches('.md-content'); el = el.parentElement) {
      const overflow = getComputedStyle(el).overflowX;
      if (overflow === 'visible' || el.scrollWidth <= el.clientWidth + 1) continue;
      out.push({table: index, head, box: el.tagName.toLowerCase() + (el.className ? '.' + el.className : ''),
                overflow, over: el.scrollWidth - el.clientWidth, reachable: reachable(el),
                role: el.getAttribute('role'), label: el.getAttribute('aria-label')});
    }
  });
  return out;
}"""


def test_no_table_is_cut_off_at_desktop_width(open_page, site) -> None:
    pg = open_page(*DESKTOP)
    paths = _pages(site)
    assert {"", "all-papers/", "tables/", "reproductions/", "leaderboards/"} <= set(paths)
    clipped = {}
    tables = 0
    for path in paths:
        _goto(pg, path)
        tables += pg.locator(".md-content table").count()
        found = pg.evaluate(_TABLE_CLIPS_JS)
        if found:
            clipped[f"/{path}"] = [(c["head"], c["box"], f"{c['over']} px") for c in found]
    assert tables > 50, f"only {tables} tables on {len(paths)} pages: is the site complete?"
    assert clipped == {}, f"{len(clipped)} of {len(paths)} pages cut off a table at 1400 px: {clipped}"


# Every box that scrolls (either way) and is on screen or in a drawer: whether the keyboard can reach it.
_SCROLLERS_JS = """() => {
  const focusable = 'a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select, textarea, summary, [tabindex]';
  const out = [];
  document.querySelectorAll('body *').forEach(el => {
    const s = getComputedStyle(el);
    const sideways = /(auto|scroll)/.test(s.overflowX) && el.scrollWidth > el.clientWidth + 1;
    const down = /(auto|scroll)/.test(s.overflowY) && el.scrollHeight > el.clientHeight + 1;
    if ((!sideways && !down) || !el.getClientRects().length || s.visibility === 'hidden') return;
    const self = el.matches(focusable) && el.tabIndex >= 0;
    const inside = Array.from(el.querySelectorAll(focusable)).some(f => f.tabIndex >= 0 && f.getClientRects().length > 0);
    out.push({box: el.tagName.toLowerCase() + (el.className ? '.' + el.className : ''), self, inside});
  });
  return out;
}"""

# The last element before `box` (in document order) that Tab stops on: pressing Tab there must land on `box`.
_FOCUS_BEFORE_JS = """box => {
  const focusable = 'a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select, textarea, summary, [tabindex]';
  const before = Array.from(document.querySelectorAll(focusable)).filter(el =>
    el.tabIndex >= 0 && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden'
    && (el.compareDocumentPosition(box) & Node.DOCUMENT_POSITION_FOLLOWING) && !box.contains(el));
  const last = before[before.length - 1];
  if (!last) return false;
  last.focus();
  return document.activeElement === last;
}"""


def test_scroll_regions_are_keyboard_reachable_at_phone_width(open_page, site) -> None:
    pg = open_page(*PHONE)
    paths = _pages(site)
    unreachable: dict[str, list] = {}
    unlabelled: dict[str, list] = {}
    not_scrolled: list[str] = []
    regions = 0
    for path in paths:
        _goto(pg, path)
        bad = [s["box"] for s in pg.evaluate(_SCROLLERS_JS) if not (s["self"] or s["inside"])]
        if bad:
            unreachable[f"/{path}"] = bad
        # A table that does not fit scrolls inside a focusable region with a name (or reflows instead).
        clips = pg.evaluate(_TABLE_CLIPS_JS)
        wrong = [
            (c["head"], c["box"], c["overflow"], c["role"], c["label"])
            for c in clips
            if c["overflow"] not in ("auto", "scroll") or c["role"] != "region" or not c["label"]
        ]
        if wrong:
            unlabelled[f"/{path}"] = wrong
        # From the last stop before the first such region, Tab lands on it and the arrow keys scroll it.
        box = pg.locator(".md-typeset__scrollwrap[role=region]").first
        if not clips or box.count() == 0:
            continue
        regions += len(clips)
        box.scroll_into_view_if_needed()
        assert box.evaluate(_FOCUS_BEFORE_JS), f"/{path}: nothing focusable before the first scroll region"
        pg.keyboard.press("Tab")
        if not box.evaluate("b => document.activeElement === b"):
            not_scrolled.append(f"/{path}: Tab did not land on {box.get_attribute('aria-label')!r}")
            continue
        for _ in range(3):
            pg.keyboard.press("ArrowRight")
        try:  # Chromium scrolls smoothly: give it a moment
            pg.wait_for_function("b => b.scrollLeft > 0", arg=box.element_handle(), timeout=2000)
        except Exception:  # noqa: BLE001 - Playwright's timeout
            not_scrolled.append(f"/{path}: the arrow keys did not scroll {box.get_attribute('aria-label')!r}")
    assert regions > 10, f"only {regions} tables scroll at 390 px: is the site complete?"
    assert unreachable == {}, f"scrolling boxes the keyboard cannot reach: {unreachable}"
    assert unlabelled == {}, f"tables cut off without a focusable, named scroll region: {unlabelled}"
    assert not_scrolled == [], not_scrolled
