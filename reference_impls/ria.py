"""RIA: relative importance and activations, with channel permutation for N:M sparsity.

Paper:    Zhang, Bai, Lin, Zhao, Hou, Cannistraci. "Plug-and-Play: An Efficient Post-training Pruning Method
          for Large Language Models". ICLR 2024 (OpenReview Tr0lPx9woF). Record id: `ria`.
Official: biomedical-cybernetics/Relative-importance-and-activation-pruning `lib/prune.py` (the RIA metric,
          `a = 0.5` from `main.py`) and its channel-reallocation code for N:M.
Idea:     score_ij = (|W_ij| / sum_k |W_kj| + |W_ij| / sum_k |W_ik|) * ||X_j||_2^a: a weight's share of its
          input column plus its share of its output row (relative importance), times the input feature's
          norm to the power a. Unstructured: the lowest scores of the whole matrix are removed (the official
          default; `scope="row"` compares within output rows like Wanda). N:M: the input channels are first
          permuted so that strong channels do not share an M-group: sort channels by their summed score and
          deal them in a snake order over the groups (round r gives each group one channel of the r-th
          tier), take the N:M mask in permuted coordinates, and map it back.
Differs:  (1) the pruned weights are zeroed in the original column order, so the saved model is exactly
          N:M only after permuting its input channels (and the producer of those inputs) the same way; the
          permutations are not stored, as deployment is out of scope;
          (2) the linear-sum-assignment refinement of the permutation and cuSPARSELt timing are omitted;
          (3) exact counts with position-order ties (see `primitives/masks.py`).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import InputStats, prune_layerwise, set_weight
from .harness.options import SparsityConfig
from .primitives.masks import matrix_mask, nm_mask, row_mask


class Config(SparsityConfig):
    a: float = Field(0.5, ge=0)  # exponent of the activation norm
    scope: Literal["matrix", "row"] = "matrix"  # unstructured comparison group (official default: matrix)
    permute: Literal["none", "heuristic"] = "none"  # channel permutation before an N:M mask


# ---- pure tensor math -----------------------------------------------------------------------
def relative_importance(weight: torch.Tensor) -> torch.Tensor:
    """|W_ij| / column sum + |W_ij| / row sum (a zero column or row contributes 0)."""
    w = weight.abs().float()
    col = w.sum(0, keepdim=True)
    row = w.sum(1, keepdim=True)
    return w / torch.where(col > 0, col, 1.0) + w / torch.where(row > 0, row, 1.0)


def ria_scores(weight: torch.Tensor, sq_norm: torch.Tensor, a: float = 0.5) -> torch.Tensor:
    """(out, in), (in,) sum of squared inputs -> RIA scores; larger = keep."""
    return relative_importance(weight) * sq_norm.float().sqrt().pow(a).unsqueeze(0)


def snake_permutation(channel_score: torch.Tensor, m: int) -> torch.Tensor:
    """Heuristic channel reallocation: `perm[p]` is the original channel placed at permuted position p.

    Channels sorted by score (highest first) form m tiers of G = in/m channels; tier r fills slot r of the
    G groups, left to right for even r and right to left for odd r, so each group gets one channel per tier.
    """
    cols = channel_score.numel()
    if cols % m:
        raise ValueError(f"{cols} input columns are not divisible by M={m}")
    groups = cols // m
    order = torch.argsort(channel_score, descending=True, stable=True)
    perm = torch.empty(cols, dtype=torch.long)
    for tier in range(m):
        members = order[tier * groups : (tier + 1) * groups]
        if tier % 2:
            members = members.flip(0)
        perm[torch.arange(groups) * m + tier] = members
    return perm


def nm_mask_permuted(score: torch.Tensor, n: int, m: int, perm: torch.Tensor) -> torch.Tensor:
    """The N:M mask chosen on the columns in `perm` order, returned in the original column order."""
    mask = torch.empty_like(score, dtype=torch.bool)
    mask[:, perm] = nm_mask(score[:, perm], n, m)
    return mask


def ria_mask(score: torch.Tensor, config: Config) -> torch.Tensor:
    """Bool (out, in), True = prune."""
    if config.pattern is not None:
        n, m = config.pattern
        if config.permute == "heuristic":
            return nm_mask_permuted(score, n, m, snake_permutation(score.sum(0), m))
        return nm_mask(score, n, m)
    return (
        matrix_mask(score, config.sparsity) if config.scope == "matrix" else row_mask(score, config.sparsity)
    )


# ---- model driver (mutates `model` in place) ----------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Prune every decoder linear of `model` in place from calibration tokens `calib` (samples, seq)."""

    def step(_index: int, _name: str, linear: nn.Linear, stats: InputStats) -> None:
        weight = linear.weight.float()
        score = ria_scores(weight, stats.sq_norm.to(weight.device), config.a)
        set_weight(linear, weight.masked_fill(ria_mask(score, config), 0.0))

    prune_layerwise(model, calib, step, stats="sq_norm", batch_size=ctx.batch_size, progress=ctx.progress)
    return Outcome(kind="weight-sparsity", details={"permute": config.permute} if config.pattern else {})
