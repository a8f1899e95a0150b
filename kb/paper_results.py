"""Paper-reported results: the numbers a paper (or its official repository) gives, as data.

A record's `results:` list holds one `PaperResult` per number: which model, under which compression
setting, on which dataset or measurement, by which metric, for which method (the paper's own, named by
its record id, or a baseline such as `wanda`, `magnitude` or `dense`), and where it was read (`source`).

Datasets and metrics are closed vocabularies, defined once as data in `concepts/datasets.yaml` and
`concepts/metrics.yaml` (loaded with the tag vocabulary, see `kb.vocab`); a metric carries its unit
and its direction (lower or higher is better), which the leaderboards sort by. Whether a record's
dataset and metric ids belong to them is checked by `kb.checks`, which knows the line of each value.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
# A method: a record id or a plain name; `+` joins a method and what it runs on (`owl+sparsegpt`).
METHOD_PATTERN = r"^[a-z0-9]+(?:[-+.][a-z0-9]+)*$"
# A model name as the records write it: hyphens, no spaces (`LLaMA-2-7B`, `Llama-3.1-8B-Instruct`).
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.+_/-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _fraction(x: float) -> float:
    if not 0 <= x <= 1:
        raise ValueError(f"{x} is not a fraction between 0 and 1 (write 50% as 0.5)")
    return x


Fraction = Annotated[float, AfterValidator(_fraction)]


class Setting(_Strict):
    """How the model was compressed; empty for the dense model."""

    sparsity: Fraction | None = None  # share of the targeted weights set to zero
    pattern: Annotated[str, Field(pattern=r"^\d+:\d+$")] | None = None  # N:M, "2:4" = 2 zeros in every 4
    params_removed: Fraction | None = None  # share of parameters removed (structured pruning)
    layers_removed: Annotated[int, Field(ge=0, le=1000)] | None = None  # whole layers or sublayers removed
    kv_budget: Fraction | None = None  # share of the key-value cache kept

    @model_validator(mode="after")
    def _pattern_matches_sparsity(self) -> Setting:
        if self.pattern is not None:
            n, m = (int(x) for x in self.pattern.split(":"))
            if not 0 < n < m:
                raise ValueError(f"pattern {self.pattern!r} must be N:M with 0 < N < M")
            if self.sparsity is not None and not math.isclose(self.sparsity, n / m):
                raise ValueError(
                    f"sparsity {self.sparsity} does not match pattern {self.pattern} ({n / m:g})"
                )
        return self

    def label(self) -> str:
        """Short human label: `50% unstructured`, `2:4`, `20% params removed`, `dense`."""
        parts: list[str] = []
        if self.pattern:
            parts.append(self.pattern)
        elif self.sparsity is not None:
            parts.append(f"{_pct(self.sparsity)} unstructured")
        if self.params_removed is not None:
            parts.append(f"{_pct(self.params_removed)} params removed")
        if self.layers_removed is not None:
            parts.append(f"{self.layers_removed} layers removed")
        if self.kv_budget is not None:
            parts.append(f"{_pct(self.kv_budget)} KV cache")
        return ", ".join(parts) or "dense"

    def key(self) -> tuple[Any, ...]:
        return (self.sparsity, self.pattern, self.params_removed, self.layers_removed, self.kv_budget)


def _pct(x: float) -> str:
    return f"{x * 100:.4g}%"


class ResultSource(_Strict):
    url: Annotated[str, Field(max_length=500, pattern=r"^https?://[^\s]+\.[^\s]+$")]
    locator: Annotated[
        str, Field(min_length=3, max_length=200, pattern=r"^[^\n]*$")
    ]  # "Table 3", "README.md line 84"


Note = Annotated[
    str,
    BeforeValidator(lambda v: v.strip() if isinstance(v, str) else v),
    Field(min_length=1, max_length=160, pattern=r"^[^\n]*$"),
]


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError("value must be a finite number")
    return x


class PaperResult(_Strict):
    """One number a paper reports. Shape only; datasets and metrics are checked against the
    vocabulary by `kb.checks`."""

    model: Annotated[str, Field(min_length=2, max_length=60, pattern=MODEL_PATTERN)]
    setting: Setting = Setting()
    dataset: Annotated[str, Field(pattern=_SLUG, max_length=40)]
    metric: Annotated[str, Field(pattern=_SLUG, max_length=40)]
    value: Annotated[float, AfterValidator(_finite)]
    method: Annotated[str, Field(min_length=2, max_length=40, pattern=METHOD_PATTERN)]
    versus: Annotated[str, Field(max_length=40, pattern=METHOD_PATTERN)] | None = None  # relative metrics
    seqlen: Annotated[int, Field(ge=1, le=1_000_000)] | None = None  # evaluation window, when it matters
    shots: Annotated[int, Field(ge=0, le=100)] | None = None  # in-context examples, for few-shot scores
    source: ResultSource
    headline: bool = False
    key: Annotated[str, Field(pattern=_SLUG, max_length=40)] | None = None
    note: Note | None = None  # what a reader must know to compare it: "up to", the variant, the caveat
    # why this number is kept off the leaderboards (ranked rows and dense references) until confirmed,
    # e.g. a value that contradicts the paper's own other numbers; it stays on the paper's page
    exclude_from_leaderboards: Note | None = None


# ---- the closed vocabularies of datasets and metrics ------------------------------------------


class Term(_Strict):
    id: str = Field(pattern=_SLUG)
    label: str = Field(min_length=1, max_length=60)
    aliases: list[str] = []
    definition: str = Field(min_length=10)


class DatasetTerm(Term):
    kind: Literal["language-modelling", "zero-shot", "benchmark", "measurement"]


class MetricTerm(Term):
    unit: str = Field(max_length=20)  # "" for a plain number such as perplexity
    direction: Literal["lower", "higher"]
    relative: bool = False  # measured against another method (`versus`): speed-ups, gains


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


class Terms(_Strict):
    kind: Literal["datasets", "metrics"]
    intro: str = ""
    values: list[Term]

    @model_validator(mode="after")
    def _unique(self) -> Terms:
        ids = [v.id for v in self.values]
        dup = next((i for i in ids if ids.count(i) > 1), None)
        if dup:
            raise ValueError(f"{dup!r} is defined twice")
        return self

    def get(self, term_id: str) -> Any:
        """The term with this id (a `DatasetTerm` or `MetricTerm`), or None."""
        return next((v for v in self.values if v.id == term_id), None)

    def suggest(self, text: str) -> str | None:
        key = _norm(text)
        by_norm: dict[str, str] = {}
        for v in self.values:
            for name in (v.id, v.label, *v.aliases):
                by_norm.setdefault(_norm(name), v.id)
        if key in by_norm:
            return by_norm[key]
        close = difflib.get_close_matches(key, list(by_norm), n=1, cutoff=0.6)
        return by_norm[close[0]] if close else None


class DatasetTerms(Terms):
    kind: Literal["datasets"]
    values: list[DatasetTerm]  # type: ignore[assignment]


class MetricTerms(Terms):
    kind: Literal["metrics"]
    values: list[MetricTerm]  # type: ignore[assignment]
