"""Pruner-Zero: the symbolic pruning metric found by genetic programming, |W * W| x minmax(G).

Paper:    Dong, Li, Tang, Liu, Pan, Wang, Chu. "Pruner-Zero: Evolving Symbolic Pruning Metric from Scratch
          for Large Language Models". ICML 2024, arXiv:2406.02924. Record id: `pruner-zero`.
Official: pprp/Pruner-Zero @ db70134: `data/best_tree.json` (the searched expression tree, mul(abs(mul(W, W)),
          mms(G))), `lib/gptree.py` (`mms` = min-max scaling of the whole tensor), `lib/prune.py::
          prune_pruner_zero` (per-row selection as in Wanda) and `lib/gradient_computation.py` (G).
Idea:     the paper searches a space of expressions over the weight W, its gradient G and the input norm X
          for the score whose pruned model has the lowest perplexity. The winner is
              score_ij = |W_ij|^2 * (G_ij - min G) / (max G - min G)   (min and max over the whole matrix),
          where G_ij = sqrt(sum_n g_ij(n)^2) is the l2 norm over calibration sequences n of the gradient of the
          sequence's mean next-token loss, taken once on the dense model. It reads no activations and updates
          no weight; the lowest scores of every output row are removed (the n lowest of every m for N:M).
          The search itself (tournament selection, crossover, mutation, the opposing-operation
          simplification) is out of scope: only its published result is implemented here.
Differs:  (1) G comes from the run's own calibration tokens (upstream: 128 x 2048 WikiText-2 sequences for the
          gradients, C4 for the pruning pass, whose activations this metric never reads), in float32 (upstream
          stores G in float16 after multiplying the gradients by 100, a constant min-max scaling removes);
          (2) since the score does not depend on activations, no layer-wise forward pass is run: every
          matrix is pruned directly from the dense weights and gradients, which is what upstream's sequential
          loop amounts to for this metric; (3) a matrix whose G is constant (0/0 upstream) is scored by
          |W|^2 alone; (4) exact k lowest per row via topk (ties, rare once W^2 is multiplied by a continuous
          G, resolve by position); (5) Wanda's appendix variant (alpha search) is not implemented.
"""

from __future__ import annotations

import torch
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import iter_decoder_linears, set_weight, small_ops
from .harness.options import SparsityConfig
from .primitives.importance import loss_gradients
from .primitives.masks import count_to_prune, nm_mask, zero_lowest_per_row


class Config(SparsityConfig):
    """The paper's setting: 50% unstructured per output row (`pattern` for 2:4 / 4:8)."""


# ---- pure tensor math -----------------------------------------------------------------------
def min_max(x: torch.Tensor) -> torch.Tensor:
    """`mms`: x scaled to [0, 1] by the tensor's own min and max; a constant tensor maps to ones."""
    low, high = x.min(), x.max()
    if float(high - low) == 0.0:
        return torch.ones_like(x)
    return (x - low) / (high - low)


def pruner_zero_scores(weight: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
    """(out, in) weight, (out, in) per-element gradient l2 norm -> (out, in) importance; larger = keep."""
    w = weight.float()
    return (w * w).abs() * min_max(grad_norm.float())


def prune_weight(weight: torch.Tensor, grad_norm: torch.Tensor, config: Config) -> torch.Tensor:
    """The pruned copy of one weight matrix (float32)."""
    weight = weight.float()
    score = pruner_zero_scores(weight, grad_norm)
    if config.pattern is not None:
        return weight.masked_fill(nm_mask(score, *config.pattern), 0.0)
    return zero_lowest_per_row(weight, score, count_to_prune(weight.shape[1], config.sparsity))


# ---- model driver (mutates `model` in place) ----------------------------------------------
def gradient_norms(model: nn.Module, calib: torch.Tensor, ctx: Context) -> dict[str, torch.Tensor]:
    """Per decoder linear (named as `iter_decoder_linears` names it): G, the l2 norm over calibration sequences
    of each weight's gradient (up to the constant sqrt(samples), which min-max scaling removes)."""
    linears = dict(iter_decoder_linears(model))
    param_name = {id(p): n for n, p in model.named_parameters()}
    names = {name: param_name[id(lin.weight)] for name, lin in linears.items()}
    done, steps = ctx.progress, calib.shape[0] + len(linears)  # one step per sequence, then per linear
    grads = loss_gradients(model, calib, names.values(), fisher=True,
                           progress=(lambda d, _t: done(d, steps)) if done else None)  # fmt: skip
    assert grads.fisher is not None  # mean over sequences of the squared per-sequence gradient
    return {name: grads.fisher.pop(param).sqrt_() for name, param in names.items()}


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Score every decoder linear with the searched metric on dense gradients and prune it in place."""
    norms = gradient_norms(model, calib, ctx)
    linears = list(iter_decoder_linears(model))
    first = calib.shape[0]
    with torch.no_grad():
        for i, (name, linear) in enumerate(linears):
            with small_ops(linear.weight.numel()):
                grad_norm = norms.pop(name).to(linear.weight.device)
                set_weight(linear, prune_weight(linear.weight, grad_norm, config))
            if ctx.progress is not None:
                ctx.progress(first + i + 1, first + len(linears))
    return Outcome(kind="weight-sparsity")
