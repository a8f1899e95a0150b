"""How many modules a depth method removes: the `--layers` target, its default, and the one-line refusal.

`--layers K` counts removed modules (a whole decoder layer, or one sublayer). Every depth method reads it the
same way: `config.layers` when set, else the method's default share of the model's depth, and a one-line error
when that would leave nothing:

- `layers_to_remove(config, model, default)`: whole layers; at least one layer must stay.
- `modules_to_drop(config, model, target)`: sublayers or blocks of `target` (`attention`, `mlp`, `block`, or
  `joint`: attention and MLP sublayers drawn from one pool); a block method must leave one layer, a sublayer
  method may drop every sublayer of its kind (the residual stream remains).

Defaults differ between papers (ShortGPT and most others remove a quarter, Shortened LLaMA a fifth), so each
method passes its own `default`; `quarter` is the common one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import nn

from kb.errors import KBError

from ..harness.layerwise import decoder_layers


class LayersTarget(Protocol):
    """A method config with the `--layers` target (None: the method's default)."""

    @property
    def layers(self) -> int | None: ...


def quarter(n: int) -> int:
    """A quarter of `n` layers, rounded down, at least one."""
    return max(1, n // 4)


def layers_to_remove(config: LayersTarget, model: nn.Module, default: Callable[[int], int] = quarter) -> int:
    """Whole decoder layers to remove: `config.layers`, or `default(n)` for an n-layer model when unset; a
    one-line error when that leaves no layer."""
    n = len(decoder_layers(model))
    k = config.layers if config.layers is not None else default(n)
    if k >= n:
        raise KBError(f"cannot remove {k} of {n} decoder layers; ask for fewer with --layers")
    return k


def modules_to_drop(config: LayersTarget, model: nn.Module, target: str) -> int:
    """Modules of `target` to drop: `config.layers`, or a quarter of the layers when unset; a one-line error
    beyond what the model has (n - 1 blocks, n attention or MLP sublayers, 2n for `joint`)."""
    n = len(decoder_layers(model))
    k = config.layers if config.layers is not None else quarter(n)
    limit = n - 1 if target == "block" else (2 * n if target == "joint" else n)
    if k > limit:
        raise KBError(f"cannot drop {k} {target} modules of a {n}-layer model; ask for fewer with --layers")
    return k
