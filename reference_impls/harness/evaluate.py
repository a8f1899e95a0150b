"""Perplexity over non-overlapping windows: exp(mean next-token NLL over every predicted token).

Same protocol as the Wanda/SparseGPT harness: the evaluation stream is cut into windows of `seqlen` tokens
(tail dropped), each window is scored independently, labels = inputs shifted by one. Every window predicts
`seqlen - 1` tokens, so this equals exp of the mean of per-window `model(ids, labels=ids).loss`.
`window_nll` keeps those per-window means: the units a claim's interval resamples (`registry.measured`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layerwise import input_embedding


def window_nll(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """`windows`: (n, seqlen) token ids. The mean next-token NLL (nats) of each window, in order."""
    device = input_embedding(model).weight.device
    means: list[float] = []
    with torch.inference_mode():
        for start in range(0, windows.shape[0], batch_size):
            ids = windows[start : start + batch_size].to(device)
            logits = model(input_ids=ids, use_cache=False).logits  # (b, seqlen, vocab)
            # the class axis last: the (b, vocab, seqlen) layout of `transpose(1, 2)` takes a CPU kernel that is
            # about 1e-4 nats off at a 49k vocabulary, against 1e-5 for this one (float64 reference)
            nll = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="none"
            ).view(ids.shape[0], -1)  # (b, seqlen - 1)
            means.extend(float(v) for v in nll.double().mean(dim=1))
            if progress is not None:
                progress(min(start + batch_size, windows.shape[0]), windows.shape[0])
    return means


def ppl_of(nll: list[float]) -> float:
    """exp of the mean of equal-length windows' mean NLLs; `inf` if it overflows."""
    mean = math.fsum(nll) / len(nll)
    return math.exp(mean) if mean < 700 else math.inf


def perplexity(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """`windows`: (n, seqlen) token ids. Returns exp(mean NLL); `inf` if the loss overflows."""
    return ppl_of(window_nll(model, windows, batch_size=batch_size, progress=progress))
