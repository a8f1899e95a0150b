"""Heterogeneous sublayers: remove attention and MLP sublayers one at a time by loss impact per parameter.

Paper:    "Rethinking the Impact of Heterogeneous Sublayers in Transformers". ICLR 2025 submission
          (OpenReview qG1S5eXMzx); authors not confirmed, no arXiv id or code found. Record id:
          `heterogeneous-sublayers`.
Official: none found.
Idea:     Attention and feed-forward sublayers differ in size and in how much the model needs them, so
          score each separately by a normalized relative impact factor, the relative change of the loss
          when that sublayer alone is removed divided by its number of parameters, and prune progressively:
          remove the sublayer with the smallest factor, re-score, repeat until the parameter budget is met.
Differs:  The formula is a reconstruction from the abstract (no paper text or code was reachable):
          impact = (L_without - L_current) / L_current on a small calibration slice, factor = impact /
          parameters. `per_round` removes several sublayers between re-scorings to bound the cost (1, the
          default, is fully iterative). A layer that loses both sublayers is removed outright. `unit="block"`
          is the comparison arm: whole blocks with the lowest Block Influence (ShortGPT), as many as the same
          parameter budget needs.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kb.errors import KBError
from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers
from .harness.structure import remove_layers, skip_sublayers
from .primitives.blocks import block_influence, layer_io_cosine, mean_loss, removal_losses
from .primitives.selection import progressive

Sub = tuple[str, int]  # ("attention" | "mlp", dense layer index)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fraction: float = Field(0.2, gt=0.0, lt=1.0)  # share of decoder parameters to remove (at least)
    unit: Literal["sublayer", "block"] = "sublayer"
    per_round: int = Field(1, ge=1)  # sublayers removed between re-scorings (1 = fully progressive)
    examples: int = Field(4, ge=1)  # calibration sequences of the scoring slice
    example_len: int = Field(128, ge=2)


# ---- pure math ------------------------------------------------------------------------------------
def relative_impact(loss_without: float, loss_now: float) -> float:
    return (loss_without - loss_now) / loss_now


def normalized_impact(loss_without: float, loss_now: float, params: int) -> float:
    """Relative loss change per parameter removed (the normalized relative impact factor)."""
    return relative_impact(loss_without, loss_now) / params


# ---- model driver (mutates `model` in place) ------------------------------------------------------
def sublayer_params(model: nn.Module, sub: Sub) -> int:
    """Parameters a skip frees: the sublayer and its pre-norm."""
    layer: Any = decoder_layers(model)[sub[1]]  # transformers' decoder layer: its parts are read as Any
    if sub[0] == "attention":
        parts: tuple[nn.Module, ...] = (layer.self_attn, layer.input_layernorm)
    else:
        parts = (layer.mlp, layer.post_attention_layernorm)
    return sum(p.numel() for m in parts for p in m.parameters())


def _sublayers(model: nn.Module, config: Config, budget: int, ctx: Context, ids: torch.Tensor) -> Outcome:
    n = len(decoder_layers(model))
    candidates: list[Sub] = [(kind, i) for i in range(n) for kind in ("attention", "mlp")]
    sizes = {c: sublayer_params(model, c) for c in candidates}
    progress_total = [0]

    def score(remaining: list[Sub]) -> dict[Sub, float]:
        now = mean_loss(model, ids, batch_size=ctx.batch_size)
        losses = removal_losses(model, ids, remaining, batch_size=ctx.batch_size)
        progress_total[0] += 1
        ctx.log(f"heterogeneous-sublayers: round {progress_total[0]}, {len(remaining)} candidates scored")
        return {c: normalized_impact(v, now, sizes[c]) for c, v in zip(remaining, losses, strict=True)}

    def remove(c: Sub) -> None:
        skip_sublayers(model, **{c[0]: [c[1]]})  # type: ignore[arg-type]

    result = progressive(candidates, score, lambda c: sizes[c], budget, remove, per_round=config.per_round)
    both = sorted(i for i in range(n) if ("attention", i) in result.removed and ("mlp", i) in result.removed)
    ordered = sorted(result.removed, key=lambda c: (c[1], c[0]))
    subs = [f"{i}.{'attn' if kind == 'attention' else 'mlp'}" for kind, i in ordered if i not in both]
    if both:
        remove_layers(model, both)
    details: dict[str, object] = {
        "unit": "sublayer", "order": [f"{i}.{kind}" for kind, i in result.removed], "rounds": len(result.rounds),
        "params_removed": result.cost, "budget": budget,
        "first_round_factor": {f"{i}.{kind}": float(f"{v:.4g}") for (kind, i), v in result.rounds[0].items()},
    }  # fmt: skip
    return Outcome(kind="depth", removed_layers=both, removed_sublayers=subs, details=details)


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Remove at least `config.fraction` of the decoder parameters, by sublayers (progressive) or whole blocks."""
    layers = decoder_layers(model)
    total = sum(p.numel() for p in layers.parameters())
    budget = math.ceil(config.fraction * total)
    if config.unit == "sublayer":
        return _sublayers(model, config, budget, ctx, calib[: config.examples, : config.example_len])
    per_layer = [sum(p.numel() for p in layer.parameters()) for layer in layers]
    bi = [block_influence(c) for c in layer_io_cosine(model, calib, batch_size=ctx.batch_size)]
    order = sorted(range(len(bi)), key=lambda i: (bi[i], i))  # lowest Block Influence first
    drop, removed = [], 0
    for i in order:
        if removed >= budget:
            break
        drop.append(i)
        removed += per_layer[i]
    if len(drop) >= len(layers):
        raise KBError(f"removing {config.fraction:.0%} of the parameters by whole blocks leaves no layer")
    remove_layers(model, drop)
    details = {"unit": "block", "block_influence": [round(b, 6) for b in bi], "params_removed": removed,
               "budget": budget}  # fmt: skip
    return Outcome(kind="depth", removed_layers=sorted(drop), details=details)
