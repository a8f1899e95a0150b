"""What several claim checks share: comparisons judged with intervals, the three-valued verdict, and readers of
run metrics.

A claim check returns a `Verdict`. Most claims are a few comparisons of one arm's number against another's,
perhaps scaled ("A below 0.7 x B", "A above B"). The numbers a `Results` gives (`r.ppl`, `r.acc`, ...) are
`Measured`: they keep their windows, items or timed repeats over every calibration draw. `vs` judges a
comparison with a 90% paired bootstrap interval (`registry.measured`) on `A / (c x B)` (a ratio, for positive
quantities such as perplexity or speed) or on `A - c x B` (a difference: accuracy, or a difference of gains):

- holds when the whole interval lies on the claimed side,
- does not hold when the whole interval lies on the other side,
- inconclusive otherwise.

A number without units (a parameter count, a byte count) is exact: its interval is its point, so it only holds
or fails. A value that is not finite (nan, inf) fails its comparison. `check` is a yes/no condition (exact),
`note` reports only. `verdict` joins parts: the claim holds when every part holds, does not hold when any part
fails, and is inconclusive otherwise; the reason lists each part's text, with each comparison's estimate and
interval, in order.

Torch-free, like the registry. Every paper result's code hash covers this file (and a sweep's, through the
claim modules that declare its methods), so an edit here makes every committed result stale: change the
wording of a reason only on purpose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..registry.measured import LEVEL, describe_units, lift, quantiles, replicates
from ..registry.specs import Comparison, Part, Results, State, Verdict, combine, finite

__all__ = ["Part", "above", "below", "check", "note", "verdict", "vs"]


@dataclass(frozen=True)
class Bound:
    """The other side of a comparison: `factor` x the value of `name`, which the subject must stay under
    (or over)."""

    name: str
    value: float
    factor: float = 1.0
    upper: bool = True  # the subject must be below (True) or above (False) the bound
    strict: bool = True  # `<` / `>` rather than `<=` / `>=`

    @property
    def limit(self) -> float:
        return self.value if self.factor == 1.0 else self.factor * lift(self.value)

    def text(self, digits: int) -> str:
        scale = "" if self.factor == 1.0 else f"{self.factor:g} x "
        return f"{scale}{self.name} {float(self.value):.{digits}f}"


def below(name: str, value: float, factor: float = 1.0, *, strict: bool = True) -> Bound:
    """The subject must be under `factor` x `value` (at most, with `strict=False`)."""
    return Bound(name, value, factor, upper=True, strict=strict)


def above(name: str, value: float, factor: float = 1.0, *, strict: bool = True) -> Bound:
    """The subject must be over `factor` x `value` (at least, with `strict=False`)."""
    return Bound(name, value, factor, upper=False, strict=strict)


def _state(bound: Bound, low: float, high: float, threshold: float) -> State:
    """Where the interval [low, high] of the statistic lies against `threshold` on the bound's claimed side."""
    if bound.upper:
        holds = high < threshold if bound.strict else high <= threshold
        fails = low >= threshold if bound.strict else low > threshold
    else:
        holds = low > threshold if bound.strict else low >= threshold
        fails = high <= threshold if bound.strict else high < threshold
    return "holds" if holds else "does not hold" if fails else "inconclusive"


def compare(subject: float, bound: Bound) -> Comparison:
    """`subject` against one bound, with its interval."""
    s, limit = lift(subject), lift(bound.limit)
    if not finite(float(s), float(limit)):
        return Comparison("does not hold", "difference", math.nan, math.nan, math.nan, "")
    ratio = s.ratio_scale and limit.ratio_scale and float(s) > 0 and float(limit) > 0
    stat = lift(s / limit if ratio else s - limit)
    threshold = 1.0 if ratio else 0.0
    reps = replicates(stat)
    low, high = (float(stat), float(stat)) if reps is None else quantiles(reps)
    units = "" if reps is None else describe_units(stat)
    state = _state(bound, low, high, threshold)
    return Comparison(state, "ratio" if ratio else "difference", float(stat), low, high, units)


def interval_text(c: Comparison) -> str:
    """`ratio 0.291 [0.270, 0.313]` (or `exact` for a comparison without units)."""
    if not math.isfinite(c.estimate):
        return "not finite"
    if not c.units:
        return "exact"
    return f"{c.scale} {c.estimate:.3g} [{c.low:.3g}, {c.high:.3g}]"


def vs(name: str, value: float, *bounds: Bound, digits: int = 2) -> Part:
    """`name value vs bound (interval) and bound (interval) ...`: one comparison per bound."""
    comparisons = tuple(compare(value, b) for b in bounds)
    sides = " and ".join(
        f"{b.text(digits)} ({interval_text(c)})" for b, c in zip(bounds, comparisons, strict=True)
    )
    return Part(f"{name} {float(value):.{digits}f} vs {sides}", comparisons)


def check(ok: bool, text: str) -> Part:
    """A yes/no condition that is not a comparison of measured numbers (exact): holds or does not hold."""
    return Part(text, check="holds" if ok else "does not hold")


def note(text: str) -> Part:
    """Context the verdict does not depend on."""
    return Part(text, judged=False)


def _footer(parts: tuple[Part, ...]) -> str:
    units = sorted({c.units for p in parts for c in p.comparisons if c.units})
    if not units:
        return ""
    return f" [{LEVEL:.0%} paired bootstrap intervals over {'; '.join(units)}]"


def verdict(*parts: Part, sep: str = "; ") -> Verdict:
    """Every judged part holds: holds; any fails: does not hold; else inconclusive. The reason is the parts' texts
    joined by `sep`, then what the intervals resampled."""
    state = combine([p.state for p in parts if p.judged])
    return Verdict(state, sep.join(p.text for p in parts) + _footer(parts), parts)


def fail(reason: str) -> Verdict:
    """A claim that cannot be judged because its evidence is missing: does not hold, with the reason."""
    return Verdict("does not hold", reason, (check(False, reason),))


# ---- readers of a run's metrics and outcome shared by several claims ---------------------------------------
def details(r: Results, label: str) -> dict[str, Any]:
    """The evidence a run's method reported (`Outcome.details`), empty for the dense baseline."""
    outcome = r.outcome(label)
    return dict(outcome.details) if outcome is not None else {}


def detail(r: Results, label: str, key: str) -> object:
    """One entry of a run's `Outcome.details` (None when absent)."""
    outcome = r.outcome(label)
    return None if outcome is None else outcome.details.get(key)


def total_params(r: Results, label: str) -> int:
    return int(r[label].size.params_total)


def decoder_params(r: Results, label: str) -> int:
    return int(r[label].size.params_decoder)


def same_size(r: Results, labels: tuple[str, ...]) -> Part:
    """The check that every arm has the same total parameter count, with the sentence that says so."""
    sizes = {r[label].size.params_total for label in labels}
    same = len(sizes) == 1
    return check(
        same, "same parameter count in every arm" if same else f"parameter counts differ: {sorted(sizes)}"
    )


def kv_bytes(r: Results, label: str) -> float:
    speed = r[label].speed
    return math.nan if speed is None else float(speed.kv_cache_bytes)


def speed_text(r: Results, label: str) -> str:
    """`; <label>: prefill xA, decode xB vs dense` for a run measured for speed, else nothing."""
    speed = r[label].speed
    if speed is None or speed.decode_speedup is None or speed.prefill_speedup is None:
        return ""
    return f"; {label}: prefill x{speed.prefill_speedup:.2f}, decode x{speed.decode_speedup:.2f} vs dense"
