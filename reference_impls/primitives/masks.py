"""Pure mask helpers. Every mask is a bool tensor shaped like the scores; True = prune this weight.

Lower score = less important. Exact counts everywhere: `floor(n * sparsity)` pruned per comparison group,
chosen with `torch.topk` / `kthvalue` selections (`kth_smallest` for whole models) instead of a full sort;
ties are broken by position, deterministically.
"""

from __future__ import annotations

import math

import torch


def count_to_prune(group_size: int, sparsity: float) -> int:
    """Number of weights pruned in a comparison group of `group_size`."""
    return math.floor(group_size * sparsity + 1e-9)


def lowest_k_per_row(score: torch.Tensor, k: int) -> torch.Tensor:
    """(rows, cols) -> mask with exactly `k` True entries in every row (the k lowest scores)."""
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k > 0:
        idx = torch.topk(score, k, dim=-1, largest=False, sorted=False).indices  # (rows, k)
        mask.scatter_(-1, idx, True)
    return mask


def zero_lowest_per_row(weight: torch.Tensor, score: torch.Tensor, k: int) -> torch.Tensor:
    """A copy of `weight` with the `k` lowest-scoring entries of every row set to zero.

    Same selection as `lowest_k_per_row`, without building a bool mask (one pass fewer: the hot path).
    """
    out = weight.clone()
    if k > 0:
        out.scatter_(-1, torch.topk(score, k, dim=-1, largest=False, sorted=False).indices, 0.0)
    return out


def row_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per output row: prune the `floor(cols * sparsity)` lowest scores of each row (Wanda's comparison group)."""
    return lowest_k_per_row(score, count_to_prune(score.shape[-1], sparsity))


def matrix_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per matrix: prune the `floor(numel * sparsity)` lowest scores of the whole tensor.

    A selection (`kthvalue`) finds the threshold; ties at the threshold are taken in position order so
    the count is exact.
    """
    return lowest_k_mask(score, count_to_prune(score.numel(), sparsity))


def lowest_k_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """Mask with exactly `k` True entries over the whole tensor: its `k` lowest scores (ties by position)."""
    flat = score.reshape(-1)
    if k == 0:
        return torch.zeros_like(score, dtype=torch.bool)
    threshold = kth_smallest(flat, k)
    mask = flat < threshold
    missing = k - int(mask.sum())
    if missing > 0:
        mask[(flat == threshold).nonzero().squeeze(1)[:missing]] = True
    return mask.reshape(score.shape)


_DIRECT = 1 << 22  # up to this many scores a plain `kthvalue` is already fast
_SAMPLE = 1 << 16


def kth_smallest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The `k`-th smallest entry (1-based) of a 1-D tensor, exactly what `flat.kthvalue(k)` returns.

    A global threshold over a whole model (~10^8 scores) is a slow selection on CPU (seconds); instead a
    fixed-seed sample of 65536 scores brackets the answer between two sample quantiles six standard errors
    either side of rank k, a linear pass counts the scores below the bracket and keeps those inside it
    (a few percent of them), and the selection runs on that band only. Should the bracket miss (it cannot
    change the answer, only the speed), the full selection runs."""
    n = flat.numel()
    if n <= _DIRECT:
        return flat.kthvalue(k).values
    gen = torch.Generator().manual_seed(0)
    sample = flat[torch.randint(0, n, (_SAMPLE,), generator=gen, device="cpu").to(flat.device)]
    q = k / n
    margin = 6 * math.sqrt(q * (1 - q) / _SAMPLE) + 2 / _SAMPLE
    lo_rank, hi_rank = math.floor((q - margin) * _SAMPLE), math.ceil((q + margin) * _SAMPLE)
    inside = torch.ones_like(flat, dtype=torch.bool)
    below = 0
    if lo_rank >= 1:
        lo = sample.kthvalue(lo_rank).values
        inside &= flat >= lo
        below = n - int(inside.sum())
    if hi_rank <= _SAMPLE:
        inside &= flat <= sample.kthvalue(hi_rank).values
    band = flat[inside]
    if below < k <= below + band.numel():
        return band.kthvalue(k - below).values
    return flat.kthvalue(k).values


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every row, within each group of `m` consecutive columns, prune the `n` lowest scores."""
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"{cols} input columns are not divisible by M={m}")
    grouped = score.reshape(rows * cols // m, m)
    return lowest_k_per_row(grouped, n).reshape(rows, cols)


def sparsity_of(weight: torch.Tensor) -> float:
    return float((weight == 0).sum()) / weight.numel()
