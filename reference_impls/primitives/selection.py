"""Which layers or sublayers to remove, given their scores: the selection rules of the depth papers.

- `contiguous_windows(layers, n)`: every run of n consecutive layers (start indices 0 .. L - n).
- `best_window(scores, lowest=True)`: the start whose window score is lowest (or highest); ties go to the
  earlier start.
- `individual(scores, k, lowest=True)`: the k parts with the lowest (or highest) scores, ties by index.
- `reverse_order(layers, k)`: the last k layers (Reassessing Layer Pruning's recommendation).
- `progressive(...)`: greedy removal under a parameter budget, re-scoring the remaining candidates after
  every round of removals (one removal per round is the fully iterative rule).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)


def contiguous_windows(layers: int, n: int) -> list[list[int]]:
    if not 0 < n <= layers:
        raise ValueError(f"a window of {n} layers does not fit {layers} layers")
    return [list(range(s, s + n)) for s in range(layers - n + 1)]


def best_window(scores: Sequence[float], *, lowest: bool = True) -> int:
    """Start index of the best window, scores indexed by start."""
    if not scores:
        raise ValueError("no window to choose from")
    sign = 1.0 if lowest else -1.0
    return min(range(len(scores)), key=lambda s: (sign * scores[s], s))


def individual(scores: Sequence[float], k: int, *, lowest: bool = True) -> list[int]:
    """The k indices with the lowest (or highest) scores, returned sorted."""
    if not 0 < k <= len(scores):
        raise ValueError(f"cannot pick {k} of {len(scores)}")
    sign = 1.0 if lowest else -1.0
    return sorted(sorted(range(len(scores)), key=lambda i: (sign * scores[i], i))[:k])


def reverse_order(layers: int, k: int) -> list[int]:
    if not 0 < k < layers:
        raise ValueError(f"cannot remove the last {k} of {layers} layers")
    return list(range(layers - k, layers))


@dataclass
class Progressive(Generic[C]):
    """The result of `progressive`: removals in order, the cost removed, and the scores of every round."""

    removed: list[C] = field(default_factory=list)
    cost: int = 0
    rounds: list[dict[C, float]] = field(default_factory=list)


def progressive(
    candidates: Sequence[C],
    score: Callable[[list[C]], dict[C, float]],
    cost: Callable[[C], int],
    budget: int,
    remove: Callable[[C], None],
    *,
    per_round: int = 1,
) -> Progressive[C]:
    """Remove candidates, lowest score first, until at least `budget` cost is removed; `score` is called on
    the remaining candidates before every round of at most `per_round` removals."""
    if per_round < 1:
        raise ValueError("per_round must be at least 1")
    remaining = list(candidates)
    result: Progressive[C] = Progressive()
    while result.cost < budget:
        if not remaining:
            raise ValueError(f"the candidates hold only {result.cost} of the {budget} to remove")
        scores = score(list(remaining))
        result.rounds.append(dict(scores))
        order = sorted(remaining, key=lambda c: (scores[c], remaining.index(c)))
        for c in order[:per_round]:
            remove(c)
            remaining.remove(c)
            result.removed.append(c)
            result.cost += cost(c)
            if result.cost >= budget:
                break
    return result
