"""Essential sparsity: one-shot global magnitude pruning, swept over sparsities, and the knee of the curve.

Paper:    Jaiswal, Liu, Chen, Wang. "The Emergence of Essential Sparsity in Large Pre-trained Models: The
          Weights that Matter". NeurIPS 2023, arXiv:2306.03805. Record id: `essential-sparsity`.
Official: VITA-Group/essential_sparsity `pruner.py` (torch `global_unstructured` with an L1 criterion over
          the attention and feed-forward linears of every layer).
Idea:     not a new pruner but an observation: remove the smallest-magnitude weights with ONE threshold
          shared by all decoder linears, at a sweep of sparsities. Quality stays almost flat up to a sharp
          "essential sparsity" point and falls fast beyond it. Per-matrix sparsities differ (matrices with
          smaller weights lose more).
Differs:  (1) exactly floor(s * P) weights are removed over the P decoder linear weights, ties at the
          threshold taken in position order, so the masks of a sweep are nested; (2) the knee is read from
          perplexity on held-out text (the paper fine-tunes BERT/ViT and reads downstream scores); (3) IMP /
          lottery-ticket comparisons, N:M variants and the pre-training dynamics are not reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import iter_decoder_linears, set_weight
from .harness.options import SparsityConfig
from .primitives.masks import matrix_mask


class Config(SparsityConfig):
    pass  # one global threshold; `pattern` is not part of this paper (the registry offers `--sparsity` only)


# ---- pure tensor math -----------------------------------------------------------------------
def global_magnitude_masks(weights: Sequence[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Bool masks (True = prune) removing the floor(s * total) smallest |w| over all `weights` together."""
    flat = torch.cat([w.detach().reshape(-1).abs().float() for w in weights])
    mask = matrix_mask(flat, sparsity)
    return [
        m.reshape(w.shape) for m, w in zip(mask.split([w.numel() for w in weights]), weights, strict=True)
    ]


def essential_sparsity(points: Sequence[tuple[float, float]], dense: float, tolerance: float) -> float:
    """The knee: the largest sparsity s of the sweep such that every point up to s has perplexity within
    (1 + tolerance) x dense. `points` are (sparsity, perplexity); 0.0 when even the first point is outside."""
    knee = 0.0
    for s, ppl in sorted(points):
        if not ppl <= (1.0 + tolerance) * dense:
            break
        knee = s
    return knee


# ---- model driver (mutates `model` in place) ----------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor | None, config: Config, ctx: Context) -> Outcome:
    """Prune every decoder linear of `model` in place with one global magnitude threshold; `calib` is ignored."""
    if config.pattern is not None:
        raise ValueError("essential sparsity is a global unstructured sweep; N:M is not part of it")
    linears = [lin for _name, lin in iter_decoder_linears(model)]
    with torch.inference_mode():
        masks = global_magnitude_masks([lin.weight for lin in linears], config.sparsity)
        per_matrix = []
        for lin, mask in zip(linears, masks, strict=True):
            set_weight(lin, lin.weight.float().masked_fill(mask, 0.0))
            per_matrix.append(float(mask.float().mean()))
    if ctx.progress is not None:
        ctx.progress(1, 1)
    return Outcome(
        kind="weight-sparsity",
        details={
            "matrix_sparsity_min": round(min(per_matrix), 4),
            "matrix_sparsity_max": round(max(per_matrix), 4),
        },
    )
