"""Moving per-unit ratios by one common amount until a weighted total meets a budget (clipped to bounds).

Allocation methods learn or derive a ratio per layer or per linear, then must hit the overall budget
exactly. Where clipping to the bounds (no sparsity below 0 or above 1) breaks the budget, the ratios
that are not clipped all move by the same shift until it holds again, which keeps their differences.
"""

from __future__ import annotations

from collections.abc import Sequence


def shift_to_budget(
    values: Sequence[float], weights: Sequence[float], total: float, lo: float = 0.0, hi: float = 1.0
) -> list[float]:
    """`values` plus one common shift c, each clipped to [lo, hi], with sum(w * clip(v + c)) = `total`
    (bisection to float precision). `total` must lie between sum(w) * lo and sum(w) * hi."""
    if len(values) != len(weights):
        raise ValueError(f"{len(values)} values but {len(weights)} weights")
    whole = sum(weights)
    if not whole * lo - 1e-9 <= total <= whole * hi + 1e-9:
        raise ValueError(f"budget {total} is outside what the bounds [{lo}, {hi}] allow")

    def reached(shift: float) -> float:
        return sum(w * min(hi, max(lo, v + shift)) for v, w in zip(values, weights, strict=True))

    span = (hi - lo) + max(abs(v) for v in values) + 1.0
    down, up = -span, span  # reached(down) = whole * lo <= total <= whole * hi = reached(up)
    for _ in range(100):
        mid = (down + up) / 2
        down, up = (mid, up) if reached(mid) < total else (down, mid)
    return [min(hi, max(lo, v + up)) for v in values]
