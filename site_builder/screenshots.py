"""Take the README's screenshots of a built site with Debian's headless Chromium (via Playwright).

    python -m site_builder.screenshots site docs/screenshots

Writes, at desktop width (1400 px), home-{light,dark}.png and filter-{light,dark}.png, and at phone
width (390 px), filter-phone-light.png and paper-phone-dark.png. The filtered view is the all-papers
page with `type = structured` and `retrain = without` ticked, opened from its shareable address.
Then one shot per question a researcher brings: the best LLaMA-2-7B number at 50% unstructured sparsity
(q1), the papers that remove layers and have official code (q2), whether our run confirmed Sheared LLaMA
and why not (q3), what Wanda does and how to run it (q4), and how to cite it (q5).
Each shot is one window high, so the files stay small.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .serve import serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FILTERED = "all-papers/?type=structured&retrain=without"
READY = "#kb-filter[data-ready]"
DESKTOP = (1400, 900)
PHONE = (390, 844)
# (file name, address, selector to wait for, viewport, colour scheme)
SHOTS = (
    ("home-light", "", None, DESKTOP, "light"),
    ("home-dark", "", None, DESKTOP, "dark"),
    ("filter-light", FILTERED, READY, DESKTOP, "light"),
    ("filter-dark", FILTERED, READY, DESKTOP, "dark"),
    ("filter-phone-light", FILTERED, READY, PHONE, "light"),
    ("paper-phone-dark", "papers/wanda/", None, PHONE, "dark"),
    # The five questions a researcher brings (issue 28), each answered on one screen.
    (
        "q1-best-llama2-7b-50pct",
        "leaderboards/llama-2-7b-wikitext-2-perplexity-50pct-unstructured/",
        None,
        DESKTOP,
        "light",
    ),
    ("q2-layer-removal-with-code", "all-papers/?form=fewer-layers&code=official", READY, DESKTOP, "light"),
    ("q3-sheared-llama-verdict", "papers/sheared-llama/", None, DESKTOP, "light"),
    ("q4-wanda-run-it", "papers/wanda/#reference-implementation", None, DESKTOP, "dark"),
    ("q5-cite-wanda", "papers/wanda/#bibtex", None, PHONE, "light"),
)


def take(site_dir: Path, out_dir: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with serve(site_dir) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for name, path, ready, (width, height), scheme in SHOTS:
                page = browser.new_page(viewport={"width": width, "height": height}, color_scheme=scheme)
                try:
                    page.goto(base + path)
                    if ready:
                        page.wait_for_selector(ready)
                    target = out_dir / f"{name}.png"
                    page.screenshot(path=str(target))
                    written.append(target)
                finally:
                    page.close()
        finally:
            browser.close()
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m site_builder.screenshots SITE_DIR OUT_DIR")
    for path in take(Path(sys.argv[1]), Path(sys.argv[2])):
        print(path)
