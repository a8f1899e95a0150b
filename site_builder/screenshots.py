"""Take the README's screenshots of a built site with Debian's headless Chromium (via Playwright).

    python -m site_builder.screenshots site docs/screenshots

Writes home-{light,dark}.png and filter-{light,dark}.png. The filtered view is the all-papers page
with `type = structured` and `retrain = without` ticked, opened from its shareable address.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .serve import serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = (
    ("home", "", None),
    ("filter", "all-papers/?type=structured&retrain=without", "#kb-filter[data-ready]"),
)


def take(site_dir: Path, out_dir: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with serve(site_dir) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for scheme in ("light", "dark"):
                page = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
                for name, path, ready in SHOTS:
                    page.goto(base + path)
                    if ready:
                        page.wait_for_selector(ready)
                    target = out_dir / f"{name}-{scheme}.png"
                    page.screenshot(path=str(target))
                    written.append(target)
                page.close()
        finally:
            browser.close()
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m site_builder.screenshots SITE_DIR OUT_DIR")
    for path in take(Path(sys.argv[1]), Path(sys.argv[2])):
        print(path)
