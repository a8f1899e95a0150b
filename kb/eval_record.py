"""The result of `kb eval`: a model's scores on lm-evaluation-harness tasks, with what produced them.

Kept apart from `kb.results` (the reproduction and sweep records the site reads): an evaluation is of one model,
not of a paper's comparison, and its numbers come from lm-evaluation-harness, not from the harness's own loops.
Torch-free, so it can be read and validated anywhere.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from .results import Machine, _Strict

EVAL_SCHEMA_VERSION: Literal[1] = 1


class TaskScore(_Strict):
    """One task's scores: metric name (lm-eval's, without its filter suffix) -> value, and its standard error."""

    task: str
    version: (
        str | None
    )  # the task's own version, as lm-eval reports it ("1.0"); a changed task changes scores
    n_shot: int | None = Field(ge=0)  # few-shot examples in each prompt
    items: int = Field(ge=0)  # items scored (fewer than `items_total` when --limit was given)
    items_total: int = Field(ge=0)
    metrics: dict[str, float]
    # lm-eval's standard error of each metric (bootstrap or analytic, as the metric defines it)
    stderr: dict[str, float | None] = Field(default_factory=dict)
    # where the task's data comes from, as lm-eval's task config names it (`dataset_path`, `dataset_name`): a Hub
    # dataset id such as "google/boolq", or a `datasets` builder for local files ("json")
    dataset: str | None = None
    dataset_config: str | None = None


class EvalRecord(_Strict):
    schema_version: Literal[1] = EVAL_SCHEMA_VERSION
    model: str  # what the user named: a saved directory, a hub id, tiny-llama, random-llama
    source: str  # where the weights came from
    tasks: list[TaskScore]
    # every option the scores depend on (few-shot, limit, batch size, seeds, ...)
    config: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)  # python, torch, transformers, lm_eval, kb
    machine: Machine
    total_seconds: float = Field(ge=0)
    produced: dt.date
    # caveats a reader must see next to the numbers (e.g. word vs token perplexity)
    notes: list[str] = Field(default_factory=list)
