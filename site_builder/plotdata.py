"""The numbers behind the board's plots, taken from committed reproductions and sweeps (no drawing here).

Each function returns `Plot`s (a `kb.results.Figure` and its caption), which `site_builder.plots` draws as SVG
and the templates print as a table beside the drawing:
- `sparsity_figures`: perplexity vs weight sparsity, one figure per kind of sparsity (unstructured, or structured
  such as LLM Surgeon's rows and columns); N:M runs are left out, their sparsity is fixed by the pattern;
- `depth_figures`: perplexity and probe accuracy vs the fraction of decoder parameters removed, so that removing
  whole layers and removing sublayers (attention or MLP) sit on one axis;
- `speed_figures`: prefill and decode speed-up vs the fraction of decoder parameters removed, one figure each
  for width pruning and for depth pruning;
- `cache_figures`: continuation perplexity vs KV budget for the cache policies.

Sources are every committed reproduction's runs plus the sweeps (`kb sweep`). Perplexities are comparable only
on the same model and evaluation data, so those plots get one figure per (model, evaluation data); speed-ups are
ratios measured in one process, so that plot groups by model only. Every title names the model and the setting.

A series is one method, one kind of pruning (`sparsity_kind`, `structure_kind`) and one arm, so no line joins
points of different kinds; a figure that holds several kinds names the kind in each label. The arm is told by
the usual options (`DISTINGUISHING`) plus any option whose value differs between runs of the method at the same
x. Runs at one point that differ only by their random draw, or that are the same run in several papers, are
averaged, and so are the runs of a scan (an option with more than `MAX_ARMS` values at one point, such as a
window's position); the caption says what each mean is over.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kb.results import DatasetInfo, Figure, Reproduction, RunResult, Series, Sweep

# Config options that always tell a method's arms apart in a series name (left out at a "none" value).
DISTINGUISHING = ("base", "selection", "importance", "sink_tokens", "recovery_steps")
MAX_ARMS = 4  # an option with more values than this at one point is a scan: its runs are averaged
DENSE = "dense"
FULL_CACHE = "full cache"
SPEED_NOTE = "each run against the dense baseline of its own comparison"
MODEL_NAMES = {"tiny-llama": "SmolLM2-135M-Instruct"}  # the harness's short model names (reference_impls)
WIDTH_KINDS = ("width", "width and depth")


def model_title(model: str) -> str:
    return f"{model} ({MODEL_NAMES[model]})" if model in MODEL_NAMES else model


def _off(value: Any) -> bool:
    return value is None or value is False or value == "" or (isinstance(value, (int, float)) and value == 0)


def series_name(run: RunResult) -> str:
    """The method and its usual distinguishing options, e.g. `shortgpt (selection=random)`."""
    if run.method is None:
        return DENSE
    opts = [f"{k}={run.config[k]}" for k in DISTINGUISHING if not _off(run.config.get(k))]
    return f"{run.method} ({', '.join(opts)})" if opts else run.method


def sparsity_kind(run: RunResult) -> str | None:
    """`unstructured`, or `structured (<structure>)` for a run that prunes whole rows or columns; None for N:M."""
    if run.config.get("pattern"):
        return None
    structure = run.config.get("structure")
    return "unstructured" if structure in (None, "element", "unstructured") else f"structured ({structure})"


def structure_kind(run: RunResult, dense_layers: int) -> str:
    """What a depth or width run removed, read from its outcome: `layers`, `attention sublayers`, `MLP
    sublayers`, `sublayers` (both kinds), `layers and sublayers`, `width`, or `width and depth`."""
    layers = run.outcome.removed_layers if run.outcome else []
    parts = sorted({s.rsplit(".", 1)[-1] for s in run.outcome.removed_sublayers} if run.outcome else set())
    if parts:
        if layers:
            return "layers and sublayers"
        if len(parts) > 1:
            return "sublayers"
        return {"attn": "attention", "mlp": "MLP"}.get(parts[0], parts[0]) + " sublayers"
    if run.kind == "width" and not layers:
        return "width" if run.metrics.size.layers >= dense_layers else "width and depth"
    return "layers"


def setting(data: DatasetInfo) -> str:
    """The evaluation data perplexities are comparable on."""
    ev = data.evaluation
    if ev.seqlen and ev.tokens % ev.seqlen == 0:
        return f"{data.corpus}, {ev.tokens // ev.seqlen} windows of {ev.seqlen} tokens"
    return f"{data.corpus}, {ev.tokens:,} tokens in windows of {ev.seqlen}"


@dataclass(frozen=True)
class Source:
    """One committed result as the plots see it: where it comes from and its runs."""

    name: str  # "wanda" (a reproduction) or "sweep sparsity-wanda" (a sweep)
    model: str
    setting: str  # the evaluation data the perplexities were measured on
    tag: str  # the same, short, for file names: "pydoc-4096-512"
    runs: list[RunResult]


def _source(name: str, model: str, data: DatasetInfo, runs: Iterable[RunResult]) -> Source:
    tag = f"{data.corpus}-{data.evaluation.tokens}-{data.evaluation.seqlen}"
    return Source(name, model, setting(data), slug(tag), list(runs))


def sources(reps: dict[str, Reproduction], sweeps: dict[str, Sweep]) -> list[Source]:
    out = [_source(p, r.model, r.dataset, r.runs) for p, r in sorted(reps.items())]
    return out + [_source(f"sweep {n}", s.model, s.dataset, s.runs) for n, s in sorted(sweeps.items())]


@dataclass(frozen=True)
class _Point:
    run: RunResult
    kind: str  # the kind of pruning; "" for the baseline
    x: float
    y: float
    source: str


def _point(run: RunResult, kind: str, x: float | None, y: float | None, source: str) -> list[_Point]:
    if x is None or y is None or not math.isfinite(x) or not math.isfinite(y):
        return []
    return [_Point(run, kind, float(x), float(y), source)]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _differing(configs: list[dict[str, Any]]) -> list[str]:
    """The options whose values are not the same in every config, in the order they first appear."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    return [k for k in keys if len({_text(c.get(k)) for c in configs}) > 1]


def _numeric(configs: list[dict[str, Any]], key: str) -> bool:
    values = [c.get(key) for c in configs if c.get(key) is not None]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


@dataclass
class _Arms:
    """How a figure's runs form series: the options each (method, kind) names, and the runs left out."""

    keys: dict[tuple[str | None, str], list[str]]
    scans: list[tuple[list[_Point], str]]  # the runs of a scan at one point, and the option scanned


def _arms(points: list[_Point]) -> _Arms:
    """A method's arms are told apart by the usual options, every non-numeric option that differs between its
    runs (`attention=none`, `curvature=kfac`), and every numeric option that differs between runs at one point
    (a learning rate; a numeric option that only moves the point, such as a ratio, is the x axis). An option
    with more than `MAX_ARMS` values at one point is a scan (a window's start): those runs are left out."""
    by_method: dict[tuple[str | None, str], list[_Point]] = {}
    for p in points:
        if p.run.method is not None:
            by_method.setdefault((p.run.method, p.kind), []).append(p)
    arms = _Arms({}, [])
    for mk, group in by_method.items():
        configs = [p.run.config for p in group]
        keys = arms.keys[mk] = list(DISTINGUISHING)
        keys += [k for k in _differing(configs) if k != "seed" and k not in keys and not _numeric(configs, k)]
        at_point: dict[tuple[str, ...], list[_Point]] = {}
        for p in group:
            arm = tuple(_text(p.run.config.get(k)) for k in keys)
            at_point.setdefault((*arm, str(round(p.x, 3))), []).append(p)
        for same in at_point.values():
            for key in _differing([p.run.config for p in same]):
                if key in keys or key == "seed":
                    continue
                if len({_text(p.run.config.get(key)) for p in same}) > MAX_ARMS:
                    arms.scans.append((same, key))
                    break
                keys.append(key)
    return arms


def _label(p: _Point, keys: list[str], with_kind: bool) -> str:
    if p.run.method is None:
        return DENSE if p.run.metrics.cache is None else FULL_CACHE
    name = f"{p.run.method}, {p.kind}" if with_kind else p.run.method
    opts = [f"{k}={p.run.config[k]}" for k in keys if not _off(p.run.config.get(k))]
    return f"{name} ({', '.join(opts)})" if opts else name


def _series(points: list[_Point], plain: str = "") -> tuple[list[Series], list[str]]:
    """The points as series (baseline first), and notes for the caption: the runs left out, and the series
    with a point that averages runs which are not the same run (random draws). Where the figure holds more
    than one kind of pruning, labels name the kind, except the `plain` one that the title names."""
    arms = _arms(points)
    several = len({p.kind for p in points if p.kind}) > 1
    left_out = {id(p) for same, _ in arms.scans for p in same}

    def label(p: _Point) -> str:
        return _label(p, arms.keys.get((p.run.method, p.kind), []), several and p.kind != plain)

    values: dict[str, dict[float, list[_Point]]] = {}
    for p in points:
        if id(p) not in left_out:
            values.setdefault(label(p), {}).setdefault(p.x, []).append(p)
    order = sorted(values, key=lambda s: (s not in (DENSE, FULL_CACHE), s))
    series, notes = [], []
    for name in order:
        xs = sorted(values[name])
        series.append(Series(label=name, x=xs, y=[_mean([p.y for p in values[name][x]]) for x in xs]))
        means = [group for group in values[name].values() if _differing([p.run.config for p in group])]
        if means:
            keys = sorted({k for group in means for k in _differing([p.run.config for p in group])})
            sizes = "/".join(str(n) for n in sorted({len(group) for group in means}))
            notes.append(f"{name}: mean of {sizes} runs that differ in {', '.join(keys)}")
    for same, key in arms.scans:
        notes.append(f"left out: {label(same[0])}, {len(same)} runs at one point differing in {key} (a scan)")
    return series, notes


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


Make = Callable[[str, str, list[Series]], Figure]  # (key, who and where, series) -> the figure


def _figures(
    key: str,
    srcs: list[Source],
    collect: Callable[[Source], list[_Point]],
    make: Make,
    *,
    by_setting: bool = True,
    plain: str = "",
) -> list[Plot]:
    """One figure per model (and evaluation data, `by_setting`) with points from more than the baseline;
    `plain` is the kind of pruning the title names."""
    plots = []
    for model, members in _group(srcs, lambda s: s.model):
        groups = _group(members, lambda s: s.tag) if by_setting else [("", members)]
        found = []
        for tag, group in groups:
            points = [p for src in group for p in collect(src)]
            if any(p.kind for p in points):
                found.append((tag, group, points))
        for tag, group, points in found:
            where = f"{model}, {group[0].setting}" if by_setting else model
            series, notes = _series(points, plain)
            fig_key = "-".join([key, slug(model)] + ([tag] if len(found) > 1 else []))
            names = list(dict.fromkeys(p.source for p in points))
            caption = f"Measured on {where}" + ("" if by_setting else f", {SPEED_NOTE}") + ". "
            caption += "From: " + ", ".join(names) + "." + "".join(f" {n[0].upper()}{n[1:]}." for n in notes)
            who = model_title(model) + (f", {group[0].setting}" if by_setting else "")
            plots.append(Plot(make(fig_key, who, series), caption))
    return plots


def _dense(src: Source) -> RunResult | None:
    return next((r for r in src.runs if r.method is None), None)


def _with_baseline(src: Source, points: list[_Point], x: float, y: float | None) -> list[_Point]:
    """The points, with the dense run of the same source at (x, y) when there are any."""
    dense = _dense(src)
    if not points or dense is None:
        return points
    return _point(dense, "", x, y, src.name) + points


def sparsity_figures(srcs: list[Source]) -> list[Plot]:
    kinds = sorted({k for s in srcs for r in s.runs if r.kind in ("weight-sparsity", "allocation")
                    if (k := sparsity_kind(r))}, key=lambda k: k != "unstructured")  # fmt: skip
    plots = []
    for kind in kinds:

        def collect(src: Source, kind: str = kind) -> list[_Point]:
            points = []
            for run in src.runs:
                sparsity = run.config.get("sparsity")
                if run.kind in ("weight-sparsity", "allocation") and sparsity_kind(run) == kind:
                    if isinstance(sparsity, (int, float)):
                        points += _point(run, kind, sparsity, run.metrics.ppl, src.name)
            dense = _dense(src)
            return _with_baseline(src, points, 0.0, dense.metrics.ppl if dense else None)

        def make(key: str, who: str, series: list[Series], kind: str = kind) -> Figure:
            return Figure(key=key, title=f"{who}: perplexity vs {kind} sparsity", y_label="perplexity",
                          x_label="fraction of decoder weights pruned", series=series, y_log=True)  # fmt: skip

        name = "sparsity" if kind == "unstructured" else f"sparsity-{slug(kind)}"
        plots += _figures(name, srcs, collect, make, plain=kind)
    return plots


def removed_fraction(run: RunResult, dense: RunResult) -> float | None:
    """The fraction of the dense model's decoder parameters a run removed (0 when it added as many)."""
    total = dense.metrics.size.params_decoder
    return 1.0 - run.metrics.size.params_decoder / total if total else None


Structural = list[tuple[RunResult, str, float]]  # a run, its kind of pruning, the fraction it removed


def _structural(src: Source, kinds: tuple[str, ...], family: Callable[[str], bool]) -> Structural:
    """The source's runs of the given run kinds whose kind of pruning is in the family, with that kind and the
    fraction of the decoder's parameters they removed."""
    dense = _dense(src)
    if dense is None:
        return []
    out = []
    for run in src.runs:
        if run.kind in kinds and (x := removed_fraction(run, dense)) is not None:
            kind = structure_kind(run, dense.metrics.size.layers)
            if family(kind):
                out.append((run, kind, x))
    return out


def depth_figures(srcs: list[Source]) -> list[Plot]:
    def ppl(run: RunResult) -> float | None:
        return run.metrics.ppl

    def acc(run: RunResult) -> float | None:
        return run.metrics.probe.acc_norm if run.metrics.probe else None

    def collect_with(metric: Callable[[RunResult], float | None]) -> Callable[[Source], list[_Point]]:
        def collect(src: Source) -> list[_Point]:
            points = [p for run, kind, x in _structural(src, ("depth",), lambda k: True)
                      for p in _point(run, kind, x, metric(run), src.name)]  # fmt: skip
            dense = _dense(src)
            return _with_baseline(src, points, 0.0, metric(dense) if dense else None)

        return collect

    def make_with(what: str, y_label: str, y_log: bool) -> Make:
        def make(key: str, who: str, series: list[Series]) -> Figure:
            return Figure(key=key, title=f"{who}: {what} vs parameters removed by depth pruning",
                          x_label="fraction of decoder parameters removed", y_label=y_label, series=series,
                          y_log=y_log)  # fmt: skip

        return make

    make_ppl = make_with("perplexity", "perplexity", True)
    make_acc = make_with("probe accuracy", "multiple-choice probe acc_norm", False)
    return _figures("depth-ppl", srcs, collect_with(ppl), make_ppl) + _figures(
        "depth-probe", srcs, collect_with(acc), make_acc
    )


def speed_figures(srcs: list[Source]) -> list[Plot]:
    def collect_with(family: str, phase: str) -> Callable[[Source], list[_Point]]:
        def collect(src: Source) -> list[_Point]:
            width, points = family == "width", []
            for run, kind, x in _structural(src, ("depth", "width"), lambda k: (k in WIDTH_KINDS) == width):
                if run.metrics.speed is not None:
                    points += _point(run, kind, x, getattr(run.metrics.speed, f"{phase}_speedup"), src.name)
            return _with_baseline(src, points, 0.0, 1.0)  # the baseline every ratio divides by

        return collect

    def make_with(family: str, phase: str) -> Make:
        def make(key: str, who: str, series: list[Series]) -> Figure:
            return Figure(key=key, title=f"{who}: CPU {phase} speed-up vs parameters removed by {family} pruning",
                          x_label="fraction of decoder parameters removed",
                          y_label=f"{phase} speed-up over dense (x)", series=series)  # fmt: skip

        return make

    plots = []
    for family in ("width", "depth"):
        for phase in ("prefill", "decode"):
            plots += _figures(f"speed-{phase}-{family}", srcs, collect_with(family, phase), make_with(family, phase),
                              by_setting=False, plain=family)  # fmt: skip
    return plots


def _budget(run: RunResult) -> float | None:
    value = run.config.get("kv_budget")
    if isinstance(value, (int, float)):
        return float(value)
    cache = run.metrics.cache
    if cache is not None and cache.budget_tokens is not None:
        return cache.budget_tokens / cache.prompt_tokens
    return None


def cache_figures(srcs: list[Source]) -> list[Plot]:
    def collect(src: Source) -> list[_Point]:
        points = []
        for run in src.runs:
            cache = run.metrics.cache
            if cache is None:
                continue
            if run.method is None:
                points += _point(run, "", 1.0, cache.ppl, src.name)
            elif run.kind == "kv-cache":
                points += _point(run, "kv-cache", _budget(run), cache.ppl, src.name)
        return points

    def make(key: str, who: str, series: list[Series]) -> Figure:
        return Figure(key=key, title=f"{who}: continuation perplexity vs KV cache budget",
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
    """The figure as a table: one row per x value and one column per series ("–" where a series has no point),
    or, when that grid would be mostly dashes (many series of a point or two), one row per point."""
    xs = sorted({x for s in fig.series for x in s.x})
    if 2 * sum(len(s.x) for s in fig.series) < len(xs) * len(fig.series):
        rows = [[s.label, f"{x:.3g}", number(y)] for s in fig.series for x, y in zip(s.x, s.y, strict=True)]
        return {"header": ["series", fig.x_label, fig.y_label], "rows": rows}
    lookup = [dict(zip(s.x, s.y, strict=True)) for s in fig.series]
    rows = [[f"{x:.3g}", *(number(col[x]) if x in col else "–" for col in lookup)] for x in xs]
    return {"header": [fig.x_label, *(s.label for s in fig.series)], "rows": rows}
