"""DSnoT: training-free mask refinement of a sparse LLM by pruning-and-growing swaps.

Paper:    Zhang, Zhao, Lin, Sun, Yao, Han, Tanner, Liu, Ji. "Dynamic Sparse No Training: Training-Free
          Fine-tuning for Sparse LLMs". ICLR 2024, arXiv:2310.08915. Record id: `dsnot`.
Official: zyxxmu/DSnoT `lib/prune.py::prune_DSnoT` and `lib/layerwrapper.py` (defaults from `main.py`:
          `--max_cycle_time 50 --update_threshold 0.1 --pow_of_var_regrowing 1 --skip_layer mlp`, and
          `--without_same_sign True`: no sign test).
Idea:     start from Wanda's mask. For output row i, the signed reconstruction error of the pruned weights
          is e_i = sum_{j pruned} W_ij s_j, where s_j is feature j's input summed over the calibration
          tokens and divided by the number of calibration sequences (upstream's `sum_metric_row`), i.e.
          E[x_j] * seqlen: the error of one sequence's summed output, not of one token. Each cycle, every
          row still active swaps one pair: it regrows the pruned weight that cancels e_i best (largest
          sign(e_i) * W_ij s_j / Var[x_j]) and prunes the kept weight with the lowest Wanda score among those
          whose contribution W_ij s_j has the opposite sign to e_i. A swap is made while |e_i| > threshold
          (0.1, an absolute number, so the scale of s matters); the first refused swap stops the row for
          good. Weights are never changed, only which ones are zero, so every row keeps its count of zeros.
Differs:  (1) Var[x_j] is the variance over all calibration tokens (upstream averages per-sequence
          variances); it only orders the regrowth candidates; (2) candidates are kept in four sorted lists
          per row (regrow: pruned weights with positive / negative contribution; prune: kept weights with
          negative / positive contribution), so a row whose list of the needed sign is exhausted stops
          instead of picking a weight of the other kind (upstream's pointer can then reach a kept weight
          and change the row's count); (3) equal keys are taken in column order (upstream's pointers that
          walk a list from its end take the last of equal keys first); (4) the N:M variant and the
          SparseGPT initial mask are not implemented. The optional sign test (`same_sign=True`, upstream's
          non-default `--without_same_sign False`) also refuses a swap that would flip e_i's initial sign.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from kb.results import Outcome

from . import wanda
from .harness.contract import Context
from .harness.layerwise import InputStats, prune_layerwise, set_weight
from .harness.options import SparsityConfig
from .primitives.masks import row_mask


class Config(SparsityConfig):
    max_cycles: int = Field(50, ge=0)  # swaps per row at most
    threshold: float = Field(0.1, ge=0)  # a row stops once |e_i| is at or below this (e_i per sequence)
    pow_of_var: float = Field(1.0, ge=0)  # regrowing criterion divides by Var[x_j] to this power
    same_sign: bool = False  # also refuse a swap that flips e_i's sign (upstream: off by default)
    skip: Literal["mlp", "none"] = "mlp"  # official default: MLP linears keep the initial Wanda mask


# ---- pure tensor math -----------------------------------------------------------------------
def per_sequence_sum(stats: InputStats, sequences: int) -> torch.Tensor:
    """(in,) each feature's input summed over all calibration tokens, divided by the number of calibration
    sequences: E[x_j] * seqlen, the statistic upstream multiplies the weights by (`sum_metric_row`)."""
    if stats.total is None or sequences < 1:
        raise ValueError("the per-sequence input sum needs moments statistics and at least one sequence")
    return stats.total / sequences


def reconstruction_error(weight: torch.Tensor, mask: torch.Tensor, x_sum: torch.Tensor) -> torch.Tensor:
    """e_i = sum over the pruned j of W_ij s_j (signed), one per output row; `x_sum` = s, (in,)."""
    return (weight * x_sum.unsqueeze(0)).masked_fill(~mask, 0.0).sum(1)


def dsnot_refine(
    weight: torch.Tensor,
    mask: torch.Tensor,
    x_sum: torch.Tensor,
    var_x: torch.Tensor,
    sq_norm: torch.Tensor,
    *,
    max_cycles: int = 50,
    threshold: float = 0.1,
    pow_of_var: float = 1.0,
    same_sign: bool = False,
) -> tuple[torch.Tensor, int]:
    """Refine the bool mask (True = prune) of `weight` (out, in); returns (new mask, cycles run).

    `x_sum` (in,) is the per-sequence input sum (`per_sequence_sum`), `var_x` (in,) the per-token
    variance, `sq_norm` (in,) the sum of squared inputs (Wanda's statistic). All rows advance in parallel,
    one swap per active row per cycle."""
    w = weight.float()
    contrib = w * x_sum.float().unsqueeze(0)  # W_ij s_j, (out, in)
    error = contrib.masked_fill(~mask, 0.0).sum(1)  # (out,)
    grow_key = contrib / var_x.float().clamp_min(1e-12).pow(pow_of_var).unsqueeze(0)
    wanda_score = wanda.wanda_scores(w.clone(), sq_norm.float())
    inf = torch.tensor(float("inf"))
    # four candidate lists per row, best first; +inf marks "not a candidate" (sorted last)
    grow_pos = torch.sort(torch.where(mask & (contrib > 0), -grow_key, inf), dim=1, stable=True)
    grow_neg = torch.sort(torch.where(mask & (contrib < 0), grow_key, inf), dim=1, stable=True)
    prune_neg = torch.sort(torch.where(~mask & (contrib < 0), wanda_score, inf), dim=1, stable=True)
    prune_pos = torch.sort(torch.where(~mask & (contrib > 0), wanda_score, inf), dim=1, stable=True)
    rows = torch.arange(w.shape[0])
    ptr = {name: torch.zeros(w.shape[0], dtype=torch.long) for name in ("gp", "gn", "pn", "pp")}
    cols = w.shape[1]
    new = mask.clone()
    active = error.abs() > threshold
    sign0 = torch.sign(error)
    cycles = 0
    while cycles < max_cycles and bool(active.any()):
        cycles += 1
        positive = error > 0
        # regrow: positive error -> a pruned weight with positive contribution, and vice versa
        g_vals = torch.where(positive, grow_pos.values[rows, ptr["gp"].clamp_max(cols - 1)],
                             grow_neg.values[rows, ptr["gn"].clamp_max(cols - 1)])  # fmt: skip
        g_idx = torch.where(positive, grow_pos.indices[rows, ptr["gp"].clamp_max(cols - 1)],
                            grow_neg.indices[rows, ptr["gn"].clamp_max(cols - 1)])  # fmt: skip
        # prune: positive error -> a kept weight with negative contribution (lowest Wanda score first)
        p_vals = torch.where(positive, prune_neg.values[rows, ptr["pn"].clamp_max(cols - 1)],
                             prune_pos.values[rows, ptr["pp"].clamp_max(cols - 1)])  # fmt: skip
        p_idx = torch.where(positive, prune_neg.indices[rows, ptr["pn"].clamp_max(cols - 1)],
                            prune_pos.indices[rows, ptr["pp"].clamp_max(cols - 1)])  # fmt: skip
        available = torch.isfinite(g_vals) & torch.isfinite(p_vals)
        after = error - contrib[rows, g_idx] + contrib[rows, p_idx]
        active = active & available & (error.abs() > threshold)
        if same_sign:
            active &= torch.sign(after) == sign0
        new[rows[active], g_idx[active]] = False
        new[rows[active], p_idx[active]] = True
        error = torch.where(active, after, error)
        step = active.long()
        ptr["gp"] += step * positive
        ptr["gn"] += step * ~positive
        ptr["pn"] += step * positive
        ptr["pp"] += step * ~positive
    return new, cycles


def skipped(name: str, config: Config) -> bool:
    """Whether the linear `name` ("layers.3.mlp.up_proj") keeps its initial mask."""
    return config.skip == "mlp" and ".mlp." in f".{name}."


# ---- model driver (mutates `model` in place) ----------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Wanda's per-row mask, refined by DSnoT swaps, for every decoder linear of `model` (in place)."""
    if config.pattern is not None:
        raise ValueError("the DSnoT N:M variant is not implemented; use an unstructured sparsity")
    sequences = calib.shape[0]  # calib: (sequences, seqlen) token ids
    swaps = 0

    def step(_index: int, name: str, linear: nn.Linear, stats: InputStats) -> None:
        nonlocal swaps
        weight = linear.weight.float()
        mask = row_mask(wanda.wanda_scores(weight.clone(), stats.sq_norm), config.sparsity)
        if not skipped(name, config):
            _mean, var = stats.mean_var()
            refined, _cycles = dsnot_refine(
                weight, mask, per_sequence_sum(stats, sequences), var, stats.sq_norm,
                max_cycles=config.max_cycles, threshold=config.threshold, pow_of_var=config.pow_of_var,
                same_sign=config.same_sign,
            )  # fmt: skip
            swaps += int((refined & ~mask).sum())
            mask = refined
        set_weight(linear, weight.masked_fill(mask, 0.0))

    prune_layerwise(model, calib, step, stats="moments", batch_size=ctx.batch_size, progress=ctx.progress)
    return Outcome(kind="weight-sparsity", details={"swaps": swaps, "skip": config.skip})
