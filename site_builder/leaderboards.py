"""Paper-reported results as template data: one row per number, leaderboard slices and the CSV export.

A slice merges every paper's numbers that measure the same thing: the same model (spellings such as
`LLaMA-2-7B`, `Llama-2-7B` and `LLaMA2-7B` count as one, see `model_key`), dataset, metric, setting
and, for relative metrics, the same reference method. The evaluation protocol (window length, shots)
does not split a slice: each row shows its own, and the slice carries a note when its rows differ.
Within a slice each (method, reporting paper, protocol) is one row, so a baseline reported by three
papers shows as three rows that name who reported them. Only slices with at least `MIN_METHODS`
distinct methods get a page. Dense numbers (method `dense`, empty setting) are not ranked; they are
shown beside each slice of the same model, dataset and metric as the reference. Each slice also
knows its best value by the year of the reporting record (`best_over_time`). Pure functions, no I/O,
no torch.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from kb.paper_results import PaperResult
from kb.results import Figure, Series
from kb.store import KnowledgeBase

MIN_METHODS = 3
PAPER_LINKS = 5  # slices named on a paper page before "and N more"
DENSE = "dense"
CSV_COLUMNS = (
    "paper",
    "key",
    "model",
    "sparsity",
    "pattern",
    "params_removed",
    "layers_removed",
    "kv_budget",
    "setting",
    "dataset",
    "metric",
    "unit",
    "direction",
    "value",
    "method",
    "versus",
    "seqlen",
    "shots",
    "headline",
    "source_url",
    "source_locator",
    "note",
)


def format_value(value: float) -> str:
    """Up to ten significant digits, no trailing zeros: 24.55, 48419.12, 4.5, 16."""
    return f"{value:.10g}"


def result_anchor(key: str) -> str:
    """The HTML id of a keyed results row on its paper's page (`#result-<key>`)."""
    return f"result-{key}"


def _slug(text: str) -> str:
    text = text.lower().replace("%", "pct").replace(":", "-").replace("+", "-plus-")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def model_key(name: str) -> str:
    """The grouping key of a model name: lower case, split into words and numbers (a number keeps
    its decimals and a size suffix), joined by hyphens. `LLaMA-2-7B`, `Llama-2-7B` and `LLaMA2-7B`
    all give `llama-2-7b`; `OPT-1.3B` (`opt-1.3b`) stays apart from `OPT-13B` (`opt-13b`)."""
    return "-".join(re.findall(r"\d+(?:\.\d+)*[a-z]*|[a-z]+", name.lower()))


def _natural(text: str) -> tuple[Any, ...]:
    """Sort key that orders numbers by value: LLaMA-2-7B before LLaMA-2-13B."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text.lower()))


def protocol_label(r: PaperResult) -> str:
    """The evaluation protocol of one number: `2048-token windows, 5-shot`, or `` when unstated."""
    parts = []
    if r.seqlen:
        parts.append(f"{r.seqlen}-token windows")
    if r.shots is not None:
        parts.append(f"{r.shots}-shot")
    return ", ".join(parts)


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def protocol_note(results: list[PaperResult]) -> str | None:
    """A warning when the rows of one slice were measured differently (window length or number of
    shots); None when they all agree. A row that states nothing counts as a difference too."""
    found = []
    for what, values, fmt in (
        ("windows", [r.seqlen for r in results], lambda v: f"{v}-token windows"),
        ("shots", [r.shots for r in results], lambda v: f"{v}-shot prompts"),
    ):
        stated = sorted({v for v in values if v is not None})
        unstated = sum(v is None for v in values)
        if len(stated) > 1 or (stated and unstated):
            text = _listing([f"{v}-" for v in stated[:-1]] + [fmt(stated[-1])])
            if unstated:
                text += f" ({unstated} {'row does' if unstated == 1 else 'rows do'} not state the {what})"
            found.append(text)
    if not found:
        return None
    return f"Rows use {' and '.join(found)}: not strictly comparable."


def excluded(r: PaperResult) -> bool:
    """Whether the record asks to keep this number off the leaderboards (a disputed row)."""
    return r.exclude_from_leaderboards is not None


@dataclass
class Row:
    """One paper-reported number with everything a page or the export shows about it."""

    paper: str  # the reporting record's id
    paper_name: str
    result: PaperResult
    dataset_label: str
    metric_label: str
    unit: str
    direction: str
    relative: bool
    method_label: str
    method_is_record: bool
    year: int = 0  # the reporting record's year (its first public appearance)
    slice_id: str | None = None  # the leaderboard page this row appears on, if any

    @property
    def value_text(self) -> str:
        v = format_value(self.result.value)
        return f"{v}{self.unit}" if self.unit in ("%", "x") else v

    @property
    def setting_label(self) -> str:
        label = self.result.setting.label()
        if label == "dense" and self.result.method != DENSE:
            return "as reported"
        return label

    @property
    def model_key(self) -> str:
        return model_key(self.result.model)

    @property
    def group(self) -> tuple[Any, ...]:
        """What rows of one slice share; the protocol (window, shots) is not part of it."""
        r = self.result
        return (self.model_key, r.dataset, r.metric, r.setting.key(), r.versus)

    @property
    def reference_key(self) -> tuple[Any, ...]:
        """What a dense number must share with a slice to be shown as its reference."""
        r = self.result
        return (self.model_key, r.dataset, r.metric)

    @property
    def is_dense(self) -> bool:
        return self.result.method == DENSE and self.result.setting.label() == "dense"

    def context(self) -> dict[str, Any]:
        r = self.result
        return {
            "paper": self.paper,
            "paper_name": self.paper_name,
            "year": self.year,
            "model": r.model,
            "setting": self.setting_label,
            "dataset": self.dataset_label,
            "metric": self.metric_label,
            "unit": self.unit,
            "value": self.value_text,
            "method": r.method,
            "method_label": self.method_label,
            "method_is_record": self.method_is_record,
            "versus": r.versus,
            "seqlen": r.seqlen,
            "shots": r.shots,
            "protocol": protocol_label(r),
            "headline": r.headline,
            "key": r.key,
            "anchor": result_anchor(r.key) if r.key else None,
            "source_url": r.source.url,
            "source_locator": r.source.locator,
            "note": r.note,
            "slice": self.slice_id,
        }


@dataclass
class YearBest:
    """The best number reported in one year, and the best reported up to and including it."""

    year: int
    best: Row
    so_far: Row


def best_over_time(rows: list[Row], direction: str) -> list[YearBest]:
    """One entry per year in which the slice got a number, oldest first. "Best" follows the metric's
    direction; a tie keeps the earlier row (the order of `rows`)."""

    def better(a: Row, b: Row) -> bool:
        return a.result.value < b.result.value if direction == "lower" else a.result.value > b.result.value

    out: list[YearBest] = []
    for year in sorted({r.year for r in rows}):
        best = None
        for row in rows:
            if row.year == year and (best is None or better(row, best)):
                best = row
        assert best is not None
        so_far = best if not out or better(best, out[-1].so_far) else out[-1].so_far
        out.append(YearBest(year, best, so_far))
    return out


@dataclass
class Slice:
    """One leaderboard: comparable numbers from every paper, best first."""

    id: str
    title: str
    model: str  # the most common spelling of the model among the catalogue's numbers
    model_key: str
    dataset: str
    metric: str
    setting: str
    unit: str
    direction: str
    versus: str | None = None
    rows: list[Row] = field(default_factory=list)
    dense: list[Row] = field(default_factory=list)

    # The sets below are worked out once: the rows do not change after `build_slices`, and every paper
    # page asks each slice it appears in (recounting the rows each time made the build quadratic).
    @cached_property
    def method_ids(self) -> frozenset[str]:
        return frozenset(r.result.method for r in self.rows)

    @cached_property
    def paper_ids(self) -> frozenset[str]:
        """The records whose numbers this slice ranks."""
        return frozenset(r.paper for r in self.rows)

    @property
    def methods(self) -> list[str]:
        return sorted(self.method_ids)

    @property
    def papers(self) -> list[str]:
        """The records whose numbers this slice ranks."""
        return sorted(self.paper_ids)

    @property
    def protocol_note(self) -> str | None:
        return protocol_note([r.result for r in self.rows])

    @property
    def history(self) -> list[YearBest]:
        return best_over_time(self.rows, self.direction)

    def figure(self) -> Figure | None:
        """The best-over-time chart (drawn as `leaderboards/<id>.svg`); None with a single year."""
        history = self.history
        if len(history) < 2:
            return None
        years = [h.year for h in history]
        return Figure(
            key=self.id,
            title=f"Best {self.metric.lower()} by year",
            x_label="year of the reporting paper",
            y_label=f"{self.metric} ({self.better})",
            series=[
                Series(label="best so far", x=years, y=[h.so_far.result.value for h in history]),
                Series(label="best reported that year", x=years, y=[h.best.result.value for h in history]),
            ],
        )

    @property
    def better(self) -> str:
        return "lower is better" if self.direction == "lower" else "higher is better"

    def context(self) -> dict[str, Any]:
        ranks: list[int] = []
        for i, row in enumerate(self.rows):  # equal values share a rank
            same = i and row.result.value == self.rows[i - 1].result.value
            ranks.append(ranks[-1] if same else i + 1)
        names = {r.paper: r.paper_name for r in self.rows}
        history = self.history
        figure = self.figure()
        return {
            "id": self.id,
            "title": self.title,
            "model": self.model,
            "model_key": self.model_key,
            "dataset": self.dataset,
            "metric": self.metric,
            "setting": self.setting,
            "versus": self.versus,
            "unit": self.unit,
            "better": self.better,
            "methods": len(self.methods),
            "protocol_note": self.protocol_note,
            "rows": [{**r.context(), "rank": k} for r, k in zip(self.rows, ranks, strict=True)],
            "dense": [r.context() for r in self.dense],
            "papers": [{"id": i, "name": names[i]} for i in self.papers],
            "history": [
                {"year": h.year, "best": h.best.context(), "so_far": h.so_far.context()} for h in history
            ],
            "figure": figure,  # a kb.results.Figure or None; render.py draws it
            "figure_alt": _figure_alt(self, history) if figure else None,
        }


def _figure_alt(s: Slice, history: list[YearBest]) -> str:
    """Alt text that carries the chart's numbers: the best so far, year by year."""
    steps = "; ".join(f"{h.year}: {h.so_far.value_text} ({h.so_far.method_label})" for h in history)
    return f"Best {s.metric.lower()} reported so far, by year ({s.better}): {steps}"


def result_rows(kb: KnowledgeBase) -> list[Row]:
    """Every paper-reported number, in record-id order and then in file order."""
    assert kb.vocab is not None
    names = {r.paper.id: (r.paper.short_name or r.paper.title) for r in kb.records}
    rows: list[Row] = []
    for rec in sorted(kb.records, key=lambda r: r.paper.id):
        for res in rec.paper.results:
            dataset = kb.vocab.datasets.get(res.dataset)
            metric = kb.vocab.metrics.get(res.metric)
            if dataset is None or metric is None:  # `kb validate` reports it; the site skips it
                continue
            rows.append(
                Row(
                    paper=rec.paper.id,
                    paper_name=names[rec.paper.id],
                    result=res,
                    dataset_label=dataset.label,
                    metric_label=metric.label,
                    unit=metric.unit,
                    direction=metric.direction,
                    relative=metric.relative,
                    method_label=names.get(res.method, res.method),
                    method_is_record=res.method in names,
                    year=rec.paper.year,
                )
            )
    return rows


def model_names(rows: list[Row]) -> dict[str, str]:
    """The spelling shown for each model key: the one the catalogue uses most (ties: sorted first)."""
    counts: dict[str, Counter[str]] = {}
    for row in rows:
        counts.setdefault(row.model_key, Counter())[row.result.model] += 1
    return {k: min(c, key=lambda name: (-c[name], name)) for k, c in counts.items()}


def _measure(row: Row) -> str:
    """What a slice measures: `WikiText-2 perplexity`, `Throughput speed-up vs dense`."""
    r = row.result
    return f"{row.dataset_label} {row.metric_label.lower()}" + (f" vs {r.versus}" if r.versus else "")


def _title(model: str, row: Row) -> str:
    return " · ".join((model, _measure(row), row.setting_label))


def build_slices(rows: list[Row], min_methods: int = MIN_METHODS) -> list[Slice]:
    """Comparable groups with at least `min_methods` distinct methods, best value first; sets
    `slice_id` on the rows that appear on a page. Rows flagged as excluded are left out. Sorted by
    model (numbers by value), dataset, metric and title."""
    names = model_names(rows)
    groups: dict[tuple[Any, ...], list[Row]] = {}
    dense: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        if excluded(row.result):
            continue
        if row.is_dense:
            dense.setdefault(row.reference_key, []).append(row)
        else:
            groups.setdefault(row.group, []).append(row)
    slices: list[Slice] = []
    used: set[str] = set()
    for members in groups.values():
        seen: set[tuple[Any, ...]] = set()
        unique = []
        for row in members:  # one row per (method, reporting paper, protocol)
            ident = (row.result.method, row.paper, row.result.seqlen, row.result.shots)
            if ident not in seen:
                seen.add(ident)
                unique.append(row)
        if len({r.result.method for r in unique}) < min_methods:
            continue
        first = unique[0]
        sign = 1 if first.direction == "lower" else -1
        unique.sort(key=lambda r: (sign * r.result.value, r.result.method, r.paper, r.result.seqlen or 0))
        slug = base = _slug(_title(first.model_key, first))  # the URL does not follow spelling changes
        n = 2
        while slug in used:
            slug, n = f"{base}-{n}", n + 1
        used.add(slug)
        for row in unique:
            row.slice_id = slug
        references = [] if first.relative else dense.get(first.reference_key, [])
        slices.append(
            Slice(
                id=slug,
                title=_title(names[first.model_key], first),
                model=names[first.model_key],
                model_key=first.model_key,
                dataset=first.dataset_label,
                metric=first.metric_label,
                setting=first.setting_label,
                unit=first.unit,
                direction=first.direction,
                versus=first.result.versus,
                rows=unique,
                dense=sorted(references, key=lambda r: (r.paper, r.result.seqlen or 0)),
            )
        )
    return sorted(slices, key=lambda s: (_natural(s.model), s.dataset, s.metric, s.title))


def _setting_order(s: Slice) -> tuple[Any, ...]:
    """Settings in a readable order: unstructured sparsity by level, then N:M, then structured
    settings (parameters or layers removed, KV budgets)."""
    g = s.rows[0].result.setting
    structured = (g.params_removed or 0, g.layers_removed or 0, g.kv_budget or 0)
    return (structured != (0, 0, 0), g.pattern is not None, g.pattern or "", g.sparsity or 0,
            *structured, s.dataset, s.metric, s.title)  # fmt: skip


def index_groups(slices: list[Slice]) -> list[dict[str, Any]]:
    """The leaderboards index: one group per model (anchor `#<model key>`), its slices by setting."""
    groups: dict[str, list[Slice]] = {}
    for s in slices:
        groups.setdefault(s.model_key, []).append(s)
    out = []
    for key, members in groups.items():
        members.sort(key=_setting_order)
        out.append(
            {
                "model": members[0].model,
                "anchor": key,
                "slices": [
                    {
                        "id": s.id,
                        "title": s.title,
                        "setting": s.setting,
                        "measure": _measure(s.rows[0]),
                        "better": s.direction,  # "lower" or "higher"
                        "methods": len(s.methods),
                        "papers": len(s.papers),
                        "best": {**s.rows[0].context(), "rank": 1},
                        "mixed": s.protocol_note is not None,
                    }
                    for s in members
                ],
            }
        )
    return sorted(out, key=lambda g: _natural(g["model"]))


def paper_slice_links(slices: list[Slice], paper: str, limit: int = PAPER_LINKS) -> dict[str, Any]:
    """The leaderboards a paper page names: at most `limit` slices (those ranking the paper's own
    method first, then those merging the most papers), and the rest counted per model, each count
    linking to that model on the index."""
    own = [s for s in slices if paper in s.paper_ids or paper in s.method_ids]
    own.sort(key=lambda s: (paper not in s.method_ids, -len(s.paper_ids), s.title))
    rest = own[limit:]
    per_model = Counter(s.model_key for s in rest)
    names = {s.model_key: s.model for s in rest}
    return {
        "shown": [{"id": s.id, "title": s.title} for s in own[:limit]],
        "more": len(rest),
        "more_models": [
            {"model": names[k], "anchor": k, "count": per_model[k]}
            for k in sorted(per_model, key=lambda k: _natural(names[k]))
        ],
    }


def multi_paper_slices(slices: list[Slice], papers: int = 3) -> list[Slice]:
    """Slices that rank numbers from at least `papers` different reporting records."""
    return [s for s in slices if len(s.papers) >= papers]


def _csv_text(value: object) -> str:
    """A text cell that a spreadsheet will not run as a formula."""
    s = str(value)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def results_csv(rows: list[Row]) -> str:
    """One line per paper-reported number; the same records give the same bytes."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        r = row.result
        s = r.setting

        def num(x: float | int | None) -> str:
            return "" if x is None else format_value(x)

        writer.writerow(
            [
                row.paper,
                r.key or "",
                _csv_text(r.model),
                num(s.sparsity),
                s.pattern or "",
                num(s.params_removed),
                num(s.layers_removed),
                num(s.kv_budget),
                _csv_text(row.setting_label),
                r.dataset,
                r.metric,
                row.unit,
                row.direction,
                format_value(r.value),
                r.method,
                r.versus or "",
                num(r.seqlen),
                num(r.shots),
                "true" if r.headline else "",
                _csv_text(r.source.url),
                _csv_text(r.source.locator),
                _csv_text(r.note or ""),
            ]
        )
    return out.getvalue()
