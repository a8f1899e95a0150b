"""Torch-free option types shared by every weight-pruning method.

Each method's config subclasses `SparsityConfig`; all are frozen pydantic models with `extra="forbid"`, so a
misspelt `--set key=value` is rejected instead of silently ignored.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kb.errors import KBError

_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_pattern(text: str) -> tuple[int, int]:
    """`"2:4"` -> `(2, 4)`: prune `n` of every `m` consecutive input weights (upstream convention)."""
    match = _PATTERN.match(text)
    if not match:
        raise KBError(f"malformed N:M pattern {text!r}: expected two integers like 2:4")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise KBError(f"bad N:M pattern {text!r}: need 0 < N < M (N weights pruned in every group of M)")
    return n, m


def check_sparsity(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise KBError(f"sparsity must be in [0, 1), got {value}")
    return value


class SparsityConfig(BaseModel):
    """What to prune: a fraction of weights (`sparsity`) or an N:M pattern (`pattern`, which wins).

    With a pattern, `sparsity` is forced to n/m, as the upstream codes do.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sparsity: float = Field(0.5, ge=0.0, lt=1.0)
    pattern: tuple[int, int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _pattern_sets_sparsity(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("pattern") is not None:
            pattern = data["pattern"]
            if isinstance(pattern, str):
                pattern = parse_pattern(pattern)
            n, m = (int(v) for v in pattern)
            if not 0 < n < m:
                raise ValueError(f"pattern {n}:{m} needs 0 < N < M")
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
