"""Draw a `kb.results.Figure` as a static SVG with matplotlib (Agg backend, no pyplot state).

The output is byte-for-byte reproducible, so two builds of the same inputs give the same site: a fixed
`svg.hashsalt` (the ids of clip paths and glyphs are derived from it), no date or creator in the metadata, and
text kept as text (`svg.fonttype: none`, smaller and searchable). The numbers come from `site_builder.plotdata`.

`render_svg` draws a board or paper figure for a phone first: a narrow figure (`WIDTH` inches, so the text is
about 11 px or more when the page shows it 390 px wide), the title wrapped, the legend below the axes in as many
columns as its labels allow, log ticks as plain numbers (40, 100, 1k), and every series its own pair of colour
and marker. The background is transparent; `dark=True` draws the variant for mkdocs-material's dark (slate)
scheme, with light text and axes, which the page shows instead of the light one (`#only-dark`).
"""

from __future__ import annotations

import io
import math
import textwrap
from typing import Any

from kb.results import Figure

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_RC: dict[str, Any] = {
    "svg.hashsalt": "pruning-kb",
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.spines.right": False,
}

# A phone shows a plot about 360 px wide (390 less the page's margins): at WIDTH 4.5 inches (324 user units) a
# FONT of 10.5 pt is 11.7 px there, 12.6 px at 390 px and larger on a wider screen.
WIDTH = 4.5  # inches
FONT = 10.5  # points, for ticks, axis labels and the legend; the title is a point larger
# The first series (usually the dense baseline) is drawn in the text colour; the rest in Okabe and Ito's colours,
# which stay apart for the common kinds of colour blindness, without black and yellow (each vanishes on one of
# the two backgrounds).
_SERIES_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
THEMES = {
    False: {"text": "#222222", "grid": "#d9d9d9"},  # mkdocs-material's default scheme
    True: {"text": "#e2e4e9", "grid": "#4a4f5c"},  # its dark "slate" scheme
}


def series_style(i: int, dark: bool = False) -> tuple[str, str]:
    """The colour and marker of a figure's i-th series: the first in the text colour, then colours cycling
    fastest, each new round of colours starting one marker further on, so no two of the first 1 + 6 x 8 series
    share both."""
    if i == 0:
        return THEMES[dark]["text"], _MARKERS[0]
    j, n = i - 1, len(_SERIES_COLOURS)
    return _SERIES_COLOURS[j % n], _MARKERS[(j % n + j // n) % len(_MARKERS)]


def plain_number(value: float, _pos: Any = None) -> str:
    """A tick label without exponents: 0.5, 40, 100, 1k, 20k, 3M, 1G."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _log_ticks(axis: Any, values: list[float]) -> None:
    """Major ticks at 1, 2, 5 (or more) per decade when the data spans few decades, labelled as plain numbers;
    minor ticks unlabelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    positive = [v for v in values if v > 0]
    decades = math.log10(max(positive) / min(positive)) if positive else 10.0
    if decades <= 1:
        subs: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    else:
        subs = (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=8))
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_formatter(NullFormatter())


def _legend_layout(labels: list[str]) -> tuple[int, int, list[str]]:
    """Columns, rows and wrapped labels for a legend that fits the figure's width."""
    room = 46  # characters of legend text a row holds at `FONT` across `WIDTH`, less the markers
    longest = max(len(label) for label in labels)
    cols = max(1, min(3, (room + 6) // (longest + 6)))
    wrapped = [textwrap.fill(label, width=room // cols, break_long_words=False) for label in labels]
    per_col = math.ceil(len(labels) / cols)  # matplotlib fills columns first: row r holds r, r + per_col...
    rows = sum(max(w.count("\n") + 1 for w in wrapped[r::per_col]) for r in range(per_col))
    return cols, rows, wrapped


def theme_rc(dark: bool = False) -> dict[str, Any]:
    """matplotlib settings for the light or (`dark`) the slate scheme."""
    theme = THEMES[dark]
    return {**_RC, "font.size": FONT, "text.color": theme["text"], "axes.labelcolor": theme["text"],
            "axes.edgecolor": theme["text"], "xtick.color": theme["text"], "ytick.color": theme["text"],
            "grid.color": theme["grid"], "axes.titlesize": FONT + 1, "legend.fontsize": FONT}  # fmt: skip


def draw(fig: Figure, dark: bool = False) -> Any:
    """The figure drawn as a matplotlib figure (`render_svg` saves it): one line with markers per series, the
    legend below the axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure as Canvas

    title = textwrap.fill(fig.title, width=46, break_long_words=False)
    x_label = textwrap.fill(fig.x_label, width=52, break_long_words=False)
    cols, rows, labels = _legend_layout([s.label for s in fig.series])
    lines = title.count("\n") + x_label.count("\n") + 2 + rows  # of text above and below the axes
    height = 2.7 + lines * (FONT + 3) / 72  # inches: the axes, and the text at its line height
    with matplotlib.rc_context(theme_rc(dark)):
        canvas = Canvas(figsize=(WIDTH, height), facecolor="none", layout="constrained")
        FigureCanvasSVG(canvas)
        ax = canvas.add_subplot(facecolor="none")
        for i, series in enumerate(fig.series):
            colour, marker = series_style(i, dark)
            every = max(1, len(series.x) // 12)  # a marker on every point of a long curve is a smear
            ax.plot(series.x, series.y, label=labels[i], color=colour, marker=marker, markersize=5, linewidth=1.4,
                    markevery=every)  # fmt: skip
        if fig.x_log:
            ax.set_xscale("log")
            _log_ticks(ax.xaxis, [x for s in fig.series for x in s.x])
        if fig.y_log:
            ax.set_yscale("log")
            _log_ticks(ax.yaxis, [y for s in fig.series for y in s.y])
        ax.set_title(title)
        ax.set_xlabel(x_label)
        ax.set_ylabel(textwrap.fill(fig.y_label, width=34, break_long_words=False))
        ax.grid(True, linewidth=0.5)
        legend = {"ncols": cols, "frameon": False, "handlelength": 1.6, "columnspacing": 1.0}
        canvas.legend(loc="outside lower center", **legend)
        canvas.draw_without_rendering()  # lay out (and label the ticks) inside the theme's settings
    return canvas


def render_svg(fig: Figure, dark: bool = False) -> str:
    """The figure as SVG text on a transparent background, for the light scheme or (`dark`) the slate one."""
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context(theme_rc(dark)):  # the SVG writer reads its settings (ids, text as text) too
        draw(fig, dark).savefig(out, format="svg", transparent=True, metadata={"Date": None, "Creator": None})
    return out.getvalue()


def render_year_svg(fig: Figure, dark: bool = False) -> str:
    """A small year-by-year chart (the leaderboards' best over time) in the same themes as `render_svg`:
    the first series as a step line that holds its value until the next year, the others as markers
    only, one tick per year, the legend below the axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure as Canvas

    with matplotlib.rc_context(theme_rc(dark)):
        canvas = Canvas(figsize=(WIDTH, 3.2), facecolor="none", layout="constrained")
        FigureCanvasSVG(canvas)
        ax = canvas.add_subplot(facecolor="none")
        for i, series in enumerate(fig.series):
            colour, marker = series_style(i + 1, dark)  # the text colour is kept for a dense baseline
            style = {"drawstyle": "steps-post", "linewidth": 1.4} if i == 0 else {"linestyle": "none"}
            ax.plot(series.x, series.y, label=series.label, color=colour, marker=marker, markersize=5,
                    **style)  # fmt: skip
        years = sorted({int(x) for s in fig.series for x in s.x})
        ax.set_xticks(years, [str(y) for y in years])
        ax.set_xlim(years[0] - 0.5, years[-1] + 0.5)
        ax.set_title(textwrap.fill(fig.title, width=46, break_long_words=False))
        ax.set_xlabel(fig.x_label)
        ax.set_ylabel(fig.y_label)
        ax.grid(True, axis="y", linewidth=0.5)
        canvas.legend(loc="outside lower center", ncols=len(fig.series), frameon=False, handlelength=1.6)
        out = io.StringIO()
        canvas.savefig(out, format="svg", transparent=True, metadata={"Date": None, "Creator": None})
    return out.getvalue()
