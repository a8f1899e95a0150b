"""Template data for the reproduction board: one row per paper, and the plots with their tables. Pure functions.

A board row holds the paper's claim and verdict, our numbers merged across the runs of its comparison (one entry
per series: the dense baseline once, random draws as their mean), the paper's own headline number, and when and
where the result was produced. The headline number is read from the record's `results:` list, the entry marked
`headline: true` whose `method` is the record's own id; it is read from the raw record, defensively, so a record
without such an entry (or without `results:` at all) shows a dash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from kb.results import Reproduction, RunResult

from .plotdata import DENSE, Plot, number, series_name, table
from .text import is_http_url

_SETTING_TEXT = {
    "sparsity": lambda v: f"{_percent(v)} sparsity",
    "pattern": lambda v: f"{v} sparsity",
    "params_removed": lambda v: f"{_percent(v)} of parameters removed",
    "layers_removed": lambda v: (
        f"{v} layers removed" if isinstance(v, int) else f"{_percent(v)} of layers removed"
    ),
    "kv_budget": lambda v: f"{_percent(v)} KV cache",
}


def _percent(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1:
        return f"{value * 100:g}%"
    return str(value)


def headline(raw: Any, paper: str) -> dict[str, str] | None:
    """The paper's own headline result from the raw record, as text pieces; None when there is none."""
    results = raw.get("results") if isinstance(raw, Mapping) else None
    if not isinstance(results, list):
        return None
    for entry in results:
        if (
            not isinstance(entry, Mapping)
            or entry.get("headline") is not True
            or entry.get("method") != paper
        ):
            continue
        value, metric = entry.get("value"), entry.get("metric")
        if value is None or metric is None:
            continue
        setting = entry.get("setting")
        parts = []
        if isinstance(setting, Mapping):
            for key, v in setting.items():
                if v is not None:
                    parts.append(_SETTING_TEXT[key](v) if key in _SETTING_TEXT else f"{key} {v}")
        where = ", ".join(str(x) for x in (entry.get("model"), entry.get("dataset"), *parts) if x)
        source = entry.get("source")
        link = ""
        if isinstance(source, Mapping):  # the schema's {url, locator}: a link named by its locator
            link = str(source.get("url") or "")
            link = link if is_http_url(link) else ""
            source = source.get("locator") or link
        return {
            "value": f"{value} {metric}".strip(),
            "where": where,
            "source": str(source or ""),
            "source_url": link,
        }
    return None


def _run_numbers(runs: list[RunResult]) -> dict[str, float | None]:
    first = runs[0].metrics
    out: dict[str, float | None] = {}
    if first.cache is not None:
        out["cont. ppl"] = _mean([r.metrics.cache.ppl for r in runs if r.metrics.cache])
    if first.ppl is not None:
        out["ppl"] = _mean([r.metrics.ppl for r in runs if r.metrics.ppl is not None])
    if first.probe is not None:
        out["acc"] = _mean([r.metrics.probe.acc_norm for r in runs if r.metrics.probe])
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def our_numbers(rep: Reproduction) -> list[dict[str, str]]:
    """One entry per series of the comparison (dense first), with the metrics the runs measured."""
    groups: dict[str, list[RunResult]] = {}
    for run in rep.runs:
        groups.setdefault(series_name(run), []).append(run)
    out = []
    for name in sorted(groups, key=lambda s: (s != DENSE, list(groups).index(s))):
        runs = groups[name]
        values = ", ".join(f"{k} {number(v)}" for k, v in _run_numbers(runs).items() if v is not None)
        label = name if len(runs) == 1 else f"{name}, mean of {len(runs)}"
        out.append({"label": label, "text": values or "–"})
    return out


def board_row(rep: Reproduction | None, raw: Any, paper: str) -> dict[str, Any]:
    machine = rep.machine if rep else None
    return {
        "claim": rep.claim.statement if rep else None,
        "holds": rep.claim.holds if rep else None,
        "numbers": our_numbers(rep) if rep else [],
        "headline": headline(raw, paper),
        "date": rep.produced.isoformat() if rep and rep.produced else "–",
        "machine": f"{machine.cpu or machine.system}, {machine.threads} threads on {machine.device}"
        if machine
        else "–",
        "model": rep.model if rep else None,
    }


def plot_context(plot: Plot) -> dict[str, Any]:
    """What the `plot` macro prints: the SVG's path (relative to the site root), caption and table."""
    fig = plot.figure
    data = table(fig)
    align = Markup("|:--|" + "--:|" * (len(data["header"]) - 1))  # the x column left, the numbers right
    return {"key": fig.key, "title": fig.title, "src": f"plots/{fig.key}.svg", "caption": plot.caption,
            "table": data, "align": align}  # fmt: skip
