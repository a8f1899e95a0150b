"""Closed lists other than the six tag axes, defined as data in `concepts/<list>.yaml`.

`form` (what a reader can deploy after the method ran) and `theme` (what a key finding is about) are
plain ordered lists of values: no qualifiers, and the order of `values` in the file is the display
order (for `form`, the seed note's order of preference). Checked like tags: a misspelt value gets the
nearest valid one suggested.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

M = TypeVar("M", bound=BaseModel)

LISTS: tuple[str, ...] = ("form", "theme")
_SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
_COLOUR = r"^#[0-9a-fA-F]{6}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListValue(_Strict):
    id: str = Field(pattern=_SLUG)
    label: str = Field(min_length=1, max_length=40)
    colour: str = Field(pattern=_COLOUR)
    aliases: list[str] = []
    definition: str = Field(min_length=20)


class ClosedList(_Strict):
    name: Literal["form", "theme"]
    label: str
    question: str
    colour: str = Field(pattern=_COLOUR)
    intro: str
    values: list[ListValue] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> ClosedList:
        ids = [v.id for v in self.values]
        for i, v in enumerate(ids):
            if v in ids[:i]:
                raise ValueError(f"value {v!r} is defined twice")
        return self

    def value(self, value_id: str) -> ListValue | None:
        return next((v for v in self.values if v.id == value_id), None)

    def rank(self, value_id: str) -> int:
        """Position in the list (unknown values last)."""
        ids = [v.id for v in self.values]
        return ids.index(value_id) if value_id in ids else len(ids)

    def suggest(self, text: str) -> str | None:
        """The nearest valid value id for a misspelt or differently written value, or None."""
        return nearest(text, [(v.id, [v.id, v.label, *v.aliases]) for v in self.values])


def norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def nearest(text: str, names: list[tuple[str, list[str]]]) -> str | None:
    """The id whose id, label or alias is closest to `text` (exact after normalising first)."""
    key = norm(text)
    if not key:
        return None
    by_norm: dict[str, str] = {}
    for value_id, spellings in names:
        for name in spellings:
            by_norm.setdefault(norm(name), value_id)
    if key in by_norm:
        return by_norm[key]
    close = difflib.get_close_matches(key, list(by_norm), n=1, cutoff=0.6)
    return by_norm[close[0]] if close else None


class ClosedListError(Exception):
    """A broken list file: `where` is `concepts/x.yaml:LINE`."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def load_concept(concepts_dir: Path, name: str, model: type[M], missing: str) -> tuple[M, Any]:
    """Read `concepts/<name>.yaml` safely into `model`; a `ClosedListError` names the file, line and field.
    Returns the validated model and the loaded document (for the line of a later check)."""
    from .yamlio import YamlError, load_yaml

    path = Path(concepts_dir) / f"{name}.yaml"
    rel = f"concepts/{name}.yaml"
    if not path.is_file():
        raise ClosedListError(f"{rel}:1", missing)
    try:
        loaded = load_yaml(path)
    except YamlError as exc:
        raise ClosedListError(f"{rel}:{exc.line}", exc.message) from None
    try:
        value = model.model_validate(loaded.data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(file)"
        raise ClosedListError(f"{rel}:{loaded.line_of(loc)}", f"{where}: {err['msg']}") from None
    return value, loaded


def load_closed_list(concepts_dir: Path, name: str) -> ClosedList:
    closed, loaded = load_concept(concepts_dir, name, ClosedList, f"missing closed list file {name!r}")
    if closed.name != name:
        raise ClosedListError(
            f"concepts/{name}.yaml:{loaded.line_of(('list',))}", f"name is {closed.name!r}, expected {name!r}"
        )
    return closed
