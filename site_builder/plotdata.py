"""The numbers behind the board's plots, taken from committed reproductions and sweeps (no drawing here).

Each function returns `kb.results.Figure`s (series of x, y points), which `site_builder.plots` draws as SVG and
the templates print as a table beside the drawing:
- `sparsity_figures`: perplexity vs sparsity for every weight-sparsity (and allocation) method;
- `depth_figures`: perplexity and probe accuracy vs layers removed for the depth methods;
- `speed_figures`: prefill and decode speed-up vs the fraction of parameters removed, for structured (depth and
  width) runs that measured speed;
- `cache_figures`: continuation perplexity vs KV budget for the cache policies.
Sources are every committed reproduction's runs plus the sweeps (`kb sweep`). Perplexities are comparable only
on the same model and evaluation data, so those plots get one figure per (model, data) setting; speed-ups are
ratios measured in one process, so that plot groups by model only. A run's series is its method plus the options
that tell its arms apart (`shortgpt (selection=random)`); several runs at one point of a series (random draws,
or the same run in several papers) are averaged. Unstructured runs only: N:M runs are left out of the sparsity
plot, whose x axis is the fraction of weights pruned.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kb.results import Figure, Reproduction, RunResult, Series, Sweep

# Config options that tell a method's arms apart in a series name (those absent or at a "none" value are left out).
DISTINGUISHING = ("base", "selection", "importance", "sink_tokens", "recovery_steps")
DENSE = "dense"
FULL_CACHE = "full cache"
SPEED_NOTE = "each run against the dense baseline of its own comparison"


def series_name(run: RunResult) -> str:
    if run.method is None:
        return DENSE
    opts = [f"{k}={run.config[k]}" for k in DISTINGUISHING if run.config.get(k) not in (None, 0, False, "")]
    return f"{run.method} ({', '.join(opts)})" if opts else run.method


@dataclass(frozen=True)
class Source:
    """One committed result as the plots see it: where it comes from and its runs."""

    name: str  # "wanda" (a reproduction) or "sweep sparsity-wanda" (a sweep)
    model: str
    setting: str  # the model and data the perplexities were measured on
    runs: list[RunResult]


def sources(reps: dict[str, Reproduction], sweeps: dict[str, Sweep]) -> list[Source]:
    out = [Source(p, r.model, f"{r.model}, {r.dataset}", list(r.runs)) for p, r in sorted(reps.items())]
    out += [
        Source(f"sweep {n}", s.model, f"{s.model}, {s.dataset}", list(s.runs))
        for n, s in sorted(sweeps.items())
    ]
    return out


@dataclass
class _Points:
    values: dict[str, dict[float, list[float]]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # the sources that gave points

    def add(self, series: str, x: float, y: float | None, source: str) -> None:
        if y is None or not math.isfinite(y) or not math.isfinite(x):
            return
        self.values.setdefault(series, {}).setdefault(x, []).append(y)
        if source not in self.names:
            self.names.append(source)

    def series(self) -> list[Series]:
        order = sorted(self.values, key=lambda s: (s != DENSE, s))
        return [Series(label=s, x=sorted(self.values[s]), y=[_mean(self.values[s][x]) for x in sorted(self.values[s])])
                for s in order]  # fmt: skip


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


@dataclass(frozen=True)
class Plot:
    """A figure for the board, and where its numbers come from."""

    figure: Figure
    caption: str


def _group(srcs: Iterable[Source], by: Callable[[Source], str]) -> list[tuple[str, list[Source]]]:
    groups: dict[str, list[Source]] = {}
    for s in srcs:
        groups.setdefault(by(s), []).append(s)
    return sorted(groups.items())


def _figures(
    kind: str,
    srcs: list[Source],
    collect: Callable[[Source, _Points], None],
    make: Callable[[str, list[Series]], Figure],
    *,
    by_setting: bool = True,
) -> list[Plot]:
    plots = []
    for model, members in _group(srcs, lambda s: s.model):
        groups = _group(members, lambda s: s.setting) if by_setting else [(model, members)]
        found = []
        for setting, group in groups:
            points = _Points()
            for src in group:
                collect(src, points)
            if any(name not in (DENSE, FULL_CACHE) for name in points.values):
                found.append((setting, points))
        for i, (setting, points) in enumerate(found):
            key = f"{kind}-{slug(model)}" + (f"-{i + 1}" if len(found) > 1 else "")
            where = f"Measured on {setting}. " if by_setting else f"Measured on {model}, {SPEED_NOTE}. "
            plots.append(Plot(make(key, points.series()), where + "From: " + ", ".join(points.names) + "."))
    return plots


def _dense(src: Source) -> RunResult | None:
    return next((r for r in src.runs if r.method is None), None)


def sparsity_figures(srcs: list[Source]) -> list[Plot]:
    def collect(src: Source, pts: _Points) -> None:
        for run in src.runs:
            if run.kind in ("weight-sparsity", "allocation") and run.config.get("pattern") is None:
                sparsity = run.config.get("sparsity")
                if isinstance(sparsity, (int, float)):
                    pts.add(series_name(run), float(sparsity), run.metrics.ppl, src.name)
        dense = _dense(src)
        if dense is not None and any(r.kind in ("weight-sparsity", "allocation") for r in src.runs):
            pts.add(DENSE, 0.0, dense.metrics.ppl, src.name)

    def make(key: str, series: list[Series]) -> Figure:
        return Figure(key=key, title="Perplexity vs sparsity", x_label="fraction of decoder weights pruned",
                      y_label="perplexity", series=series, y_log=True)  # fmt: skip

    return _figures("sparsity", srcs, collect, make)


def _removed_layers(run: RunResult) -> float | None:
    if run.outcome is None:
        return None
    return float(len(run.outcome.removed_layers))


def depth_figures(srcs: list[Source]) -> list[Plot]:
    def collect_with(metric: Callable[[RunResult], float | None]) -> Callable[[Source, _Points], None]:
        def collect(src: Source, pts: _Points) -> None:
            depth = [r for r in src.runs if r.kind == "depth"]
            for run in depth:
                x = _removed_layers(run)
                if x is not None:
                    pts.add(series_name(run), x, metric(run), src.name)
            dense = _dense(src)
            if dense is not None and depth:
                pts.add(DENSE, 0.0, metric(dense), src.name)

        return collect

    def ppl(run: RunResult) -> float | None:
        return run.metrics.ppl

    def acc(run: RunResult) -> float | None:
        return run.metrics.probe.acc_norm if run.metrics.probe else None

    def make_ppl(key: str, series: list[Series]) -> Figure:
        return Figure(key=key, title="Perplexity vs layers removed", x_label="decoder layers removed",
                      y_label="perplexity", series=series, y_log=True)  # fmt: skip

    def make_acc(key: str, series: list[Series]) -> Figure:
        return Figure(key=key, title="Probe accuracy vs layers removed", x_label="decoder layers removed",
                      y_label="multiple-choice probe acc_norm", series=series)  # fmt: skip

    return _figures("depth-ppl", srcs, collect_with(ppl), make_ppl) + _figures(
        "depth-probe", srcs, collect_with(acc), make_acc
    )


def speed_figures(srcs: list[Source]) -> list[Plot]:
    def collect(src: Source, pts: _Points) -> None:
        dense = _dense(src)
        if dense is None or not dense.metrics.size.params_total:
            return
        total = dense.metrics.size.params_total
        if any(r.kind in ("depth", "width") and r.metrics.speed is not None for r in src.runs):
            pts.add(DENSE, 0.0, 1.0, src.name)  # the baseline every ratio divides by
        for run in src.runs:
            speed = run.metrics.speed
            if run.kind not in ("depth", "width") or speed is None:
                continue
            removed = 1.0 - run.metrics.size.params_total / total
            name = series_name(run)
            pts.add(f"{name}: prefill", removed, speed.prefill_speedup, src.name)
            pts.add(f"{name}: decode", removed, speed.decode_speedup, src.name)

    def make(key: str, series: list[Series]) -> Figure:
        return Figure(key=key, title="CPU speed-up vs parameters removed", x_label="fraction of parameters removed",
                      y_label="speed-up over dense (x)", series=series)  # fmt: skip

    return _figures("speed", srcs, collect, make, by_setting=False)


def _budget(run: RunResult) -> float | None:
    value = run.config.get("kv_budget")
    if isinstance(value, (int, float)):
        return float(value)
    cache = run.metrics.cache
    if cache is not None and cache.budget_tokens is not None:
        return cache.budget_tokens / cache.prompt_tokens
    return None


def cache_figures(srcs: list[Source]) -> list[Plot]:
    def collect(src: Source, pts: _Points) -> None:
        for run in src.runs:
            cache = run.metrics.cache
            if cache is None:
                continue
            if run.method is None:
                pts.add(FULL_CACHE, 1.0, cache.ppl, src.name)
            elif run.kind == "kv-cache" and (x := _budget(run)) is not None:
                pts.add(series_name(run), x, cache.ppl, src.name)

    def make(key: str, series: list[Series]) -> Figure:
        return Figure(key=key, title="Continuation perplexity vs KV budget",
                      x_label="KV cache kept (fraction of the prompt)", y_label="continuation perplexity",
                      series=series, y_log=True)  # fmt: skip

    return _figures("kv", srcs, collect, make)


def board_plots(reps: dict[str, Reproduction], sweeps: dict[str, Sweep]) -> list[Plot]:
    """The board's four kinds of plot, for the results that exist."""
    srcs = sources(reps, sweeps)
    return sparsity_figures(srcs) + depth_figures(srcs) + speed_figures(srcs) + cache_figures(srcs)


def paper_plots(paper: str, rep: Reproduction) -> list[Plot]:
    """A reproduction's own figures (`PaperSpec.figures`), keyed `<paper>-<figure key>`."""
    return [Plot(fig.model_copy(update={"key": f"{paper}-{fig.key}"}), f"From the {paper} reproduction on "
                 f"{rep.model}, {rep.dataset}.") for fig in rep.figures]  # fmt: skip


def number(value: float) -> str:
    """Four significant digits, no exponent for the usual ranges."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    digits = max(0, 3 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"


def table(fig: Figure) -> dict[str, Any]:
    """The figure as a table: one row per x value, one column per series ("–" where a series has no point)."""
    xs = sorted({x for s in fig.series for x in s.x})
    lookup = [dict(zip(s.x, s.y, strict=True)) for s in fig.series]
    rows = [[f"{x:.3g}", *(number(col[x]) if x in col else "–" for col in lookup)] for x in xs]
    return {"header": [fig.x_label, *(s.label for s in fig.series)], "rows": rows}
