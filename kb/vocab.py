"""The tag vocabulary: six closed axes, defined once as data in `concepts/<axis>.yaml`.

Each axis lists its values (id, label, aliases, definition) and the typed qualifiers a value
allows. Every value also accepts the universal `note` qualifier (short free text).
Qualifier kinds:
  choice    one of `values` (a list of them when `multiple: true`)
  quantity  an amount with a unit, written like `50K samples`, `~50B tokens`, `150B+ tokens`
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .closedlists import LISTS, ClosedList, ClosedListError, load_closed_list, load_concept, nearest
from .paper_results import DatasetTerms, MetricTerms

AXES: tuple[str, ...] = ("type", "criteria", "budget", "data", "retrain", "weight")
NOTE_MAX = 80
_SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChoiceQualifier(_Strict):
    kind: Literal["choice"]
    values: list[Annotated[str, Field(pattern=_SLUG)]] = Field(min_length=1)
    multiple: bool = False
    description: str


class QuantityQualifier(_Strict):
    kind: Literal["quantity"]
    units: list[str] = Field(min_length=1)
    description: str


Qualifier = Annotated[ChoiceQualifier | QuantityQualifier, Field(discriminator="kind")]


class Value(_Strict):
    id: str = Field(pattern=_SLUG)
    label: str
    aliases: list[str] = []
    definition: str = Field(min_length=20)
    qualifiers: dict[str, Qualifier] = {}
    tokens: tuple[int, int | None] | None = None  # data bins only: [low, high] in tokens


class Axis(_Strict):
    axis: Literal["type", "criteria", "budget", "data", "retrain", "weight"]
    label: str
    question: str
    colour: str = Field(pattern=r"^#[0-9a-fA-F]{6}$")
    order: int
    intro: str
    values: list[Value] = Field(min_length=1)
    shared_qualifiers: dict[str, Qualifier] = {}

    @model_validator(mode="after")
    def _unique_ids(self) -> Axis:
        seen: set[str] = set()
        for v in self.values:
            if v.id in seen:
                raise ValueError(f"value {v.id!r} is defined twice")
            seen.add(v.id)
            clash = set(v.qualifiers) & set(self.shared_qualifiers)
            if clash or "note" in v.qualifiers:
                raise ValueError(f"value {v.id!r} redefines qualifier {sorted(clash or {'note'})[0]!r}")
        return self

    def value(self, value_id: str) -> Value | None:
        return next((v for v in self.values if v.id == value_id), None)

    def qualifiers_for(self, value_id: str) -> dict[str, ChoiceQualifier | QuantityQualifier]:
        v = self.value(value_id)
        return {**self.shared_qualifiers, **(v.qualifiers if v else {})}

    def suggest(self, text: str) -> str | None:
        """The nearest valid value id for a misspelt or seed-style value, or None."""
        return nearest(text, [(v.id, [v.id, v.label, *v.aliases]) for v in self.values])


class Vocabulary(_Strict):
    axes: dict[str, Axis]
    # The closed lists of datasets and metrics for paper-reported results (`kb.paper_results`).
    datasets: DatasetTerms = DatasetTerms(kind="datasets", values=[])
    metrics: MetricTerms = MetricTerms(kind="metrics", values=[])
    lists: dict[str, ClosedList] = {}  # `form` and `theme` (kb.closedlists)

    def __getitem__(self, axis: str) -> Axis:
        return self.axes[axis]

    def ordered(self) -> list[Axis]:
        return sorted(self.axes.values(), key=lambda a: a.order)


class VocabularyError(Exception):
    """A broken vocabulary file: `where` is `concepts/x.yaml:LINE`."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def load_vocabulary(concepts_dir: Path) -> Vocabulary:
    """Read and check `concepts/<axis>.yaml` for all six axes, and the closed lists (`form`, `theme`)."""

    axes: dict[str, Axis] = {}
    try:
        for name in AXES:
            axis, loaded = load_concept(
                concepts_dir, name, Axis, f"missing vocabulary file for axis {name!r}"
            )
            if axis.axis != name:
                raise ClosedListError(f"concepts/{name}.yaml:{loaded.line_of(('axis',))}",
                                      f"axis is {axis.axis!r}, expected {name!r}")  # fmt: skip
            axes[name] = axis
        datasets, _ = load_concept(
            concepts_dir, "datasets", DatasetTerms, "missing vocabulary file for datasets"
        )
        metrics, _ = load_concept(concepts_dir, "metrics", MetricTerms, "missing vocabulary file for metrics")
        lists = {name: load_closed_list(Path(concepts_dir), name) for name in LISTS}
    except ClosedListError as exc:
        raise VocabularyError(exc.where, exc.message) from None
    return Vocabulary(axes=axes, datasets=datasets, metrics=metrics, lists=lists)


# ---- quantities -------------------------------------------------------------------------------

_QUANTITY = re.compile(
    r"^(?P<approx>[~≈])?\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<suffix>[KMBT])?(?P<plus>\+)?\s+(?P<unit>[a-z]+)$"
)
_SUFFIX = {None: 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


class Quantity(_Strict):
    amount: int
    unit: str
    approx: bool = False
    at_least: bool = False
    text: str


def parse_quantity(text: str, units: list[str]) -> Quantity:
    """Parse `50K samples`, `~50B tokens`, `150B+ tokens`; raise ValueError with a hint."""
    m = _QUANTITY.match(text.strip())
    if not m:
        raise ValueError(f"expected an amount and a unit like '50K {units[0]}', got {text!r}")
    unit = m["unit"]
    if unit not in units:
        near = difflib.get_close_matches(unit, units, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unit {unit!r} is not one of {', '.join(units)}{hint}")
    amount = round(float(m["num"]) * _SUFFIX[m["suffix"]])
    return Quantity(
        amount=amount, unit=unit, approx=bool(m["approx"]), at_least=bool(m["plus"]), text=text.strip()
    )
