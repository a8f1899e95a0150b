"""The result record of a reproduction or pruning run: config, library versions, timings, results."""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kb.fsutil import write_text_atomic


@dataclass
class MethodResult:
    method: str
    sparsity_target: float
    sparsity_actual: float
    ppl: float
    prune_seconds: float
    eval_seconds: float
    config: dict[str, Any] = field(default_factory=dict)


def versions() -> dict[str, str]:
    import torch
    import transformers

    from kb import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "kb": __version__,
    }


def _finite_or_str(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf/nan
    if isinstance(value, dict):
        return {k: _finite_or_str(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_str(v) for v in value]
    return value


def to_json(record: dict[str, Any]) -> str:
    return json.dumps(_finite_or_str(record), indent=2, sort_keys=False) + "\n"


def write_report(path: Path, record: dict[str, Any]) -> None:
    """Write atomically: readers (and Ctrl-C) never see a partial file."""
    write_text_atomic(path, to_json(record))


def result_dict(result: MethodResult) -> dict[str, Any]:
    return asdict(result)
