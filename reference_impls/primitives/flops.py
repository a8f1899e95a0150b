"""Forward FLOPs of the prunable structures of a LLaMA-style decoder: what a width budget in FLOPs counts.

A budget in FLOPs (K-prune's "reduce the FLOPs by 25%") needs the cost of every unit a width method can
remove, from the model's current shapes. Per token, a unit costs two FLOPs (one multiply, one add) for
every weight it owns in the projections, plus, for attention, the cost of its query heads' score and
value products: with causal attention over a window of `seq_len` tokens a token attends to (seq_len + 1) / 2
keys on average, and each of the two products costs 2 * head_dim per key, so 2 * head_dim * (seq_len + 1)
per query head. Norms, rotary embeddings, softmax and the SiLU gate are left out (they are linear in the
width and small). "Prunable FLOPs" are the FLOPs of every attention and MLP unit of the decoder layers;
embeddings, the LM head and the norms are not prunable by head and channel removal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from torch import nn

from . import groups as G


def unit_flops(model: nn.Module, family: G.Family, seq_len: int) -> int:
    """Forward FLOPs per token of one group of `family` (a KV group, a query head or an MLP channel)."""
    params = dict(model.named_parameters())
    linear = 2 * sum(
        m.block * (params[m.param].numel() // params[m.param].shape[m.dim])
        for m in family.members
        if m.param.endswith("weight")
    )
    if family.kind == "kv-head":
        assert family.layer is not None
        heads, kv = G.attention_widths(model, family.layer)
        return linear + (heads // kv) * 2 * G.head_dim(model) * (seq_len + 1)
    if family.kind == "q-head":
        return linear + 2 * G.head_dim(model) * (seq_len + 1)
    if family.kind == "mlp":
        return linear
    raise ValueError(f"no FLOPs count for {family.kind} groups")


def families_flops(model: nn.Module, families: Iterable[G.Family], seq_len: int) -> int:
    """Forward FLOPs per token of every group of the given families."""
    return sum(f.units * unit_flops(model, f, seq_len) for f in families)


def prunable_flops(model: nn.Module, seq_len: int, attention: str = "kv-head") -> int:
    """Forward FLOPs per token of all attention units and MLP channels of the model as it is now."""
    layers = range(len(G._layers(model)))
    families = [f for i in layers for f in G.layer_families(model, i, attention)]  # type: ignore[arg-type]
    return families_flops(model, families, seq_len)


def kept_flops(
    model: nn.Module, removals: Mapping[G.Family, Sequence[int]], families: Iterable[G.Family], seq_len: int
) -> int:
    """FLOPs per token the given families keep after removing `removals` (families not removed from keep all)."""
    total = 0
    for f in families:
        kept = f.units - len(set(removals.get(f, ())))
        total += kept * unit_flops(model, f, seq_len)
    return total
