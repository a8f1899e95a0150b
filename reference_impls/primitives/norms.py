"""The parts of a LLaMA-style model around the residual stream that structural edits must keep consistent:
the LM head tied to the input embedding, and the RMSNorms that average over the hidden channels.

- `untie_head(model)`: give the LM head its own copy of a tied input embedding (and say so in the config).
  Needed before anything trains or edits the head alone: with a tied head, a step on the head also moves
  the input embedding, and a save would still write one shared matrix. Partial-layer fine-tuning
  (Reassessing Layer Pruning) calls it. Slicing hidden channels (`groups.compact`) does *not* need it: the
  shared tensor is sliced once, for both roles.
- `kept_channel_scale(kept, total)`: sqrt(total / kept), the factor between an RMSNorm that averages over
  `total` channels of which only `kept` are non-zero and one that averages over the `kept` channels alone.
  RMSNorm(x) = x / sqrt(mean(x^2) + eps) * w, so removing zero channels from the mean divides the output by
  this factor (up to eps).
- `rescale_rmsnorm(model, hidden_before)`: after hidden channels were sliced out, multiply every RMSNorm
  weight by that factor, so that the compact model computes what the masked one (channels zeroed, shapes
  kept) computed, up to eps. A method that wants the compact model to equal its masked reference calls it
  right after `groups.compact`; a method whose paper prunes and then retrains the compact model as it is
  (Minitron) does not. The L0 mask hooks (`l0.MaskHooks`) go the other way with the same factor: the masked
  model averages over the kept channels only, so slicing later changes nothing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..harness.layerwise import input_embedding, model_config, output_embedding


def untie_head(model: nn.Module) -> bool:
    """Give the LM head its own copy of the tied input embedding (so that training the head leaves the input
    embedding alone); returns whether it was tied. The config says so, so a save keeps both matrices."""
    head, embed = output_embedding(model), input_embedding(model)
    if head is None or head.weight is not embed.weight:
        return False
    head.weight = nn.Parameter(embed.weight.detach().clone())
    config = model_config(model)
    config.tie_word_embeddings = False
    text = getattr(config, "get_text_config", None)
    if callable(text):
        text().tie_word_embeddings = False
    return True


def kept_channel_scale(kept: int, total: int) -> float:
    """sqrt(total / kept): how much larger RMSNorm's output is when it averages over the `kept` non-zero
    channels only instead of all `total` (eps aside)."""
    return math.sqrt(total / max(kept, 1))


def rmsnorm_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every RMSNorm weight of the model by parameter name (the per-layer norms and the final norm): the 1-D
    `*norm.weight` parameters, as `groups.hidden_family` lists them."""
    return {n: p for n, p in model.named_parameters() if p.dim() == 1 and n.endswith("norm.weight")}


@torch.no_grad()
def rescale_rmsnorm(model: nn.Module, hidden_before: int) -> float:
    """After hidden channels were sliced out (`model.config.hidden_size` is the new width), multiply every
    RMSNorm weight by `kept_channel_scale(new, hidden_before)`, so each norm's output equals the masked
    model's (the removed channels zero, averaged over `hidden_before`) up to eps. Returns the factor."""
    factor = kept_channel_scale(int(model_config(model).hidden_size), hidden_before)
    for p in rmsnorm_weights(model).values():
        p.mul_(factor)
    return factor
