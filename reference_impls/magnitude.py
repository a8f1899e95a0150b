"""Magnitude pruning: the baseline every one-shot LLM-pruning paper compares against.

Paper:    no paper of its own; the baseline of SparseGPT (record `sparsegpt`) and Wanda (record `wanda`).
Idea:     remove the weights with the smallest |W|; no calibration data, no weight update.
Official: locuslab/wanda `lib/prune.py::prune_magnitude` (one threshold per weight matrix; N:M per row).
Differs:  exact counts (`floor(numel * s)` per matrix, or per row with `scope="row"`) chosen with topk
          instead of a sorted threshold; runs on any device.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import decoder_layers, prunable_linears, set_weight, small_ops
from .harness.options import SparsityConfig
from .primitives.masks import matrix_mask, nm_mask, row_mask


class Config(SparsityConfig):
    scope: Literal["matrix", "row"] = "matrix"  # comparison group for unstructured sparsity


# ---- pure tensor math -----------------------------------------------------------------------
def magnitude_mask(weight: torch.Tensor, config: Config) -> torch.Tensor:
    """(out, in) -> bool mask, True = prune."""
    score = weight.abs()
    if config.pattern is not None:
        return nm_mask(score, *config.pattern)
    return (
        matrix_mask(score, config.sparsity) if config.scope == "matrix" else row_mask(score, config.sparsity)
    )


# ---- model driver (mutates `model` in place) ----------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor | None, config: Config, ctx: Context) -> Outcome:
    """Prune every decoder linear of `model` in place; `calib` is ignored."""
    layers = decoder_layers(model)
    with torch.inference_mode():
        for i, layer in enumerate(layers):
            for linear in prunable_linears(layer).values():
                with small_ops(linear.weight.numel()):
                    weight = linear.weight.float()
                    set_weight(linear, weight.masked_fill(magnitude_mask(weight, config), 0.0))
            if ctx.progress is not None:
                ctx.progress(i + 1, len(layers))
    return Outcome(kind="weight-sparsity")
