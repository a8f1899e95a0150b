"""Draw a `kb.results.Figure` as a static SVG with matplotlib (Agg backend, no pyplot state).

The output is byte-for-byte reproducible, so two builds of the same inputs give the same site: a fixed
`svg.hashsalt` (the ids of clip paths and glyphs are derived from it), no date or creator in the metadata,
text kept as text (`svg.fonttype: none`, smaller and searchable) and a white background, which reads the
same in the light and dark themes. The numbers themselves come from `site_builder.plotdata`.
"""

from __future__ import annotations

import io
from typing import Any

from kb.results import Figure

# Distinct colours that stay apart for the common kinds of colour blindness (Okabe and Ito's palette).
_COLOURS = ("#000000", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_RC: dict[str, Any] = {
    "svg.hashsalt": "pruning-kb",
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def render_svg(fig: Figure) -> str:
    """The figure as SVG text: one line with markers per series, the legend outside the axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure as Canvas

    with matplotlib.rc_context(_RC):
        canvas = Canvas(figsize=(6.4, 3.6), facecolor="white")
        FigureCanvasSVG(canvas)
        ax = canvas.add_subplot()
        for i, series in enumerate(fig.series):
            ax.plot(series.x, series.y, label=series.label, color=_COLOURS[i % len(_COLOURS)],
                    marker=_MARKERS[i % len(_MARKERS)], markersize=4, linewidth=1.2)  # fmt: skip
        if fig.x_log:
            ax.set_xscale("log")
        if fig.y_log:
            ax.set_yscale("log")
        ax.set_title(fig.title)
        ax.set_xlabel(fig.x_label)
        ax.set_ylabel(fig.y_label)
        ax.grid(True, linewidth=0.4, alpha=0.5)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8)
        canvas.tight_layout()
        out = io.StringIO()
        canvas.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    return out.getvalue()
