"""Template data for the reproduction board: one row per paper, and the plots with their tables. Pure functions.

A board row holds the paper's claim and verdict, our numbers (one entry per arm of the comparison: every number is
one run's metric, except that runs differing only by their random draw are shown as their mean, labelled with the
number of draws), the paper's own headline number, and when and where the result was produced. The headline
number is read from the record's `results:` list, the entry marked `headline: true` whose `method` is the record's
own id; it is read from the raw record, defensively, so a record without such an entry (or without `results:` at
all) shows a dash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from kb.protocols import describe, ran_protocol
from kb.results import Claim, Comparison, Reproduction, RunResult

from .plotdata import Plot, number, table
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


def _metric_values(run: RunResult) -> dict[str, float | None]:
    """The quality numbers one run measured, by short name: continuation perplexity, perplexity, probe acc_norm."""
    m = run.metrics
    return {
        "cont. ppl": m.cache.ppl if m.cache else None,
        "ppl": m.ppl,
        "acc": m.probe.acc_norm if m.probe else None,
    }


_SEED_SUFFIX = re.compile(r"-\d+$")


def arm_key(run: RunResult) -> tuple[Any, ...]:
    """What makes two runs the same arm: the label without a draw suffix (`random-2` -> `random`), the method
    and every option except the random draw (`seed`). Runs that share an arm key differ only by their draw;
    any other difference (another option, another label) is another arm."""
    config = {k: v for k, v in run.config.items() if k != "seed"}
    return (
        _SEED_SUFFIX.sub("", run.label),
        run.method,
        run.kind,
        json.dumps(config, sort_keys=True, default=str),
    )


def arms(rep: Reproduction) -> list[tuple[str, list[RunResult]]]:
    """The comparison's arms in run order, dense first: one arm per run, except runs that differ only by
    their random draw, which form one arm (its label without the draw's `-<n>` suffix)."""
    groups: dict[tuple[Any, ...], list[RunResult]] = {}
    for run in rep.runs:
        groups.setdefault(arm_key(run), []).append(run)
    out = []
    for runs in groups.values():
        label = runs[0].label if len(runs) == 1 else _SEED_SUFFIX.sub("", runs[0].label)
        out.append((label, runs))
    out.sort(key=lambda arm: arm[1][0].method is not None)  # stable: dense first, the rest in run order
    return out


def our_numbers(rep: Reproduction) -> list[dict[str, Any]]:
    """One entry per arm of the comparison (dense first) with the quality numbers it measured. Every
    number is one run's metric; an arm of several random draws shows their mean, labelled with the number
    of draws and their range, never a mean over arms that the claim compares."""
    out = []
    for label, runs in arms(rep):
        parts = []
        for name in ("cont. ppl", "ppl", "acc"):
            values = [v for v in (_metric_values(r)[name] for r in runs) if v is not None]
            if not values:
                continue
            if len(values) == 1:
                parts.append(f"{name} {number(values[0])}")
            else:
                mean = sum(values) / len(values)
                parts.append(f"{name} {number(mean)} ({number(min(values))}-{number(max(values))})")
        draws = len(runs)
        out.append(
            {
                "label": label if draws == 1 else f"{label}, mean of {draws} draws",
                "text": ", ".join(parts) or "–",
                "runs": [r.label for r in runs],
                "draws": draws,
            }
        )
    return out


def verdict(claim: Claim | None) -> str:
    """The verdict as a word for the page: `holds`, `does not hold`, `inconclusive`, or `not run` when there is
    no result."""
    return "not run" if claim is None else claim.verdict


def _distance(c: Comparison) -> float:
    """How far a comparison's interval stays from the line its claim draws (1 for a ratio, 0 for a difference)."""
    line = 1.0 if c.scale == "ratio" else 0.0
    return min(abs(c.low - line), abs(c.high - line))


def decisive(claim: Claim | None) -> dict[str, Any] | None:
    """The comparison that decides the verdict, as the board prints it beside the verdict: for a claim that holds,
    the one whose interval comes nearest its line; otherwise the nearest of those in the claim's own state (a
    failing one for `does not hold`, an open one for `inconclusive`). None when no comparison carries an interval."""
    if claim is None:
        return None
    found = [c for p in claim.parts for c in p.comparisons]
    if claim.verdict != "holds":
        found = [c for c in found if c.verdict == claim.verdict] or found
    if not found:
        return None
    c = min(found, key=_distance)
    text = f"{c.scale} {c.estimate:.3g}" + (f" [{c.low:.3g}, {c.high:.3g}]" if c.units else " (exact)")
    return {"text": text, "units": c.units, "level": f"{claim.level:.0%}"}


def board_row(rep: Reproduction | None, raw: Any, paper: str) -> dict[str, Any]:
    machine = rep.machine if rep else None
    return {
        "claim": rep.claim.statement if rep else None,
        "holds": rep.claim.holds if rep else None,
        "verdict": verdict(rep.claim if rep else None),
        "interval": decisive(rep.claim if rep else None),
        "draws": rep.claim.draws if rep else None,
        "reason": rep.claim.reason if rep else None,
        "numbers": [n for n in our_numbers(rep) if n["text"] != "–"]
        if rep
        else [],  # arms with quality numbers
        "headline": headline(raw, paper),
        "date": rep.produced.isoformat() if rep and rep.produced else "–",
        "machine": f"{machine.cpu or machine.system}, {machine.threads} threads on {machine.device}"
        if machine
        else "–",
        "model": rep.model if rep else None,
        "protocol": describe(ran_protocol(rep.dataset)) if rep else None,
    }


def plot_context(plot: Plot) -> dict[str, Any]:
    """What the `plot` macro prints: the SVG's path (relative to the site root), caption and table."""
    fig = plot.figure
    data = table(fig)
    align = Markup("|:--|" + "--:|" * (len(data["header"]) - 1))  # the x column left, the numbers right
    return {"key": fig.key, "title": fig.title, "src": f"plots/{fig.key}.svg", "caption": plot.caption,
            "table": data, "align": align}  # fmt: skip
