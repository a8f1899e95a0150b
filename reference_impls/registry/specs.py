"""The shapes of the registry: method and paper specs, a comparison's runs, and the metrics a claim reads.

Torch-free, like the whole registry."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from kb.results import Figure, Kind, Metrics, Outcome

Target = Literal["sparsity", "pattern", "layers", "kv_budget"]
TARGETS: tuple[str, ...] = (
    "sparsity",
    "pattern",
    "layers",
    "kv_budget",
)  # kv_budget: KV cache / prompt length
Metric = Literal["ppl", "probe", "speed", "cache"]  # cache: the long-context KV-cache evaluation


@dataclass(frozen=True)
class MethodSpec:
    name: str
    module: str  # importable module exposing `Config` and `prune`
    kind: Kind
    summary: str  # one line for `--help`
    needs_calibration: bool
    targets: tuple[Target, ...] = ()  # command-line target options that apply
    paper: str | None = None  # the record id when the method is a paper's own

    @property
    def file(self) -> str:
        return self.module.replace(".", "/") + ".py"


@dataclass(frozen=True)
class Run:
    """One arm of a comparison: `method` with `options` fixed for this arm (they win over `--set`)."""

    label: str
    method: str
    options: Mapping[str, Any] = field(default_factory=dict)
    speed: bool = False  # measure CPU prefill/decode speed against dense for this arm
    probe: bool = True  # score the probe on this arm when the paper's metrics include it
    extra: bool = False  # context the claim does not use: runs only with `kb reproduce --all-runs`


class Results:
    """Every run's metrics by label, as a claim check sees them."""

    def __init__(
        self, metrics: Mapping[str, Metrics], outcomes: Mapping[str, Outcome | None] | None = None
    ) -> None:
        self._metrics = dict(metrics)
        self._outcomes = dict(outcomes or {})

    def __getitem__(self, label: str) -> Metrics:
        return self._metrics[label]

    def labels(self, prefix: str = "") -> list[str]:
        return [k for k in self._metrics if k.startswith(prefix)]

    def outcome(self, label: str) -> Outcome | None:
        """What the run's method said it changed (None for the dense baseline)."""
        return self._outcomes.get(label)

    def ppl(self, label: str) -> float:
        value = self._metrics[label].ppl
        return math.nan if value is None else float(value)

    def cache_ppl(self, label: str) -> float:
        """Continuation perplexity of the KV-cache evaluation (the dense run: full cache)."""
        cache = self._metrics[label].cache
        return math.nan if cache is None else float(cache.ppl)

    def acc(self, label: str) -> float:
        probe = self._metrics[label].probe
        return math.nan if probe is None else float(probe.acc_norm)

    def mean(self, labels: Sequence[str], value: Callable[[str], float]) -> float:
        values = [value(label) for label in labels]
        return sum(values) / len(values) if values else math.nan


Verdict = tuple[bool, str]


@dataclass(frozen=True)
class PaperSpec:
    paper: str  # record id
    method: str  # the paper's own method: `--set` options go to its runs
    runs: tuple[Run, ...]  # after the dense baseline
    claim: str  # may name target options, e.g. "{layers}", filled in from the run's target
    check: Callable[[Results], Verdict]
    defaults: Mapping[str, Any] = field(default_factory=dict)  # targets and data options the CLI may override
    metrics: tuple[Metric, ...] = ("ppl",)
    figures: Callable[[Results], list[Figure]] | None = None  # paper-level plots made from the runs

    @property
    def implementation(self) -> str:
        from . import METHODS  # the joined table; imported late, it imports this module

        return METHODS[self.method].file

    def statement(self, target: Mapping[str, Any]) -> str:
        return self.claim.format(**{t: target.get(t) for t in TARGETS})


def finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)
