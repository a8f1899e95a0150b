"""OWL: outlier-weighted layer-wise sparsity, a per-layer allocation on top of Wanda or SparseGPT.

Paper:    Yin, Wu, Zhang, Hsieh, Wang, Jia, Li, Jaiswal, Pechenizkiy, Liang, Bendersky, Wang, Liu. "Outlier
          Weighed Layerwise Sparsity (OWL): A Missing Secret Sauce for Pruning LLMs to High Sparsity".
          ICML 2024, arXiv:2310.05175. Record id: `owl`.
Official: luuyin/OWL `lib/prune_all.py::prune_wanda_outlier` and `check_outlier_mean` (defaults from its
          README: `--Hyper_m 5 --Lamda 0.08` for unstructured sparsity).
Idea:     layers that hold more outliers matter more, so they should be pruned less. With the dense model,
          score every weight of decoder layer l by Wanda's |W_ij| * ||X_j||; the layer's outlier ratio D_l is
          the share of its scores above M times their mean (all linears of the layer pooled). Min-max scale
          D to [0, 2*lambda], shift it so its mean is the target density 1 - S, and prune layer l to
          S_l = 1 - density_l with Wanda (or SparseGPT): more outliers -> lower sparsity; the mean of S_l is
          exactly S and the spread max - min is exactly 2*lambda.
Differs:  (1) the outlier statistics come from one dense pass of the shared layer-wise driver (same inputs
          as upstream's first loop); (2) when every layer has the same outlier ratio (0/0 upstream), all
          layers get S; (3) upstream lifts a non-positive layer sparsity to 0.01, here ratios are clamped
          to [0, 1) only if needed and the run says so (at the defaults this never triggers);
          (4) the OWL N:M variant and the DeepSparse speed tests are not implemented.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from kb.results import Outcome

from . import sparsegpt, wanda
from .harness.contract import Context
from .harness.layerwise import InputStats, prune_layerwise
from .harness.options import SparsityConfig
from .primitives.budget import shift_to_budget

MAX_LAYER_SPARSITY = 0.999  # a layer keeps at least one weight in a thousand


class Config(SparsityConfig):
    base: Literal["wanda", "sparsegpt"] = "wanda"  # the pruner applied at the allocated ratios
    hyper_m: float = Field(5.0, gt=0)  # M: a score is an outlier above M x the layer's mean score
    lam: float = Field(0.08, ge=0)  # lambda: half the spread of the per-layer sparsities


# ---- pure tensor math -----------------------------------------------------------------------
def outlier_ratio(scores: list[torch.Tensor], hyper_m: float) -> float:
    """Share (0..1) of all scores of one layer that exceed `hyper_m` x their mean."""
    pooled = torch.cat([s.reshape(-1).float() for s in scores])
    return float((pooled > hyper_m * pooled.mean()).sum()) / pooled.numel()


def layer_sparsities(ratios: list[float], sparsity: float, lam: float) -> list[float]:
    """Outlier ratios D_l -> per-layer sparsities S_l (mean S, spread 2*lam, decreasing in D_l)."""
    d = torch.tensor(ratios, dtype=torch.float64)
    spread = d.max() - d.min()
    if len(ratios) < 2 or float(spread) == 0.0:
        return [sparsity] * len(ratios)
    density = (d - d.min()) / spread * (2 * lam)
    density = density - density.mean() + (1.0 - sparsity)
    return [float(1.0 - x) for x in density]


# ---- model driver (mutates `model` in place) ----------------------------------------------
def outlier_ratios(model: nn.Module, calib: torch.Tensor, hyper_m: float, ctx: Context) -> list[float]:
    """D_l for every decoder layer, from one dense pass over the calibration tokens (weights untouched)."""
    scores: dict[int, list[torch.Tensor]] = {}

    def record(index: int, _name: str, linear: nn.Linear, stats: InputStats) -> None:
        scores.setdefault(index, []).append(wanda.wanda_scores(linear.weight.float(), stats.sq_norm))

    ratios: list[float] = []

    def progress(done: int, total: int) -> None:
        ratios.append(outlier_ratio(scores.pop(done - 1), hyper_m))  # free each layer's scores at once
        if ctx.progress is not None:
            ctx.progress(done, 2 * total)

    prune_layerwise(model, calib, record, stats="sq_norm", batch_size=ctx.batch_size, progress=progress)
    return ratios


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Allocate per-layer sparsities from outlier ratios, then prune with the base method at those ratios."""
    key = ("owl-outlier-ratios", config.hyper_m, calib.data_ptr(), tuple(calib.shape))  # of the dense model
    ratios = ctx.dense_statistic(key, lambda: outlier_ratios(model, calib, config.hyper_m, ctx))
    sparsities = layer_sparsities(ratios, config.sparsity, config.lam)
    if any(not 0.0 <= s <= MAX_LAYER_SPARSITY for s in sparsities):
        span = f"{min(sparsities):.3f}..{max(sparsities):.3f}"
        ctx.log(f"owl: per-layer sparsities {span} leave [0, {MAX_LAYER_SPARSITY}]: clipped, the others shifted "
                f"to keep the mean at {config.sparsity}")  # fmt: skip
        sparsities = shift_to_budget(sparsities, [1.0] * len(sparsities), config.sparsity * len(sparsities),
                                     0.0, MAX_LAYER_SPARSITY)  # fmt: skip
    n, progress = len(sparsities), ctx.progress
    offset = Context(batch_size=ctx.batch_size, seed=ctx.seed, log=ctx.log,
                     progress=(lambda d, t: progress(n + d, 2 * n)) if progress else None)  # fmt: skip
    if config.base == "wanda":
        wanda.prune_layers(model, calib, wanda.Config(sparsity=config.sparsity), sparsities, offset)
    else:
        sparsegpt.prune_layers(model, calib, sparsegpt.Config(sparsity=config.sparsity), sparsities, offset)
    return Outcome(
        kind="allocation", layer_sparsity=sparsities,
        details={"outlier_ratio_percent": [round(100 * r, 4) for r in ratios], "base": config.base},
    )  # fmt: skip
