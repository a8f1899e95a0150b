"""Badge colours and the SVG badges the README uses (GitHub strips the site's CSS).

Colours come from `concepts/<axis>.yaml`; the text colour on a badge is black or white, whichever
contrasts more with the axis colour, so badges read the same in light and dark themes.
"""

from __future__ import annotations

from markupsafe import escape

AXIS_LABEL_BG = "#555555"

# Approximate advance widths (px) of 11px Verdana/DejaVu Sans, enough to size a badge.
_NARROW = set("fijlrtI!.,:;'|()[] ")
_WIDE = set("mwMW@%")


def text_width(text: str) -> int:
    width = 0.0
    for ch in text:
        if ch in _NARROW:
            width += 4.0
        elif ch in _WIDE:
            width += 10.0
        elif ch.isupper() or ch.isdigit():
            width += 7.5
        else:
            width += 6.6
    return round(width)


def _luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour(background: str) -> str:
    """#ffffff or #111111, whichever reads better on `background`."""
    return "#ffffff" if contrast(background, "#ffffff") >= contrast(background, "#111111") else "#111111"


def svg_badge(left: str, right: str, colour: str) -> str:
    """A two-part flat badge: grey `left` label, `right` value on `colour`; deterministic bytes."""
    pad = 6
    lw = text_width(left) + 2 * pad
    rw = text_width(right) + 2 * pad
    total = lw + rw
    fg = text_colour(colour)
    label = f"{left}: {right}"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{escape(label)}">\n'
        f"<title>{escape(label)}</title>\n"
        f'<rect width="{lw}" height="20" rx="3" fill="{AXIS_LABEL_BG}"/>\n'
        f'<rect x="{lw}" width="{rw}" height="20" rx="3" fill="{colour}"/>\n'
        f'<rect x="{lw - 3}" width="6" height="20" fill="{colour}"/>\n'
        f'<g font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" text-anchor="middle">\n'
        f'<text x="{lw / 2:g}" y="14" fill="#ffffff">{escape(left)}</text>\n'
        f'<text x="{lw + rw / 2:g}" y="14" fill="{fg}">{escape(right)}</text>\n'
        f"</g>\n</svg>\n"
    )


def svg_label(text: str, colour: str) -> str:
    """A one-part badge: `text` on `colour` (the axis headings of the README legend)."""
    width = text_width(text) + 12
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
        f'aria-label="{escape(text)}">\n'
        f"<title>{escape(text)}</title>\n"
        f'<rect width="{width}" height="20" rx="3" fill="{colour}"/>\n'
        f'<text x="{width / 2:g}" y="14" fill="{text_colour(colour)}" font-family="Verdana,DejaVu Sans,sans-serif" '
        f'font-size="11" text-anchor="middle">{escape(text)}</text>\n'
        f"</svg>\n"
    )


def badge_files(axes: list[dict], form: dict | None = None) -> dict[str, str]:
    """`docs/badges/<axis>.svg` and `docs/badges/<axis>-<value>.svg` contents, keyed by file name, plus
    `form-<value>.svg` for the deployable forms (each value in its own colour)."""
    files: dict[str, str] = {}
    for v in form["values"] if form else []:
        files[f"form-{v['id']}.svg"] = svg_badge("Form", v["label"], v["colour"])
    for a in axes:
        files[f"{a['id']}.svg"] = svg_label(a["label"], a["colour"])
        for v in a["values"]:
            files[f"{a['id']}-{v['id']}.svg"] = svg_badge(a["label"], v["label"], a["colour"])
    return dict(sorted(files.items()))
