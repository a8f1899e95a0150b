"""Paper-reported results as template data: one row per number, leaderboard slices and the CSV export.

A slice is a set of numbers that can be compared directly: the same model, dataset, metric, setting,
evaluation window and, for relative metrics, the same reference method. Within a slice each (method,
reporting paper) pair is one row, so a baseline number reported by three papers shows as three rows
that name who reported them. Only slices with at least `MIN_METHODS` distinct methods get a page.
Dense numbers (method `dense`, empty setting) are not ranked; they are shown beside each slice of the
same model, dataset, metric and window as the reference. Pure functions, no I/O, no torch.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any

from kb.paper_results import PaperResult
from kb.store import KnowledgeBase

MIN_METHODS = 3
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
    def group(self) -> tuple[Any, ...]:
        r = self.result
        return (r.model, r.dataset, r.metric, r.setting.key(), r.seqlen, r.shots, r.versus)

    @property
    def reference_key(self) -> tuple[Any, ...]:
        """What a dense number must share with a slice to be shown as its reference."""
        r = self.result
        return (r.model, r.dataset, r.metric, r.seqlen, r.shots)

    @property
    def is_dense(self) -> bool:
        return self.result.method == DENSE and self.result.setting.label() == "dense"

    def context(self) -> dict[str, Any]:
        r = self.result
        return {
            "paper": self.paper,
            "paper_name": self.paper_name,
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
            "headline": r.headline,
            "key": r.key,
            "anchor": result_anchor(r.key) if r.key else None,
            "source_url": r.source.url,
            "source_locator": r.source.locator,
            "note": r.note,
            "slice": self.slice_id,
        }


@dataclass
class Slice:
    id: str
    title: str
    model: str
    dataset: str
    metric: str
    setting: str
    unit: str
    direction: str
    rows: list[Row] = field(default_factory=list)
    dense: list[Row] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return sorted({r.result.method for r in self.rows})

    def context(self) -> dict[str, Any]:
        ranks: list[int] = []
        for i, row in enumerate(self.rows):  # equal values share a rank
            same = i and row.result.value == self.rows[i - 1].result.value
            ranks.append(ranks[-1] if same else i + 1)
        return {
            "id": self.id,
            "title": self.title,
            "model": self.model,
            "dataset": self.dataset,
            "metric": self.metric,
            "setting": self.setting,
            "unit": self.unit,
            "better": "lower is better" if self.direction == "lower" else "higher is better",
            "methods": len(self.methods),
            "rows": [{**r.context(), "rank": k} for r, k in zip(self.rows, ranks, strict=True)],
            "dense": [r.context() for r in self.dense],
            "papers": [{"id": i, "name": n} for i, n in sorted({(r.paper, r.paper_name) for r in self.rows})],
        }


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
                )
            )
    return rows


def _title(row: Row) -> str:
    r = row.result
    parts = [r.model, f"{row.dataset_label} {row.metric_label.lower()}", row.setting_label]
    if r.seqlen:
        parts.append(f"{r.seqlen}-token windows")
    if r.shots is not None:
        parts.append(f"{r.shots}-shot")
    if r.versus:
        parts.append(f"vs {r.versus}")
    return " · ".join(parts)


def build_slices(rows: list[Row], min_methods: int = MIN_METHODS) -> list[Slice]:
    """Comparable groups with at least `min_methods` distinct methods, best value first; sets
    `slice_id` on the rows that appear on a page. Sorted by title."""
    groups: dict[tuple[Any, ...], list[Row]] = {}
    dense: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        if row.is_dense:
            dense.setdefault(row.reference_key, []).append(row)
        else:
            groups.setdefault(row.group, []).append(row)
    slices: list[Slice] = []
    used: set[str] = set()
    for members in groups.values():
        seen: set[tuple[str, str]] = set()
        unique = []
        for row in members:  # one row per (method, reporting paper)
            if (row.result.method, row.paper) not in seen:
                seen.add((row.result.method, row.paper))
                unique.append(row)
        if len({r.result.method for r in unique}) < min_methods:
            continue
        first = unique[0]
        sign = 1 if first.direction == "lower" else -1
        unique.sort(key=lambda r: (sign * r.result.value, r.result.method, r.paper))
        title = _title(first)
        slug = base = _slug(title)
        n = 2
        while slug in used:
            slug, n = f"{base}-{n}", n + 1
        used.add(slug)
        for row in unique:
            row.slice_id = slug
        slices.append(
            Slice(
                id=slug,
                title=title,
                model=first.result.model,
                dataset=first.dataset_label,
                metric=first.metric_label,
                setting=first.setting_label,
                unit=first.unit,
                direction=first.direction,
                rows=unique,
                dense=sorted(dense.get(first.reference_key, []), key=lambda r: r.paper)
                if not first.relative
                else [],
            )
        )
    return sorted(slices, key=lambda s: (s.model.lower(), s.dataset, s.metric, s.title))


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
