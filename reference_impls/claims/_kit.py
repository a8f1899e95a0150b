"""What several claim checks share: comparisons that carry their own reason text, and readers of run metrics.

A claim check returns `(holds, reason)`. Most are a few comparisons of one arm's number against another's,
perhaps scaled ("A below 0.7 x B", "A above B"), each written into the reason as `A 1.23 vs 0.7 x B 2.34`.
`vs` builds such a comparison as a `Part` (whether it holds, and its text); `verdict` joins parts: the claim
holds when every part does, and the reason lists the parts' texts in order. `note` is a part that only
reports. A value that is not finite (nan, inf) fails its comparison.

Torch-free, like the registry. Every paper result's code hash covers this file (and a sweep's, through the
claim modules that declare its methods), so an edit here makes every committed result stale: change the
wording of a reason only on purpose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..registry.specs import Results, Verdict, finite


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
        return self.value if self.factor == 1.0 else self.factor * self.value

    def admits(self, subject: float) -> bool:
        limit = self.limit
        if self.upper:
            return subject < limit if self.strict else subject <= limit
        return subject > limit if self.strict else subject >= limit

    def text(self, digits: int) -> str:
        scale = "" if self.factor == 1.0 else f"{self.factor:g} x "
        return f"{scale}{self.name} {self.limit:.{digits}f}"


def below(name: str, value: float, factor: float = 1.0, *, strict: bool = True) -> Bound:
    """The subject must be under `factor` x `value` (at most, with `strict=False`)."""
    return Bound(name, value, factor, upper=True, strict=strict)


def above(name: str, value: float, factor: float = 1.0, *, strict: bool = True) -> Bound:
    """The subject must be over `factor` x `value` (at least, with `strict=False`)."""
    return Bound(name, value, factor, upper=False, strict=strict)


@dataclass(frozen=True)
class Part:
    """One condition of a claim and the text that reports it."""

    holds: bool
    text: str

    def wrap(self, before: str = "", after: str = "") -> Part:
        """The same condition with context around its text (a unit, the numbers it was not judged on)."""
        return Part(self.holds, before + self.text + after)


def vs(name: str, value: float, *bounds: Bound, digits: int = 2) -> Part:
    """`name value vs bound and bound ...`; holds when every value is finite and the subject meets every
    bound."""
    holds = finite(value, *(b.value for b in bounds)) and all(b.admits(value) for b in bounds)
    return Part(holds, f"{name} {value:.{digits}f} vs " + " and ".join(b.text(digits) for b in bounds))


def note(text: str) -> Part:
    """Context the verdict does not depend on."""
    return Part(True, text)


def verdict(*parts: Part, sep: str = "; ") -> Verdict:
    """The claim holds when every part holds; the reason is the parts' texts joined by `sep`."""
    return all(p.holds for p in parts), sep.join(p.text for p in parts)


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


def same_size(r: Results, labels: tuple[str, ...]) -> tuple[bool, str]:
    """Whether every arm has the same total parameter count, and the sentence that says so."""
    sizes = {r[label].size.params_total for label in labels}
    same = len(sizes) == 1
    return same, "same parameter count in every arm" if same else f"parameter counts differ: {sorted(sizes)}"


def decode_rate(r: Results, label: str) -> float:
    """Decode tokens per second of a run measured for speed (nan otherwise)."""
    speed = r[label].speed
    return math.nan if speed is None else float(speed.decode_tokens_per_s)


def kv_bytes(r: Results, label: str) -> float:
    speed = r[label].speed
    return math.nan if speed is None else float(speed.kv_cache_bytes)


def speed_text(r: Results, label: str) -> str:
    """`; <label>: prefill xA, decode xB vs dense` for a run measured for speed, else nothing."""
    speed = r[label].speed
    if speed is None or speed.decode_speedup is None or speed.prefill_speedup is None:
        return ""
    return f"; {label}: prefill x{speed.prefill_speedup:.2f}, decode x{speed.decode_speedup:.2f} vs dense"
