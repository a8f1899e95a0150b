"""Torch-free option types shared by every weight-pruning method.

Each method's config subclasses `SparsityConfig`; all are frozen pydantic models with `extra="forbid"`, so a
misspelt `--set key=value` is rejected instead of silently ignored. The bounds of `sparsity` and `pattern` are
the registry's (`registry.specs.TARGET_BOUNDS`, `check_target`), the one table every target is checked against.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from kb.errors import KBError

from ..registry.specs import check_target, parse_pattern

__all__ = ["SparsityConfig", "build_config", "parse_assignments", "parse_pattern"]


def _sparsity(value: float) -> float:
    check_target("sparsity", value)  # the bounds live in one table: `registry.specs.TARGET_BOUNDS`
    return value


class SparsityConfig(BaseModel):
    """What to prune: a fraction of weights (`sparsity`) or an N:M pattern (`pattern`, which wins).

    With a pattern, `sparsity` is forced to n/m, as the upstream codes do.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sparsity: Annotated[float, AfterValidator(_sparsity)] = 0.5
    pattern: tuple[int, int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _pattern_sets_sparsity(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("pattern") is not None:
            pattern = data["pattern"]
            check_target("pattern", pattern)  # a string "N:M" or a pair of ints, 0 < N < M
            n, m = parse_pattern(pattern) if isinstance(pattern, str) else pattern
            data = {**data, "pattern": (n, m), "sparsity": n / m}
        return data


def parse_assignments(items: list[str] | None) -> dict[str, Any]:
    """`["blocksize=64", "scope=row"]` -> `{"blocksize": 64, "scope": "row"}` (values parsed as JSON when possible)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise KBError(f"--set expects key=value, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def build_config(cls: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """Validate `values` with a method's config class; any problem becomes one `KBError` line."""
    try:
        return cls(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        owner = cls.__module__.rsplit(".", 1)[-1]
        raise KBError(f"invalid {owner} option {where}: {first['msg']}") from None
