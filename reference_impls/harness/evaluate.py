"""Perplexity over non-overlapping windows: exp(mean next-token NLL over every predicted token).

Same protocol as the Wanda/SparseGPT harness: the evaluation stream is cut into windows of `seqlen` tokens
(tail dropped), each window is scored independently, labels = inputs shifted by one. Every window predicts
`seqlen - 1` tokens, so this equals exp of the mean of per-window `model(ids, labels=ids).loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layerwise import input_embedding


def perplexity(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """`windows`: (n, seqlen) token ids. Returns exp(mean NLL); `inf` if the loss overflows."""
    device = input_embedding(model).weight.device
    total_nll, total_tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, windows.shape[0], batch_size):
            ids = windows[start : start + batch_size].to(device)
            logits = model(input_ids=ids, use_cache=False).logits  # (b, seqlen, vocab)
            nll = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="sum"
            )
            total_nll += float(nll)
            total_tokens += ids[:, 1:].numel()
            if progress is not None:
                progress(min(start + batch_size, windows.shape[0]), windows.shape[0])
    mean = total_nll / total_tokens
    return math.exp(mean) if mean < 700 else math.inf
