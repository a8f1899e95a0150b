"""Wanda: pruning by weights and activations.

Paper:    Sun, Liu, Bair, Kolter. "A Simple and Effective Pruning Approach for Large Language Models".
          ICLR 2024, arXiv:2306.11695. Record id: `wanda`.
Official: locuslab/wanda `lib/prune.py::prune_wanda` and `lib/layerwrapper.py::WrappedGPT` @ 8e8fc87.
Idea:     score_ij = |W_ij| * ||X_j||_2, the weight magnitude times the l2 norm of input feature j over all
          calibration tokens; remove the lowest scores *within each output row* (or the n lowest in every
          group of m for N:M). No weight update; layers are pruned in order, each calibrated on the outputs
          of the already-pruned layers before it.
Differs:  (1) the shared driver prunes each linear right before its first use in a single forward pass per
          layer (true sequential inside a layer: o_proj sees inputs from pruned q/k/v), where upstream
          collects all seven linears' statistics from the dense layer and runs it twice;
          (2) exact k lowest via topk rather than a stable full sort (ties may resolve differently);
          (3) statistics are sums over tokens (upstream divides by the number of sequences; per-row
          ranking is unchanged); (4) the appendix "variant" (alpha search) is not implemented;
          `scope="matrix"` gives the paper's per-layer comparison-group ablation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import InputStats, prune_layerwise, set_weight
from .harness.options import SparsityConfig
from .primitives.masks import count_to_prune, matrix_mask, nm_mask, row_mask, zero_lowest_per_row


class Config(SparsityConfig):
    scope: Literal["row", "matrix"] = "row"  # comparison group for unstructured sparsity


# ---- pure tensor math -----------------------------------------------------------------------
def wanda_scores(weight: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    """(out, in), (in,) sum of squared inputs per feature -> (out, in) importance; larger = keep."""
    return weight.abs().mul_(sq_norm.sqrt().unsqueeze(0))


def wanda_mask(score: torch.Tensor, config: Config, sparsity: float | None = None) -> torch.Tensor:
    """Bool (out, in), True = prune. `sparsity` overrides the config's (per-layer allocation)."""
    s = config.sparsity if sparsity is None else sparsity
    if config.pattern is not None:
        return nm_mask(score, *config.pattern)
    return row_mask(score, s) if config.scope == "row" else matrix_mask(score, s)


def prune_weight(
    weight: torch.Tensor, sq_norm: torch.Tensor, config: Config, sparsity: float | None = None
) -> torch.Tensor:
    """The pruned copy of one weight matrix (float32)."""
    weight = weight.float()
    score = wanda_scores(weight, sq_norm.float())
    if config.pattern is None and config.scope == "row":  # the default: skip the bool mask
        s = config.sparsity if sparsity is None else sparsity
        return zero_lowest_per_row(weight, score, count_to_prune(weight.shape[1], s))
    return weight.masked_fill(wanda_mask(score, config, sparsity), 0.0)


# ---- model driver (mutates `model` in place) ----------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Prune every decoder linear of `model` in place from calibration tokens `calib` (samples, seq)."""
    prune_layers(model, calib, config, None, ctx)
    return Outcome(kind="weight-sparsity")


def prune_layers(
    model: nn.Module, calib: torch.Tensor, config: Config, ratios: Sequence[float] | None, ctx: Context
) -> None:
    """As `prune`, with decoder layer i pruned to `ratios[i]` when given (used by allocation methods)."""

    def step(index: int, _name: str, linear: nn.Linear, stats: InputStats) -> None:
        sparsity = None if ratios is None else ratios[index]
        set_weight(
            linear, prune_weight(linear.weight, stats.sq_norm.to(linear.weight.device), config, sparsity)
        )

    prune_layerwise(model, calib, step, stats="sq_norm", batch_size=ctx.batch_size, progress=ctx.progress)
