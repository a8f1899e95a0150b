"""Sizing a width method from `--params`: the share of the decoder's parameters it should remove.

Width methods state their size in their own terms: LLM-Pruner and its relatives a share of attention groups and
MLP channels per layer, Compresso a global share of both, LoRAPrune a final per-layer ratio, Minitron the share
of MLP channels kept, Sheared-LLaMA a target shape, the Minitron approach a depth student's layer count, K-prune
a FLOPs budget. With `Config.params` set (the `params` target), a method derives that option from the target.

`share_for_params` is the search they share. The method passes `removed(share)`: how many decoder parameters its
size knob at `share` (a number in [0, 1), where a larger share never removes less) would remove, computed from
the model's shapes without pruning, with the method's own rounding. The search returns the share whose removal
comes closest to the target, and refuses in one line (exit 2) a target the method cannot reach on this model
within `contract.PARAMS_TOLERANCE`, the slack the harness then allows the outcome (`check_outcome`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from kb.errors import KBError

from ..harness.contract import params_tolerance
from ..harness.layerwise import decoder_layers

STEPS = 1 << 16  # the grid of shares searched: finer than one MLP channel of any model here


def decoder_params(model: nn.Module) -> int:
    """Parameters of the decoder layers (what `--params` is a share of; embedding and head excluded)."""
    return sum(p.numel() for p in decoder_layers(model).parameters())


def share_for_params(model: nn.Module, params: float, removed: Callable[[float], int], *, name: str) -> float:
    """The share in [0, 1) (on a grid of `STEPS`) whose `removed(share)` is closest to `params` of the decoder's
    parameters (the smaller share on a tie); a `KBError` naming `name` when even that one misses the target by
    more than `contract.params_tolerance()`."""
    total = decoder_params(model)
    want = params * total
    lo, hi = 0, STEPS  # bisect for the first share whose removal reaches the target (STEPS: none does)
    while lo < hi:
        mid = (lo + hi) // 2
        if removed(mid / STEPS) >= want:
            hi = mid
        else:
            lo = mid + 1
    best = min((i for i in (lo - 1, lo) if 0 <= i < STEPS), key=lambda i: (abs(removed(i / STEPS) - want), i))
    reached = removed(best / STEPS) / total
    if abs(reached - params) > params_tolerance():
        raise KBError(f"{name}: --params {params} cannot be met on this model: the nearest size it can prune to "
                      f"removes {reached:.3f} of the decoder's parameters")  # fmt: skip
    return best / STEPS
