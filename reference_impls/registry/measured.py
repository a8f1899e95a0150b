"""Numbers that remember how they were measured, and the paired bootstrap that puts an interval on a comparison.

A claim compares arms: "Wanda's perplexity is below half of magnitude's". Each arm's number comes from units
measured one by one (the perplexity windows, the probe items, the KV-cache windows, the timed repeats) in one or
more calibration draws. `Measured` is that number, still a `float` for everything a claim already does with it,
that also keeps its units (`Sample`): `values[d][u]` for draw d and unit u, and the link that turns their mean
into the number (`exp-mean`: perplexity is exp of the mean NLL; `mean`: accuracy is the mean hit).

Arithmetic on `Measured` values builds an expression over its leaves, so "the gain at 70% exceeds the gain at
60%" is written as `(w7 - d7) - (w6 - d6)` and can still be resampled. `interval` draws `REPS` bootstrap
replicates with a fixed seed: one resampling of the calibration draws shared by every leaf (the draws are paired:
draw d is the same calibration set in every arm), and one resampling of the units per `group` (leaves measured on
the same windows or items resample them together, so the comparison is paired); a leaf without a group (timed
repeats) resamples its own units. Each replicate recomputes every leaf from the resampled units and then the
expression; the interval is the central `LEVEL` share of the replicates (percentile bootstrap).

A number without units (a parameter count, a byte count, a quantity a method computed) is exact: its interval is
the point. Torch-free; numpy is imported only when an interval is computed.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

LEVEL = 0.90  # central share of the bootstrap replicates
REPS = 2000  # bootstrap replicates per comparison
SEED = 20261207  # the bootstrap's seed: fixed, recorded in every result

Link = Literal["mean", "exp-mean"]
Env = Mapping[int, Any]  # leaf id -> its value (a float, or an array of replicate values)


@dataclass(frozen=True, eq=False)
class Sample:
    """One arm's measurement unit by unit. `values[d][u]`: calibration draw d, unit u (every draw has the same
    units). `group` names the units (e.g. `ppl-windows`): samples of one group were measured on the same units and
    are resampled together; None: units of their own (timed repeats)."""

    values: tuple[tuple[float, ...], ...]
    link: Link
    group: str | None
    unit: str  # what one unit is, for the reason text ("window", "item", "repeat")

    @property
    def draws(self) -> int:
        return len(self.values)

    @property
    def units(self) -> int:
        return len(self.values[0]) if self.values else 0

    def point(self) -> float:
        flat = [v for draw in self.values for v in draw]
        mean = math.fsum(flat) / len(flat) if flat else math.nan
        if self.link == "mean":
            return mean
        return math.exp(mean) if mean < 700 else math.inf


def sample(values: Sequence[Sequence[float]], link: Link, group: str | None, unit: str) -> Sample | None:
    """A `Sample` of per-draw unit values, or None when there is nothing to resample (no draw, or a draw without
    units, or draws of different lengths)."""
    rows = tuple(tuple(float(v) for v in draw) for draw in values)
    if not rows or not rows[0] or any(len(r) != len(rows[0]) for r in rows):
        return None
    return Sample(rows, link, group, unit)


class Measured(float):
    """A float that keeps the samples it was computed from (`leaves`) and how (`formula`, over the leaves' values)."""

    leaves: dict[int, Sample]
    formula: Callable[[Env], Any]
    ratio_scale: bool  # a positive quantity whose comparisons read best as ratios (perplexity, NLL, speed)

    def __new__(
        cls, value: float, leaves: dict[int, Sample], formula: Callable[[Env], Any], ratio_scale: bool
    ) -> Measured:
        self = super().__new__(cls, value)
        self.leaves = leaves
        self.formula = formula
        self.ratio_scale = ratio_scale
        return self

    # ---- arithmetic builds an expression over the union of both sides' leaves ----
    def _combine(self, other: float, op: Callable[[Any, Any], Any], ratio_scale: bool) -> Measured:
        mine, theirs = self.formula, lift(other).formula
        leaves = {**self.leaves, **lift(other).leaves}
        value = float(op(float(self), float(other)))
        return Measured(value, leaves, lambda env: op(mine(env), theirs(env)), ratio_scale)

    def _op(self, other: object, op: Callable[[Any, Any], Any], *, swap: bool = False) -> Any:
        """`self op other` (or `other op self`); a sum, product or quotient of positive quantities stays one
        (ratio scale), a difference does not."""
        if not isinstance(other, (int, float)):
            return NotImplemented
        ratio = op is not operator.sub and self.ratio_scale and lift(other).ratio_scale
        return lift(other)._combine(self, op, ratio) if swap else self._combine(other, op, ratio)

    def __add__(self, other: object) -> Any:
        return self._op(other, operator.add)

    def __radd__(self, other: object) -> Any:
        return self._op(other, operator.add, swap=True)

    def __sub__(self, other: object) -> Any:
        return self._op(other, operator.sub)

    def __rsub__(self, other: object) -> Any:
        return self._op(other, operator.sub, swap=True)

    def __mul__(self, other: object) -> Any:
        return self._op(other, operator.mul)

    def __rmul__(self, other: object) -> Any:
        return self._op(other, operator.mul, swap=True)

    def __truediv__(self, other: object) -> Any:
        return self._op(other, operator.truediv)

    def __rtruediv__(self, other: object) -> Any:
        return self._op(other, operator.truediv, swap=True)

    def __neg__(self) -> Any:
        formula = self.formula
        return Measured(-float(self), self.leaves, lambda env: -formula(env), False)

    def __reduce__(self) -> Any:  # pickled or copied as the plain number
        return (float, (float(self),))

    @property
    def exact(self) -> bool:
        return not self.leaves


def lift(value: float) -> Measured:
    """`value` as a `Measured` (an exact constant unless it already is one)."""
    if isinstance(value, Measured):
        return value
    constant = float(value)
    return Measured(constant, {}, lambda env: constant, True)


def measured(s: Sample | None, value: float | None = None, *, ratio_scale: bool = True) -> Measured:
    """A leaf: the number `s` gives (or `value`, when there is no sample: exact)."""
    if s is None:
        return lift(math.nan if value is None else value)
    key = id(s)
    return Measured(s.point(), {key: s}, lambda env: env[key], ratio_scale)


def mean_of(values: Sequence[float]) -> float:
    """The arithmetic mean, kept as an expression when the values are `Measured`."""
    if not values:
        return math.nan
    total: Any = 0.0
    for v in values:
        total = total + v
    return total / len(values)  # type: ignore[no-any-return]


# ---- the bootstrap -------------------------------------------------------------------------------------------
def replicates(value: Measured, reps: int = REPS, seed: int = SEED) -> Any:
    """`reps` bootstrap replicates of `value` (a numpy array), or None when it is exact."""
    if value.exact:
        return None
    import numpy as np

    leaves = value.leaves
    draws = {s.draws for s in leaves.values()}
    if len(draws) != 1:
        raise ValueError(f"samples of one comparison disagree on the number of draws: {sorted(draws)}")
    k = draws.pop()
    rng = np.random.default_rng(seed)
    pick_draws = rng.integers(0, k, size=(reps, k))
    groups: dict[str, int] = {}
    for s in leaves.values():
        if s.group is not None and groups.setdefault(s.group, s.units) != s.units:
            raise ValueError(f"samples of group {s.group!r} have different numbers of units")
    pick_units = {g: rng.integers(0, n, size=(reps, n)) for g, n in sorted(groups.items())}
    env: dict[int, Any] = {}
    for key, s in sorted(leaves.items(), key=lambda kv: (kv[1].group or "~", kv[1].unit, kv[1].units)):
        units = pick_units[s.group] if s.group is not None else rng.integers(0, s.units, size=(reps, s.units))
        table = np.asarray(s.values, dtype=np.float64)  # (draws, units)
        per_unit = table[pick_draws].mean(axis=1)  # (reps, units): each unit averaged over the drawn draws
        mean = np.take_along_axis(per_unit, units, axis=1).mean(axis=1)  # (reps,)
        env[key] = mean if s.link == "mean" else np.exp(np.minimum(mean, 700.0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.asarray(value.formula(env), dtype=np.float64)


def describe_units(value: Measured) -> str:
    """What was resampled, e.g. `8 windows x 3 draws` or `500 items`."""
    seen: dict[str, tuple[int, str]] = {}
    k = 1
    for s in value.leaves.values():
        k = s.draws
        seen.setdefault(s.group or f"{s.unit}:{id(s)}", (s.units, s.unit))
    kinds: dict[str, int] = {}
    for n, unit in seen.values():
        kinds[unit] = max(kinds.get(unit, 0), n)
    text = ", ".join(f"{n} {unit}s" for unit, n in kinds.items())
    return text + (f" x {k} draws" if k > 1 else "")


def quantiles(values: Any, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` share of the replicates (NaN replicates left out; an infinite one counts at its end).
    No interpolation between replicates, so an infinite replicate never turns a bound into NaN."""
    import numpy as np

    kept = values[~np.isnan(values)]
    if kept.size == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(kept, [tail, 1.0 - tail], method="inverted_cdf")
    return float(low), float(high)


def interval_of(value: float, level: float = LEVEL) -> tuple[float, float]:
    """The bootstrap interval of `value` (its point twice when it is exact)."""
    reps = replicates(lift(value))
    return (float(value), float(value)) if reps is None else quantiles(reps, level)
