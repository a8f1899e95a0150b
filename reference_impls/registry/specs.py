"""The shapes of the registry: method and paper specs, a comparison's runs, and the metrics a claim reads.

Torch-free, like the whole registry."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from kb.errors import KBError

from .measured import Measured, mean_of, measured, sample

if TYPE_CHECKING:
    from kb.results import Figure, Kind, Metrics, Outcome, RunResult

Target = Literal["sparsity", "pattern", "layers", "kv_budget", "params"]
TARGETS: tuple[str, ...] = ("sparsity", "pattern", "layers", "kv_budget", "params")


# ---- targets: the one table of what each accepts --------------------------------------------------
@dataclass(frozen=True)
class Bounds:
    """The values a numeric target takes: an interval (open or closed at each end), or whole numbers from `low`."""

    meaning: str  # what the number is, for the error line
    low: float
    high: float | None = None  # None: no upper bound
    low_closed: bool = True
    high_closed: bool = False
    whole: bool = False  # an int (a count), not a fraction

    def holds(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = self.high is None or (value <= self.high if self.high_closed else value < self.high)
        return above and below

    def text(self) -> str:
        if self.whole and self.high is None:
            return f"a positive integer ({self.meaning})" if self.low == 1 else f"an integer >= {self.low:g}"
        left, right = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
        return (
            f"{self.meaning} in {left}{self.low:g}, {'inf' if self.high is None else f'{self.high:g}'}{right}"
        )


# Every numeric target's bounds, written once. `pattern` is "N:M" with 0 < N < M (`parse_pattern`). `params` is
# the share of the decoder's parameters a width method removes (like `sparsity`, a share removed, the way most
# width methods state their size: LLM-Pruner's ratio, Compresso's target sparsity, K-prune's FLOPs reduction).
TARGET_BOUNDS: Mapping[str, Bounds] = {
    "sparsity": Bounds("a fraction of weights to prune", 0.0, 1.0),
    "layers": Bounds("decoder layers or sublayers to remove", 1, whole=True),
    "kv_budget": Bounds("a fraction of the prompt", 0.0, 1.0, low_closed=False,
                        high_closed=True),
    "params": Bounds("a fraction of the decoder's parameters to remove", 0.0, 1.0, low_closed=False),
}  # fmt: skip


def target_flag(name: str) -> str:
    """The command-line flag of a target: `kv_budget` -> `--kv-budget`."""
    return "--" + name.replace("_", "-")


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


def check_target(name: str, value: Any) -> None:
    """The one check of a target value, whichever way it came in (a flag, a sweep value, a paper's default, a
    run's fixed option): a `KBError` (exit 2) naming the flag when it is out of bounds."""
    flag = target_flag(name)
    if name == "pattern":
        if isinstance(value, str):
            parse_pattern(value)
            return
        if isinstance(value, Sequence) and len(value) == 2 and all(type(v) is int for v in value):
            parse_pattern(f"{value[0]}:{value[1]}")
            return
        raise KBError(f"{flag} must be an N:M pattern like 2:4, got {value!r}")
    bounds = TARGET_BOUNDS.get(name)
    if bounds is None:
        raise KBError(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or (bounds.whole and not float(value).is_integer()) or not bounds.holds(value):
        raise KBError(f"{flag} must be {bounds.text()}, got {value!r}")


def check_targets(target: Mapping[str, Any]) -> None:
    """`check_target` for every entry of a mapping that names a target (other keys are left alone)."""
    for name, value in target.items():
        if name in TARGETS and value is not None:
            check_target(name, value)


def refuse_set_targets(overrides: Mapping[str, Any]) -> None:
    """`--set` carries a method's own options, never a target: a target set there would reach the paper's own
    method and not the other arms. One line naming the flag to use instead."""
    for name, value in overrides.items():
        if name in TARGETS:
            given = value if isinstance(value, str) else json.dumps(value)
            pair = name == "pattern" and isinstance(value, list) and len(value) == 2
            flag_value = f"{value[0]}:{value[1]}" if pair else given
            raise KBError(f"use {target_flag(name)} {flag_value}, not --set {name}={given}: a target goes to every "
                          "arm of the comparison that takes it")  # fmt: skip


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

    def fixed_targets(self) -> frozenset[str]:
        """The targets this arm sets in its `options`, which the comparison's target leaves alone. `sparsity` and
        `pattern` are one target said two ways (a pattern sets the sparsity to N/M): fixing one fixes both."""
        fixed = {name for name in self.options if name in TARGETS}
        return frozenset(fixed | ({"sparsity", "pattern"} if fixed & {"sparsity", "pattern"} else set()))


class Results:
    """Every run's metrics by label, as a claim check sees them: those of the first calibration draw (`r[label]`),
    and each arm's numbers as `Measured` values (`ppl`, `acc`, ...) that keep their per-window, per-item or
    per-repeat units over every draw, so a comparison of them can be given an interval (`claims._stats`)."""

    def __init__(
        self,
        metrics: Mapping[str, Metrics],
        outcomes: Mapping[str, Outcome | None] | None = None,
        draws: Sequence[Mapping[str, Metrics]] = (),
        draw_outcomes: Sequence[Mapping[str, Outcome | None]] = (),
    ) -> None:
        self._metrics = dict(metrics)
        self._outcomes = dict(outcomes or {})
        self._draws = [self._metrics, *(dict(d) for d in draws)]  # every draw's metrics, the first one first
        self._draw_outcomes = [self._outcomes, *(dict(d) for d in draw_outcomes)]
        self._leaves: dict[
            tuple[str, str], Measured
        ] = {}  # one leaf per (metric, label): shared by expressions

    @classmethod
    def of_runs(cls, runs: Sequence[RunResult], later: Sequence[Sequence[RunResult]] = ()) -> Results:
        """The view of a comparison's runs (the first draw) and of its further calibration draws."""
        return cls({r.label: r.metrics for r in runs}, {r.label: r.outcome for r in runs},
                   [{r.label: r.metrics for r in d} for d in later],
                   [{r.label: r.outcome for r in d} for d in later])  # fmt: skip

    def __getitem__(self, label: str) -> Metrics:
        return self._metrics[label]

    @property
    def draws(self) -> int:
        return len(self._draws)

    def labels(self, prefix: str = "") -> list[str]:
        return [k for k in self._metrics if k.startswith(prefix)]

    def outcome(self, label: str) -> Outcome | None:
        """What the run's method said it changed (None for the dense baseline)."""
        return self._outcomes.get(label)

    def _leaf(self, kind: str, label: str, build: Callable[[], Measured]) -> Measured:
        key = (kind, label)
        if key not in self._leaves:
            self._leaves[key] = build()
        return self._leaves[key]

    def _per_draw(
        self, label: str, units: Callable[[Metrics], Sequence[float] | None]
    ) -> list[Sequence[float]]:
        """`units` of `label` in every draw; empty when a draw lacks them (the number is then exact)."""
        found = []
        for draw in self._draws:
            metrics = draw.get(label)
            values = units(metrics) if metrics is not None else None
            if not values:
                return []
            found.append(values)
        return found

    def ppl(self, label: str) -> Measured:
        """Perplexity over the evaluation windows (exp of the mean per-window NLL over windows and draws)."""

        def build() -> Measured:
            value = self._metrics[label].ppl
            units = self._per_draw(label, lambda m: m.window_nll)
            return measured(sample(units, "exp-mean", "ppl-windows", "window"), value)

        return self._leaf("ppl", label, build)

    def _cache(self, label: str, link: Literal["mean", "exp-mean"]) -> Measured:
        cache = self._metrics[label].cache
        units = self._per_draw(label, lambda m: m.cache.window_nll if m.cache else None)
        value = None if cache is None else cache.ppl if link == "exp-mean" else cache.nll
        return measured(sample(units, link, "cache-windows", "window"), value)

    def cache_ppl(self, label: str) -> Measured:
        """Continuation perplexity of the KV-cache evaluation (the dense run: full cache)."""
        return self._leaf("cache_ppl", label, lambda: self._cache(label, "exp-mean"))

    def cache_nll(self, label: str) -> Measured:
        """Mean continuation NLL (nats per token) of the KV-cache evaluation."""
        return self._leaf("cache_nll", label, lambda: self._cache(label, "mean"))

    def acc(self, label: str) -> Measured:
        """Probe accuracy (acc_norm) over the items and draws."""

        def build() -> Measured:
            probe = self._metrics[label].probe
            units = self._per_draw(label, lambda m: m.probe.hits_norm if m.probe else None)
            group = f"probe-items:{probe.task}" if probe else None
            return measured(sample(units, "mean", group, "item"), probe.acc_norm if probe else None,
                            ratio_scale=False)  # fmt: skip

        return self._leaf("acc", label, build)

    def _speed(self, label: str, prefill: bool) -> Measured:
        """A speed-up against the dense model timed alternately with it: the geometric mean of the repeats'
        ratios (resampled in log space)."""
        speed = self._metrics[label].speed

        def ratios(m: Metrics) -> list[float] | None:
            if m.speed is None:
                return None
            return [math.log(x) for x in (m.speed.prefill_ratios if prefill else m.speed.decode_ratios)]

        value = None if speed is None else speed.prefill_speedup if prefill else speed.decode_speedup
        return measured(sample(self._per_draw(label, ratios), "exp-mean", None, "repeat"), value)

    def decode_ratio(self, label: str) -> Measured:
        """Decode rate against the dense model timed alternately with it."""
        return self._leaf("decode_ratio", label, lambda: self._speed(label, prefill=False))

    def prefill_ratio(self, label: str) -> Measured:
        """Prefill speed-up against the dense model timed alternately with it."""
        return self._leaf("prefill_ratio", label, lambda: self._speed(label, prefill=True))

    def reported(
        self, label: str, key: str, units: Callable[[Mapping[str, Any]], Sequence[float] | None],
        value: float | None, *, group: str, unit: str = "window", link: Literal["mean", "exp-mean"] = "mean",
    ) -> Measured:  # fmt: skip
        """A number run `label` reported in its `Outcome.details` under `key`, with the units `units(details)` gives
        in every draw (e.g. a training stand-in's held-out loss, window by window); numbers of one `group` were
        evaluated on the same units and are resampled together."""

        def build() -> Measured:
            per_draw: list[Sequence[float]] = []
            for outcomes in self._draw_outcomes:
                outcome = outcomes.get(label)
                values = units(outcome.details) if outcome is not None else None
                if not values:
                    per_draw = []
                    break
                per_draw.append(values)
            if len(per_draw) != len(self._draws):
                per_draw = []
            return measured(sample(per_draw, link, group, unit), value)

        return self._leaf(f"reported:{key}", label, build)

    def mean(self, labels: Sequence[str], value: Callable[[str], float]) -> float:
        """The mean of one metric over several arms (kept as an expression, so it can be resampled)."""
        return mean_of([value(label) for label in labels])


State = Literal["holds", "does not hold", "inconclusive"]


@dataclass(frozen=True)
class Comparison:
    """One condition judged with an interval: `subject / limit` (scale `ratio`) or `subject - limit` (scale
    `difference`), its point estimate and bootstrap interval (equal to the point when exact), and its state."""

    state: State
    scale: Literal["ratio", "difference"]
    estimate: float
    low: float
    high: float
    units: str  # what was resampled ("8 windows x 3 draws"); "" when exact


@dataclass(frozen=True)
class Part:
    """One part of a claim: its text, the comparisons it rests on, and (for a check that is not a comparison)
    its own state. A part holds when every comparison does, fails when any fails, else is inconclusive. A part that
    is `judged=False` only reports."""

    text: str
    comparisons: tuple[Comparison, ...] = ()
    check: State | None = None  # a yes/no condition (exact): "holds" or "does not hold"
    judged: bool = True

    @property
    def state(self) -> State:
        states = [c.state for c in self.comparisons] + ([self.check] if self.check is not None else [])
        return combine(states)

    def wrap(self, before: str = "", after: str = "") -> Part:
        """The same part with context around its text (a unit, the numbers it was not judged on)."""
        return Part(before + self.text + after, self.comparisons, self.check, self.judged)


def combine(states: Sequence[State]) -> State:
    """Every part holds: holds; any part fails: does not hold; otherwise inconclusive."""
    if any(s == "does not hold" for s in states):
        return "does not hold"
    if all(s == "holds" for s in states):
        return "holds"
    return "inconclusive"


@dataclass(frozen=True)
class Verdict:
    """What a claim check returns: the three-valued state, the reason text, and the judged parts."""

    state: State
    reason: str
    parts: tuple[Part, ...] = ()

    @property
    def holds(self) -> bool:
        return self.state == "holds"


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
    draws: int = (
        1  # calibration draws: 3 for a claim pre-registered as near its bound (data/verdict-preregistration)
    )

    @property
    def implementation(self) -> str:
        from . import METHODS  # the joined table; imported late, it imports this module

        return METHODS[self.method].file

    def statement(self, target: Mapping[str, Any]) -> str:
        return self.claim.format(**{t: target.get(t) for t in TARGETS})


def finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)
